"""Purification maps against the state store (exact) and against their known properties."""

import math

import numpy as np
import pytest

from qnemu.broker.store import StateStore
from qnemu.physics.bell import BellState, bell_density, werner_state
from qnemu.physics.purification import (
    DEUTSCH_ORDER,
    PROTOCOLS,
    TWIRLS,
    bbpssw,
    bell_diagonal_coefficients,
    dejmps,
    dejmps_rounds,
    purified,
    swapped_coefficients,
    twirl_gates,
    werner_coefficients,
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


def twirl(store: StateStore, a: int, b: int, index: int) -> None:
    """One twirl element at both ends of a pair, gate by gate, in the store."""
    for qubit, side in ((a, 0), (b, 1)):
        for name, angle in twirl_gates(index, side):
            store.gate(name, [qubit], "n", 0.0, angle=angle)


def test_every_twirl_element_keeps_phi_plus_and_permutes_the_errors():
    coefficients = (0.7, 0.2, 0.07, 0.03)
    store = StateStore(seed=1)
    average = np.zeros(4)
    for index in range(TWIRLS):
        a, b = store.create_pair(("n", "n"), bell_diagonal(coefficients), 0.0)
        twirl(store, a, b, index)
        after = bell_diagonal_coefficients(store.reduced_state([a, b], 0.0))
        assert after[0] == pytest.approx(0.7, abs=1e-12)
        assert sorted(after[1:]) == pytest.approx(sorted(coefficients[1:]), abs=1e-12)
        average += after
        store.free(a, "n", 0.0)
        store.free(b, "n", 0.0)
    assert average / TWIRLS == pytest.approx(werner_coefficients(0.7), abs=1e-12)


def run_bbpssw(store: StateStore, rho: np.ndarray, rng) -> tuple[bool, np.ndarray | None]:
    """Twirl both pairs, bilateral CNOT, measure the sacrificed pair, twirl the kept one."""
    a1, b1 = store.create_pair(("n", "n"), rho, 0.0)
    a2, b2 = store.create_pair(("n", "n"), rho, 0.0)
    twirl(store, a1, b1, int(rng.integers(TWIRLS)))
    twirl(store, a2, b2, int(rng.integers(TWIRLS)))
    store.gate("CNOT", [a1, a2], "n", 0.0)
    store.gate("CNOT", [b1, b2], "n", 0.0)
    agree = store.measure(a2, "Z", "n", 0.0, free=True) == store.measure(
        b2, "Z", "n", 0.0, free=True
    )
    kept = None
    if agree:
        twirl(store, a1, b1, int(rng.integers(TWIRLS)))
        kept = store.reduced_state([a1, b1], 0.0)
    store.free(a1, "n", 0.0)
    store.free(b1, "n", 0.0)
    return agree, kept


def test_bbpssw_circuit_with_random_twirls_gives_the_werner_map_on_average():
    """Not Werner input: the twirl makes it Werner (on average), the round then follows
    the closed form in F only, and the kept pair is Werner again (on average)."""
    coefficients = (0.75, 0.15, 0.07, 0.03)
    expected, success = bbpssw(0.75)
    store, rng = StateStore(seed=5), np.random.default_rng(5)
    trials, kept = 3000, []
    for _ in range(trials):
        agree, state = run_bbpssw(store, bell_diagonal(coefficients), rng)
        if agree:
            kept.append(bell_diagonal_coefficients(state))
    sigma = math.sqrt(trials * success * (1 - success))
    assert abs(len(kept) - trials * success) < 5 * sigma
    mean = np.mean(kept, axis=0)
    spread = np.std(kept, axis=0) / math.sqrt(len(kept))
    werner = np.array(werner_coefficients(expected))
    assert np.all(np.abs(mean - werner) < 5 * spread + 1e-9), (mean, werner)


def test_first_round_on_werner_pairs_is_the_same_closed_form_for_both_protocols():
    fidelity = 0.8
    e = (1 - fidelity) / 3
    success = fidelity**2 + 2 * fidelity * e + 5 * e**2
    closed = (fidelity**2 + e**2) / success
    for protocol in PROTOCOLS:
        weights, successes = purified(werner_coefficients(fidelity), protocol, 1)
        assert weights[0] == pytest.approx(closed, abs=1e-12)
        assert successes == pytest.approx([success], abs=1e-12)
    # Second round: BBPSSW restarted from Werner, DEJMPS kept the better weights.
    bbpssw_two, _ = purified(werner_coefficients(fidelity), "bbpssw", 2)
    dejmps_two, _ = purified(werner_coefficients(fidelity), "dejmps", 2)
    assert bbpssw_two[0] == pytest.approx(bbpssw(closed)[0], abs=1e-12)
    assert bbpssw_two == pytest.approx(werner_coefficients(bbpssw_two[0]))
    assert dejmps_two[0] > bbpssw_two[0]
    assert dejmps_two[1:] != pytest.approx(werner_coefficients(dejmps_two[0])[1:])
    with pytest.raises(ValueError, match="protocol"):
        purified(werner_coefficients(fidelity), "pumping", 1)


def test_swapping_werner_links_gives_the_chain_formula_and_bell_diagonal_links_convolve():
    for fidelities in ([0.9], [0.9, 0.8], [0.95, 0.9, 0.85]):
        w = math.prod((4 * f - 1) / 3 for f in fidelities)
        swapped = swapped_coefficients([werner_coefficients(f) for f in fidelities])
        assert swapped[0] == pytest.approx(0.25 + 0.75 * w, abs=1e-12)
    # Two Bell-diagonal links: Φ+ out when both errors are equal.
    one, two = (0.7, 0.1, 0.15, 0.05), (0.8, 0.02, 0.08, 0.1)
    same = sum(x * y for x, y in zip(one, two, strict=True))
    assert swapped_coefficients([one, two])[0] == pytest.approx(same, abs=1e-12)
    assert sum(swapped_coefficients([one, two])) == pytest.approx(1.0)
