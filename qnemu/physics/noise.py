"""Noise channels as Kraus operators, and memory decoherence from T1/T2 (pure functions)."""

import itertools
import math
from collections.abc import Sequence

import numpy as np

from qnemu.physics.gates import IDENTITY, X, Y, Z

__all__ = [
    "amplitude_damp_kraus",
    "apply_kraus",
    "decoherence_parameters",
    "dephase_kraus",
    "depolarise_kraus",
    "memory_decoherence",
]


def _check_probability(name: str, value: float) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}") from None
    if not 0.0 <= number <= 1.0:  # also rejects nan
        raise ValueError(f"{name} must be in [0, 1], got {value!r}")
    return number


def _check_time(
    name: str, value: float | None, *, allow_none: bool, positive: bool
) -> float | None:
    if value is None:
        if allow_none:
            return None
        raise ValueError(f"{name} is required")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number of seconds, got {value!r}") from None
    if math.isnan(number) or number < 0.0 or (positive and number == 0.0):
        bound = "> 0" if positive else ">= 0"
        raise ValueError(f"{name} must be {bound} seconds, got {value!r}")
    return number


def depolarise_kraus(p: float, num_qubits: int = 1) -> list[np.ndarray]:
    """ρ → (1−p)ρ + p·I/d: with probability p the qubits are replaced by a maximally mixed state."""
    p = _check_probability("depolarising probability", p)
    if num_qubits not in (1, 2):
        raise ValueError(f"depolarising acts on 1 or 2 qubits, got {num_qubits}")
    # I/d = (1/d²) Σ_P PρP over the d² Pauli strings, so the identity keeps weight 1 − p(d²−1)/d².
    paulis = [IDENTITY, X, Y, Z]
    strings = []
    for factors in itertools.product(paulis, repeat=num_qubits):
        operator = factors[0]
        for factor in factors[1:]:
            operator = np.kron(operator, factor)
        strings.append(operator)
    d_squared = 4**num_qubits
    identity_weight = 1.0 - p * (d_squared - 1) / d_squared
    kraus = [math.sqrt(identity_weight) * strings[0]]
    kraus += [math.sqrt(p / d_squared) * pauli for pauli in strings[1:]]
    return kraus


def dephase_kraus(p: float) -> list[np.ndarray]:
    """ρ → (1−p)ρ + pZρZ."""
    p = _check_probability("dephasing probability", p)
    return [math.sqrt(1.0 - p) * np.array(IDENTITY), math.sqrt(p) * np.array(Z)]


def amplitude_damp_kraus(gamma: float) -> list[np.ndarray]:
    """Energy relaxation |1> → |0> with probability γ."""
    gamma = _check_probability("amplitude damping gamma", gamma)
    return [
        np.array([[1.0, 0.0], [0.0, math.sqrt(1.0 - gamma)]], dtype=complex),
        np.array([[0.0, math.sqrt(gamma)], [0.0, 0.0]], dtype=complex),
    ]


def memory_decoherence(t_s: float, t1_s: float | None, t2_s: float | None) -> tuple[float, float]:
    """(γ, dephasing p) for a memory idling t_s: populations decay e^(−t/T1), coherence e^(−t/T2).

    Amplitude damping alone already shrinks coherence by √(1−γ) = e^(−t/2T1), so the pure
    dephasing supplies the rest: 1 − 2p = e^(−t/T2 + t/(2T1)). None means no decay from that term.
    """
    t_s = _check_time("t_s", t_s, allow_none=False, positive=False)
    if math.isinf(t_s):
        raise ValueError("t_s must be finite")
    t1_s = _check_time("t1_s", t1_s, allow_none=True, positive=True)
    t2_s = _check_time("t2_s", t2_s, allow_none=True, positive=True)
    if t1_s is not None and t2_s is not None and t2_s > 2.0 * t1_s:
        raise ValueError(f"T2 must be <= 2·T1 (got T1={t1_s} s, T2={t2_s} s)")
    return decoherence_parameters(t_s, t1_s, t2_s)


def decoherence_parameters(
    t_s: float, t1_s: float | None, t2_s: float | None
) -> tuple[float, float]:
    """memory_decoherence without the argument checks, for callers that validated T1/T2 once."""
    gamma = 0.0 if t1_s is None else -math.expm1(-t_s / t1_s)
    if t2_s is None:
        return gamma, 0.0
    exponent = -t_s / t2_s + (0.0 if t1_s is None else t_s / (2.0 * t1_s))
    # exponent <= 0 by T2 <= 2·T1; clamp the rounding so p stays in [0, 1/2].
    return gamma, -0.5 * math.expm1(min(exponent, 0.0))


def apply_kraus(rho: np.ndarray, kraus: Sequence[np.ndarray]) -> np.ndarray:
    """Σ K ρ K† for operators of the same dimension as ρ."""
    return sum(k @ rho @ k.conj().T for k in kraus)
