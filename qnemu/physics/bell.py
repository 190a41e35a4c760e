"""The four Bell states, as vectors and density matrices (qubit order: a, b)."""

from enum import IntEnum

import numpy as np

__all__ = ["BellState", "bell_density", "bell_vector", "werner_state"]

_SQRT_HALF = np.sqrt(0.5)


class BellState(IntEnum):
    """A Bell state; the value is the two outcome bits (x_bit << 1 | z_bit) of a BSM.

    z_bit set means the parities differ (Ψ), x_bit set means the relative sign is −.
    """

    PHI_PLUS = 0
    PHI_MINUS = 1 << 1
    PSI_PLUS = 1
    PSI_MINUS = (1 << 1) | 1

    @property
    def label(self) -> str:
        return {0: "phi+", 2: "phi-", 1: "psi+", 3: "psi-"}[int(self)]

    @classmethod
    def from_label(cls, label: str) -> "BellState":
        for state in cls:
            if state.label == label or state.name == label.upper():
                return state
        raise ValueError(f"unknown Bell state {label!r} (known: phi+, phi-, psi+, psi-)")


def bell_vector(state: BellState) -> np.ndarray:
    """The state vector in the basis |00>, |01>, |10>, |11>."""
    state = BellState(state)
    vector = np.zeros(4, dtype=complex)
    sign = -1.0 if state & 2 else 1.0
    if state & 1:  # Ψ: |01> ± |10>
        vector[1], vector[2] = _SQRT_HALF, sign * _SQRT_HALF
    else:  # Φ: |00> ± |11>
        vector[0], vector[3] = _SQRT_HALF, sign * _SQRT_HALF
    return vector


def bell_density(state: BellState) -> np.ndarray:
    vector = bell_vector(state)
    return np.outer(vector, vector.conj())


def werner_state(fidelity: float, state: BellState = BellState.PHI_PLUS) -> np.ndarray:
    """F |B><B| + (1 − F)/3 (I − |B><B|): fidelity F to Bell state B, isotropic noise."""
    if not 0.0 <= fidelity <= 1.0:
        raise ValueError(f"fidelity must be in [0, 1], got {fidelity}")
    projector = bell_density(state)
    return fidelity * projector + (1.0 - fidelity) / 3.0 * (np.eye(4) - projector)
