"""Gate matrices (qubit order: first qubit is the most significant bit)."""

import math

import numpy as np

__all__ = [
    "CNOT",
    "CZ",
    "IDENTITY",
    "ROTATIONS",
    "SINGLE_QUBIT_GATES",
    "TWO_QUBIT_GATES",
    "H",
    "S",
    "T",
    "X",
    "Y",
    "Z",
    "rotation",
]


def _frozen(matrix: list) -> np.ndarray:
    # Shared module constants: read-only so no caller can corrupt them in place.
    array = np.array(matrix, dtype=complex)
    array.flags.writeable = False
    return array


IDENTITY = _frozen([[1, 0], [0, 1]])
X = _frozen([[0, 1], [1, 0]])
Y = _frozen([[0, -1j], [1j, 0]])
Z = _frozen([[1, 0], [0, -1]])
H = _frozen(np.array([[1, 1], [1, -1]]) / math.sqrt(2.0))
S = _frozen([[1, 0], [0, 1j]])
T = _frozen([[1, 0], [0, np.exp(1j * math.pi / 4.0)]])

CNOT = _frozen([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 1], [0, 0, 1, 0]])  # control first
CZ = _frozen(np.diag([1, 1, 1, -1]))

SINGLE_QUBIT_GATES: dict[str, np.ndarray] = {"X": X, "Y": Y, "Z": Z, "H": H, "S": S, "T": T}
TWO_QUBIT_GATES: dict[str, np.ndarray] = {"CNOT": CNOT, "CZ": CZ}
ROTATIONS: dict[str, str] = {"RX": "x", "RY": "y", "RZ": "z"}  # gate name -> rotation axis


def rotation(axis: str, angle_rad: float) -> np.ndarray:
    """exp(−iθσ/2) = cos(θ/2)·I − i·sin(θ/2)·σ about the Bloch-sphere axis "x", "y" or "z"."""
    angle = float(angle_rad)
    if not math.isfinite(angle):
        raise ValueError(f"rotation angle must be finite, got {angle_rad!r}")
    c, s = math.cos(angle / 2.0), math.sin(angle / 2.0)
    if axis == "x":
        return np.array([[c, -1j * s], [-1j * s, c]], dtype=complex)
    if axis == "y":
        return np.array([[c, -s], [s, c]], dtype=complex)
    if axis == "z":
        return np.array([[c - 1j * s, 0.0], [0.0, c + 1j * s]], dtype=complex)
    raise ValueError(f"unknown rotation axis {axis!r} (known: x, y, z)")
