"""The fused small-group kernels agree with the general paths: same draws, outcomes and states."""

import math

import numpy as np
import pytest

from qnemu.broker.store import StateStore
from qnemu.physics.bell import BellState, bell_density, bell_vector, werner_state

STATE_TOLERANCE = 1e-12  # both paths do the same arithmetic in a different order
OWNER = "n"


def random_density(rng: np.random.Generator, dim: int) -> np.ndarray:
    rank = int(rng.integers(1, dim + 1))
    ginibre = rng.normal(size=(dim, rank)) + 1j * rng.normal(size=(dim, rank))
    rho = ginibre @ ginibre.conj().T
    return rho / np.trace(rho).real


def store_pair(seed: int) -> tuple[StateStore, StateStore]:
    """A store using the fused kernels and one forced onto the general paths, same seed."""
    general = StateStore(seed=seed)
    general._fused = False
    return StateStore(seed=seed), general


def both(stores, method: str, *args, **kwargs) -> list:
    return [getattr(store, method)(*args, **kwargs) for store in stores]


def assert_stores_agree(stores, live: list[int], now_s: float) -> None:
    fused, general = stores
    assert fused.group_sizes() == general.group_sizes()
    assert fused.qubit_count == general.qubit_count == len(live)
    for qubit in live:
        members = list(fused.group_members(qubit))
        assert members == list(general.group_members(qubit))
        rho_fused = fused.reduced_state(members, now_s)
        rho_general = general.reduced_state(members, now_s)
        assert np.allclose(rho_fused, rho_general, atol=STATE_TOLERANCE, rtol=0)
    # Same number of draws consumed: the next draw matches.
    assert fused._rng.random() == general._rng.random()


def random_options(rng: np.random.Generator) -> dict:
    readout = (0.0, 0.0)
    if rng.random() < 0.5:
        readout = (float(rng.uniform(0, 0.3)), float(rng.uniform(0, 0.3)))
    return {"readout_error": readout, "free": bool(rng.random() < 0.5)}


def random_memory(rng: np.random.Generator) -> dict:
    if rng.random() < 0.5:
        return {}
    t1_a, t1_b = rng.uniform(0.5, 3.0, size=2)
    return {"t1_s": (t1_a, t1_b), "t2_s": (rng.uniform(0.1, t1_a), rng.uniform(0.1, t1_b))}


@pytest.mark.parametrize("seed", range(40))
def test_swap_fast_path_matches_the_general_path(seed: int) -> None:
    rng = np.random.default_rng(500 + seed)
    stores = store_pair(seed)
    first = both(stores, "create_pair", (OWNER, OWNER), random_density(rng, 4), 0.0)[0]
    second = both(
        stores, "create_pair", (OWNER, OWNER), random_density(rng, 4), 0.1, **random_memory(rng)
    )[0]
    # Either qubit of either pair: every order of the two 4×4 matrices.
    a_index, b_index = int(rng.integers(2)), int(rng.integers(2))
    qubit_a, qubit_b = first[a_index], second[b_index]
    options = random_options(rng)
    fused, general = both(stores, "bell_measure", qubit_a, qubit_b, OWNER, 0.4, **options)
    assert fused is general
    live = [first[1 - a_index], second[1 - b_index]]
    if not options["free"]:
        live += [qubit_a, qubit_b]
    assert_stores_agree(stores, live, 0.4)


@pytest.mark.parametrize("seed", range(20))
def test_pair_fast_path_matches_the_general_path(seed: int) -> None:
    rng = np.random.default_rng(700 + seed)
    stores = store_pair(seed)
    pair = both(stores, "create_pair", (OWNER, OWNER), random_density(rng, 4), 0.0)[0]
    qubits = list(pair) if rng.random() < 0.5 else list(pair)[::-1]
    options = random_options(rng)
    fused, general = both(stores, "bell_measure", *qubits, OWNER, 0.2, **options)
    assert fused is general
    assert_stores_agree(stores, [] if options["free"] else qubits, 0.2)


@pytest.mark.parametrize("seed", range(30))
def test_measure_and_gates_on_small_groups_match_the_general_path(seed: int) -> None:
    rng = np.random.default_rng(900 + seed)
    stores = store_pair(seed)
    size = int(rng.integers(1, 5))  # 1–3 take the fused kernels, 4 does not
    qubits = [both(stores, "alloc", OWNER, 0.0, t1_s=2.0, t2_s=1.5)[0] for _ in range(size)]
    for _ in range(6):  # entangle the group with random gates
        if size > 1 and rng.random() < 0.5:
            control, target = (int(q) for q in rng.choice(qubits, size=2, replace=False))
            both(stores, "gate", "CNOT", [control, target], OWNER, 0.0)
        name = ("H", "S", "T", "RX", "RY")[rng.integers(5)]
        angle = float(rng.uniform(-math.pi, math.pi)) if name[0] == "R" else None
        both(stores, "gate", name, [int(rng.choice(qubits))], OWNER, 0.0, angle=angle)
    assert stores[0].group_sizes() == stores[1].group_sizes()
    measured = int(rng.choice(qubits))
    basis = ("Z", "X", "Y")[rng.integers(3)]
    options = random_options(rng)
    fused, general = both(stores, "measure", measured, basis, OWNER, 0.3, **options)
    assert fused == general
    live = [q for q in qubits if q != measured or not options["free"]]
    assert_stores_agree(stores, live, 0.3)


def test_swapping_bell_pairs_leaves_the_measured_bell_state() -> None:
    store = StateStore(seed=11)
    counts = dict.fromkeys(BellState, 0)
    runs = 400
    for _ in range(runs):
        p, a = store.create_pair((OWNER, OWNER), bell_density(BellState.PHI_PLUS), 0.0)
        b, q = store.create_pair((OWNER, OWNER), bell_density(BellState.PHI_PLUS), 0.0)
        outcome = store.bell_measure(a, b, OWNER, 0.0)
        counts[outcome] += 1
        assert store.fidelity([p, q], bell_vector(outcome), 0.0) == pytest.approx(1.0, abs=1e-12)
        store.free(p, OWNER, 0.0)
        store.free(q, OWNER, 0.0)
    sigma = math.sqrt(runs * 0.25 * 0.75)  # every outcome has probability 1/4
    assert all(abs(count - runs / 4) <= 5 * sigma for count in counts.values()), counts
    assert store.qubit_count == 0


def test_swapping_werner_pairs_multiplies_their_werner_parameters() -> None:
    """F' = F1·F2 + (1 − F1)(1 − F2)/3 for Werner pairs, whatever the outcome."""
    store = StateStore(seed=12)
    for fidelity_1, fidelity_2 in ((0.9, 0.8), (0.6, 0.95), (0.25, 1.0)):
        p, a = store.create_pair((OWNER, OWNER), werner_state(fidelity_1), 0.0)
        b, q = store.create_pair((OWNER, OWNER), werner_state(fidelity_2), 0.0)
        outcome = store.bell_measure(a, b, OWNER, 0.0)
        expected = fidelity_1 * fidelity_2 + (1 - fidelity_1) * (1 - fidelity_2) / 3
        fidelity = store.fidelity([p, q], bell_vector(outcome), 0.0)
        assert fidelity == pytest.approx(expected, abs=1e-12)
        assert store.group_members(p) == (p, q)
