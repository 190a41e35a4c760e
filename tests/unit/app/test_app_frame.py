"""The Pauli-frame correction a receiving node applies to its app's half of a pair."""

import itertools

import numpy as np
import pytest

from qnemu.node.apps import FRAME_GATES, corrected_outcome
from qnemu.physics import gates
from qnemu.physics.bell import BellState, bell_vector

PAULI = {"X": gates.X, "Z": gates.Z}
BASIS_PAULI = {"Z": gates.Z, "X": gates.X, "Y": gates.Y}


def corrected(state: BellState) -> np.ndarray:
    vector = bell_vector(state)
    for name in FRAME_GATES[state]:  # on the second (receiving) qubit
        vector = np.kron(np.eye(2), PAULI[name]) @ vector
    return vector


@pytest.mark.parametrize("state", list(BellState))
def test_the_frame_gates_turn_every_bell_state_into_phi_plus(state):
    overlap = abs(np.vdot(bell_vector(BellState.PHI_PLUS), corrected(state))) ** 2
    assert overlap == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize(("state", "basis"), list(itertools.product(BellState, "ZXY")))
def test_measure_mode_outcomes_are_corrected_as_if_the_gates_came_first(state, basis):
    # The receiving half's outcome flips exactly when its correction anticommutes with the
    # measured Pauli: then the corrected correlation <B⊗B> equals the one for Φ+.
    pauli = BASIS_PAULI[basis]
    observable = np.kron(pauli, pauli)
    raw = np.real(np.vdot(bell_vector(state), observable @ bell_vector(state)))
    target = np.real(
        np.vdot(bell_vector(BellState.PHI_PLUS), observable @ bell_vector(BellState.PHI_PLUS))
    )
    flipped = corrected_outcome(state, basis, 0)
    assert raw * (-1) ** flipped == pytest.approx(target, abs=1e-12)
    assert corrected_outcome(state, basis, 1) == 1 - flipped
