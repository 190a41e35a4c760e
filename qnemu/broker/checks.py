"""Argument checks shared by both state stores: every one runs before any state changes."""

import math
from collections.abc import Sequence

import numpy as np

from qnemu.physics.gates import ROTATIONS, SINGLE_QUBIT_GATES, TWO_QUBIT_GATES

__all__ = [
    "BASES",
    "CHANNELS",
    "GATE_NAMES",
    "MAX_GROUP_QUBITS",
    "STATE_TOLERANCE",
    "StoreError",
    "check_density_matrix",
    "check_gate_noise",
    "check_memory_times",
    "check_owner",
    "check_pair",
    "check_probability",
    "check_readout_error",
    "check_target",
    "check_time",
    "parse_basis",
    "parse_channel",
    "parse_gate",
    "parse_qubits",
]

# A group of n qubits is a 2^n x 2^n matrix: 10 qubits are 16 MB, 15 would be 16 GB.
MAX_GROUP_QUBITS = 10
STATE_TOLERANCE = 1e-9  # Hermiticity, trace and positivity slack accepted for a given state
BASES = ("Z", "X", "Y")
CHANNELS = ("depolarise", "dephase", "amplitude_damp")
_GATE_ARITY = {name: 1 for name in (*SINGLE_QUBIT_GATES, *ROTATIONS)} | {
    name: 2 for name in TWO_QUBIT_GATES
}
GATE_NAMES = tuple(_GATE_ARITY)


class StoreError(Exception):
    """An operation the store refused; the state is left exactly as it was."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


# --- argument checks, shared with the qutip reference store -------------------------------


def check_time(now_s: float) -> float:
    try:
        value = float(now_s)
    except (TypeError, ValueError):
        raise StoreError(
            "bad_parameter", f"time must be a number of seconds, got {now_s!r}"
        ) from None
    if not math.isfinite(value):
        raise StoreError("bad_parameter", f"time must be finite, got {now_s!r}")
    return value


def check_probability(name: str, value: float) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise StoreError("bad_parameter", f"{name} must be a number, got {value!r}") from None
    if not 0.0 <= number <= 1.0:  # also rejects nan
        raise StoreError("bad_parameter", f"{name} must be in [0, 1], got {value!r}")
    return number


_NO_READOUT_ERROR = (0.0, 0.0)


def check_readout_error(readout_error: Sequence[float]) -> tuple[float, float]:
    if type(readout_error) in (tuple, list) and readout_error == _NO_READOUT_ERROR:
        return _NO_READOUT_ERROR  # the common perfect-readout case, without the number checks
    try:
        p_one_given_zero, p_zero_given_one = readout_error
    except (TypeError, ValueError):
        raise StoreError(
            "bad_parameter", f"readout_error must be [p(1|0), p(0|1)], got {readout_error!r}"
        ) from None
    return (
        check_probability("readout_error p(1|0)", p_one_given_zero),
        check_probability("readout_error p(0|1)", p_zero_given_one),
    )


def check_pair(name: str, value) -> tuple:
    """A two-element value (one per end of a pair) as a tuple."""
    try:
        first, second = value
    except (TypeError, ValueError):
        raise StoreError("bad_parameter", f"{name} must be a pair, got {value!r}") from None
    return first, second


def check_gate_noise(depolar_prob: float) -> float:
    if type(depolar_prob) is float and depolar_prob == 0.0:  # the common noiseless case, fast
        return 0.0
    return check_probability("depolar_prob", depolar_prob)


def check_owner(owner: str) -> str:
    if type(owner) is not str or not owner:
        raise StoreError("bad_parameter", f"owner must be a non-empty node name, got {owner!r}")
    return owner


def check_memory_times(t1_s: float | None, t2_s: float | None) -> tuple[float | None, float | None]:
    """T1/T2 in seconds (None = no decay); T2 ≤ 2·T1."""
    if t1_s is None and t2_s is None:
        return None, None
    times = []
    for name, value in (("t1_s", t1_s), ("t2_s", t2_s)):
        if value is None:
            times.append(None)
            continue
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise StoreError(
                "bad_parameter", f"{name} must be seconds or null, got {value!r}"
            ) from None
        if not number > 0.0:  # rejects nan, 0 and negatives
            raise StoreError("bad_parameter", f"{name} must be > 0 seconds, got {value!r}")
        times.append(number)
    t1, t2 = times
    if t1 is not None and t2 is not None and t2 > 2.0 * t1:
        raise StoreError("bad_parameter", f"T2 must be <= 2·T1 (got T1={t1} s, T2={t2} s)")
    return t1, t2


def check_density_matrix(state: np.ndarray, dim: int) -> np.ndarray:
    """A dim × dim density matrix (Hermitian, trace 1, PSD within STATE_TOLERANCE), as a copy."""
    try:
        rho = np.array(state, dtype=complex)
    except (TypeError, ValueError):
        raise StoreError("bad_state", "state is not a numeric matrix") from None
    if rho.shape != (dim, dim):
        raise StoreError("bad_state", f"state must be {dim}x{dim}, got shape {rho.shape}")
    if not np.all(np.isfinite(rho)):
        raise StoreError("bad_state", "state has non-finite entries")
    if np.max(np.abs(rho - rho.conj().T)) > STATE_TOLERANCE:
        raise StoreError("bad_state", "state is not Hermitian")
    trace = np.trace(rho).real
    if abs(trace - 1.0) > STATE_TOLERANCE:
        raise StoreError("bad_state", f"state has trace {trace}, not 1")
    lowest = np.linalg.eigvalsh(rho)[0]
    if lowest < -STATE_TOLERANCE:
        raise StoreError("bad_state", f"state is not positive semidefinite (eigenvalue {lowest})")
    return rho


def check_target(target: np.ndarray, dim: int) -> tuple[bool, np.ndarray]:
    """(is_vector, array): a normalised state vector of length dim or a density matrix."""
    try:
        array = np.array(target, dtype=complex)
    except (TypeError, ValueError):
        raise StoreError("bad_state", "target is not a numeric vector or matrix") from None
    if array.ndim == 2 and array.shape == (dim, 1):
        array = array[:, 0]
    if array.ndim == 1:
        if array.shape != (dim,) or not np.all(np.isfinite(array)):
            raise StoreError("bad_state", f"target vector must have {dim} finite entries")
        norm = np.linalg.norm(array)
        if abs(norm - 1.0) > STATE_TOLERANCE:
            raise StoreError("bad_state", f"target vector has norm {norm}, not 1")
        return True, array
    return False, check_density_matrix(array, dim)


def parse_gate(name: str, angle: float | None) -> tuple[str, int, float | None]:
    """(canonical name, number of qubits, angle or None)."""
    arity = _GATE_ARITY.get(name) if type(name) is str else None
    if arity is None:
        canonical = name.upper() if type(name) is str else None
        arity = _GATE_ARITY.get(canonical)
        if arity is None:
            raise StoreError("bad_gate", f"unknown gate {name!r} (known: {', '.join(GATE_NAMES)})")
        name = canonical
    if name in ROTATIONS:
        if angle is None:
            raise StoreError("bad_angle", f"{name} needs an angle in radians")
        try:
            angle = float(angle)
        except (TypeError, ValueError):
            raise StoreError("bad_angle", f"angle must be a number, got {angle!r}") from None
        if not math.isfinite(angle):
            raise StoreError("bad_angle", f"angle must be finite, got {angle!r}")
    elif angle is not None:
        raise StoreError("bad_angle", f"{name} takes no angle (got {angle!r})")
    return name, arity, angle


def parse_basis(basis: str) -> str:
    if basis in BASES:
        return basis
    if type(basis) is str and basis.upper() in BASES:
        return basis.upper()
    raise StoreError("bad_basis", f"unknown basis {basis!r} (known: Z, X, Y)")


def parse_channel(channel: str, num_qubits: int) -> str:
    if channel not in CHANNELS:
        raise StoreError(
            "bad_channel", f"unknown channel {channel!r} (known: {', '.join(CHANNELS)})"
        )
    if channel == "depolarise" and num_qubits > 2:
        raise StoreError("bad_parameter", f"depolarise acts on 1 or 2 qubits, got {num_qubits}")
    return channel


def parse_qubits(qubits: Sequence[int], count: int | None = None) -> list:
    """The qubit handles as a list: distinct, at least one, exactly `count` if given."""
    if type(qubits) is not list:
        if isinstance(qubits, str | bytes | dict) or not hasattr(qubits, "__iter__"):
            raise StoreError("bad_parameter", f"qubits must be a list of handles, got {qubits!r}")
        qubits = list(qubits)
    if count is not None and len(qubits) != count:
        raise StoreError("bad_parameter", f"expected {count} qubit(s), got {len(qubits)}")
    if not qubits:
        raise StoreError("bad_parameter", "no qubits given")
    if len(qubits) > MAX_GROUP_QUBITS:
        raise StoreError(
            "too_large", f"{len(qubits)} qubits in one operation (at most {MAX_GROUP_QUBITS})"
        )
    if len(qubits) > 1:
        try:
            distinct = len(set(qubits))
        except TypeError:
            raise StoreError(
                "bad_parameter", f"qubit handles are integers, got {qubits!r}"
            ) from None
        if distinct != len(qubits):
            raise StoreError("duplicate_qubit", f"qubits must be distinct, got {qubits}")
    return qubits
