"""Entanglement purification maps for Bell-diagonal pairs (pure functions).

Two pairs in, one out, on success. Coefficients are in the order of Deutsch et al.
(PRL 77, 2818 (1996)): (A, B, C, D) = weights of (Φ+, Ψ−, Ψ+, Φ−).

DEJMPS: Alice applies Rx(π/2), Bob Rx(−π/2) to both their qubits, each does CNOT from
the kept pair to the sacrificed one and measures the sacrificed qubit in Z; success
when the outcomes agree, with probability N = (A + B)² + (C + D)², and
A' = (A² + B²)/N, B' = 2CD/N, C' = (C² + D²)/N, D' = 2AB/N.

BBPSSW (Bennett et al., PRL 76, 722 (1996)) on Werner pairs of fidelity F (twirled back
to Werner form after each round): with G = (1 − F)/3,
F' = (F² + G²) / (F² + 2FG + 5G²), success probability F² + 2FG + 5G².
"""

import numpy as np

from qnemu.physics.bell import BellState, bell_density

__all__ = [
    "DEUTSCH_ORDER",
    "bbpssw",
    "bell_diagonal_coefficients",
    "dejmps",
    "dejmps_rounds",
]

DEUTSCH_ORDER = (BellState.PHI_PLUS, BellState.PSI_MINUS, BellState.PSI_PLUS, BellState.PHI_MINUS)


def bell_diagonal_coefficients(rho: np.ndarray) -> tuple[float, float, float, float]:
    """(A, B, C, D): the weights of (Φ+, Ψ−, Ψ+, Φ−) in a two-qubit state."""
    rho = np.asarray(rho)
    if rho.shape != (4, 4):
        raise ValueError(f"expected a 4x4 density matrix, got shape {rho.shape}")
    return tuple(float(np.real(np.trace(rho @ bell_density(s)))) for s in DEUTSCH_ORDER)


def _check_coefficients(coefficients) -> tuple[float, float, float, float]:
    values = tuple(float(c) for c in coefficients)
    if len(values) != 4 or min(values) < -1e-12 or abs(sum(values) - 1.0) > 1e-9:
        raise ValueError(f"Bell-diagonal coefficients must be 4 weights summing to 1, got {values}")
    return values


def dejmps(coefficients) -> tuple[tuple[float, float, float, float], float]:
    """One DEJMPS round on two identical pairs: (new coefficients, success probability)."""
    a, b, c, d = _check_coefficients(coefficients)
    success = (a + b) ** 2 + (c + d) ** 2
    new = ((a * a + b * b) / success, 2 * c * d / success, (c * c + d * d) / success,
           2 * a * b / success)  # fmt: skip
    return new, success


def dejmps_rounds(coefficients, target_fidelity: float, max_rounds: int = 10) -> int | None:
    """Rounds of DEJMPS (on pairs of equal rounds) needed to reach the target Φ+ fidelity,
    or None if max_rounds do not get there (noise beyond what purification fixes)."""
    current = _check_coefficients(coefficients)
    for rounds in range(max_rounds + 1):
        if current[0] >= target_fidelity:
            return rounds
        current, _ = dejmps(current)
    return None


def bbpssw(fidelity: float) -> tuple[float, float]:
    """One BBPSSW round on two Werner pairs of this fidelity: (new fidelity, success)."""
    if not 0.0 <= fidelity <= 1.0:
        raise ValueError(f"fidelity must be in [0, 1], got {fidelity}")
    g = (1.0 - fidelity) / 3.0
    success = fidelity**2 + 2 * fidelity * g + 5 * g**2
    return (fidelity**2 + g**2) / success, success
