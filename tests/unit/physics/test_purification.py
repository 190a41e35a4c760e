"""Purification maps against the state store (exact) and against their known properties."""

import math

import numpy as np
import pytest

from qnemu.broker.store import StateStore
from qnemu.physics.bell import BellState, bell_density, werner_state
from qnemu.physics.purification import (
    DEUTSCH_ORDER,
    bbpssw,
    bell_diagonal_coefficients,
    dejmps,
    dejmps_rounds,
)


def bell_diagonal(coefficients) -> np.ndarray:
    return sum(c * bell_density(s) for c, s in zip(coefficients, DEUTSCH_ORDER, strict=True))


def run_dejmps(store: StateStore, rho: np.ndarray) -> tuple[bool, np.ndarray | None]:
    """The circuit, gate by gate, in the broker's store."""
    a1, b1 = store.create_pair(("n", "n"), rho, 0.0)
    a2, b2 = store.create_pair(("n", "n"), rho, 0.0)
    for qubit, sign in ((a1, 1), (a2, 1), (b1, -1), (b2, -1)):
        store.gate("RX", [qubit], "n", 0.0, angle=sign * math.pi / 2)
    store.gate("CNOT", [a1, a2], "n", 0.0)
    store.gate("CNOT", [b1, b2], "n", 0.0)
    agree = store.measure(a2, "Z", "n", 0.0, free=True) == store.measure(
        b2, "Z", "n", 0.0, free=True
    )
    kept = store.reduced_state([a1, b1], 0.0) if agree else None
    store.free(a1, "n", 0.0)
    store.free(b1, "n", 0.0)
    return agree, kept


@pytest.mark.parametrize("coefficients", [(0.7, 0.1, 0.15, 0.05), (0.85, 0.05, 0.05, 0.05)])
def test_dejmps_map_matches_the_circuit_in_the_store(coefficients):
    expected, success = dejmps(coefficients)
    store = StateStore(seed=3)
    trials, successes = 2000, 0
    for _ in range(trials):
        agree, kept = run_dejmps(store, bell_diagonal(coefficients))
        if agree:
            successes += 1
            assert bell_diagonal_coefficients(kept) == pytest.approx(expected, abs=1e-9)
    sigma = math.sqrt(trials * success * (1 - success))
    assert abs(successes - trials * success) < 5 * sigma


def test_bbpssw_closed_form_and_fixed_points():
    assert bbpssw(1.0) == pytest.approx((1.0, 1.0))
    assert bbpssw(0.5)[0] == pytest.approx(0.5)  # F = 1/2 is the threshold: no gain
    improved, success = bbpssw(0.8)
    g = 0.2 / 3
    assert improved == pytest.approx((0.64 + g * g) / (0.64 + 1.6 * g + 5 * g * g))
    assert improved > 0.8 and 0 < success < 1


def test_dejmps_beats_bbpssw_on_werner_pairs_and_counts_rounds():
    werner = bell_diagonal_coefficients(werner_state(0.8, BellState.PHI_PLUS))
    (fidelity, *_), _ = dejmps(werner)
    assert fidelity > bbpssw(0.8)[0]
    assert dejmps_rounds(werner, 0.8) == 0
    assert dejmps_rounds(werner, fidelity) == 1
    assert dejmps_rounds(werner, 0.999999, max_rounds=2) is None


def test_bad_coefficients_are_refused():
    with pytest.raises(ValueError):
        dejmps((0.5, 0.5, 0.5, 0.5))
    with pytest.raises(ValueError):
        bbpssw(1.5)
