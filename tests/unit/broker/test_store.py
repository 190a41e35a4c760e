"""The numpy state store: refusals leave the state alone, groups merge and split, BSM, teleport."""

import math

import numpy as np
import pytest

from qnemu.broker.store import StateStore, StoreError
from qnemu.physics.bell import BellState, bell_density, bell_vector, werner_state

TOLERANCE = 1e-12


def snapshot(store: StateStore, qubits: list[int]) -> tuple:
    """Everything observable, read at time 0 (no memory here decays, so reading changes nothing)."""
    states = [store.reduced_state([q], 0.0) for q in qubits]
    groups = sorted(store.group_members(q) for q in qubits)
    rng_state = store._rng.bit_generator.state
    return states, groups, store.qubit_count, store.group_count, rng_state


def assert_same(before: tuple, after: tuple) -> None:
    for state_before, state_after in zip(before[0], after[0], strict=True):
        assert np.array_equal(state_before, state_after)
    assert before[1:] == after[1:]


@pytest.fixture
def populated() -> tuple[StateStore, dict[str, int]]:
    store = StateStore(seed=11)
    a, b = store.create_pair(("alice", "alice"), bell_density(BellState.PSI_MINUS), 0.0)
    c = store.alloc("alice", 0.0)
    d = store.alloc("bob", 0.0)
    store.gate("RY", [c], "alice", 0.0, angle=0.9)
    freed = store.alloc("alice", 0.0)
    store.free(freed, "alice", 0.0)
    return store, {"a": a, "b": b, "c": c, "d": d, "freed": freed}


REFUSALS = [
    ("unknown_qubit", lambda s, q: s.gate("X", [10_000], "alice", 0.0)),
    ("freed_qubit", lambda s, q: s.gate("X", [q["freed"]], "alice", 0.0)),
    ("freed_qubit", lambda s, q: s.free(q["freed"], "alice", 0.0)),
    ("not_owner", lambda s, q: s.gate("X", [q["d"]], "alice", 0.0)),
    ("not_owner", lambda s, q: s.gate("CNOT", [q["a"], q["d"]], "alice", 0.0)),
    ("not_owner", lambda s, q: s.measure(q["a"], "Z", "bob", 0.0)),
    ("not_owner", lambda s, q: s.bell_measure(q["c"], q["d"], "alice", 0.0)),
    ("not_owner", lambda s, q: s.apply_noise("dephase", [q["a"]], 0.1, "bob", 0.0)),
    ("not_owner", lambda s, q: s.free(q["a"], "bob", 0.0)),
    ("bad_gate", lambda s, q: s.gate("SWAP", [q["a"], q["b"]], "alice", 0.0)),
    ("bad_gate", lambda s, q: s.gate(7, [q["a"]], "alice", 0.0)),
    ("bad_angle", lambda s, q: s.gate("RX", [q["a"]], "alice", 0.0, angle=math.nan)),
    ("bad_angle", lambda s, q: s.gate("RZ", [q["a"]], "alice", 0.0, angle=math.inf)),
    ("bad_angle", lambda s, q: s.gate("RY", [q["a"]], "alice", 0.0)),
    ("bad_angle", lambda s, q: s.gate("H", [q["a"]], "alice", 0.0, angle=0.5)),
    ("bad_basis", lambda s, q: s.measure(q["a"], "W", "alice", 0.0)),
    ("duplicate_qubit", lambda s, q: s.gate("CNOT", [q["a"], q["a"]], "alice", 0.0)),
    ("duplicate_qubit", lambda s, q: s.bell_measure(q["a"], q["a"], "alice", 0.0)),
    ("bad_parameter", lambda s, q: s.gate("H", [q["a"], q["b"]], "alice", 0.0)),
    ("bad_parameter", lambda s, q: s.gate("H", [q["a"]], "alice", math.nan)),
    ("bad_parameter", lambda s, q: s.gate("H", [q["a"]], "alice", 0.0, depolar_prob=1.5)),
    ("bad_parameter", lambda s, q: s.measure(q["a"], "Z", "alice", 0.0, readout_error=(0.1,))),
    ("bad_parameter", lambda s, q: s.measure(q["a"], "Z", "alice", 0.0, readout_error=(0, 2))),
    ("bad_parameter", lambda s, q: s.bell_measure(q["a"], q["b"], "alice", 0.0, depolar_prob=-1)),
    ("bad_parameter", lambda s, q: s.apply_noise("dephase", [q["a"]], 1.1, "alice", 0.0)),
    (
        "bad_parameter",
        lambda s, q: s.apply_noise("depolarise", [q["a"], q["b"], q["c"]], 0.1, "alice", 0.0),
    ),
    ("bad_channel", lambda s, q: s.apply_noise("bitflip", [q["a"]], 0.1, "alice", 0.0)),
    ("bad_parameter", lambda s, q: s.alloc("", 0.0)),
    ("bad_parameter", lambda s, q: s.alloc("alice", 0.0, t1_s=-1.0)),
    ("bad_parameter", lambda s, q: s.gate("X", ["a"], "alice", 0.0)),
    ("bad_parameter", lambda s, q: s.gate("X", [True], "alice", 0.0)),
    ("bad_parameter", lambda s, q: s.gate("CZ", [[1], [2]], "alice", 0.0)),
    ("bad_parameter", lambda s, q: s.measure(q["a"], "Z", "alice", 0.0, readout_error=None)),
    ("bad_gate", lambda s, q: s.gate(["H"], [q["a"]], "alice", 0.0)),
    ("bad_basis", lambda s, q: s.measure(q["a"], ["Z"], "alice", 0.0)),
    ("bad_state", lambda s, q: s.create_pair(("alice", "bob"), np.eye(4), 0.0)),  # trace 4
    ("bad_state", lambda s, q: s.create_pair(("alice", "bob"), np.eye(2) / 2, 0.0)),
    ("bad_state", lambda s, q: s.create_pair(("alice", "bob"), np.diag([1.5, -0.5, 0, 0]), 0.0)),
    ("bad_state", lambda s, q: s.create_pair(("alice", "bob"), np.triu(np.ones((4, 4))) / 4, 0.0)),
    ("bad_state", lambda s, q: s.create_pair(("alice", "bob"), np.full((4, 4), np.nan), 0.0)),
    ("bad_state", lambda s, q: s.create_pair(("alice", "bob"), "phi+", 0.0)),
    ("bad_state", lambda s, q: s.fidelity([q["a"], q["b"]], np.ones(4), 0.0)),
    ("bad_state", lambda s, q: s.fidelity([q["a"]], np.ones(4) / 2, 0.0)),
    ("unknown_qubit", lambda s, q: s.reduced_state([q["a"], 99], 0.0)),
    ("freed_qubit", lambda s, q: s.owner_of(q["freed"])),
]


@pytest.mark.parametrize(("code", "call"), REFUSALS)
def test_refused_operations_leave_the_state_unchanged(populated, code, call) -> None:
    store, qubits = populated
    live = [qubits[name] for name in "abcd"]
    before = snapshot(store, live)
    with pytest.raises(StoreError) as refused:
        call(store, qubits)
    assert refused.value.code == code, refused.value.message
    assert_same(before, snapshot(store, live))


def test_not_owner_names_the_qubit_its_owner_and_the_caller(populated) -> None:
    store, qubits = populated
    with pytest.raises(StoreError) as refused:
        store.measure(qubits["d"], "Z", "alice", 0.0)
    assert str(qubits["d"]) in refused.value.message
    assert "'bob'" in refused.value.message and "'alice'" in refused.value.message


def test_refused_call_does_not_advance_decoherence() -> None:
    store = StateStore(seed=1)
    mine = store.alloc("alice", 0.0, t2_s=1.0)
    theirs = store.alloc("bob", 0.0)
    store.gate("H", [mine], "alice", 0.0)
    with pytest.raises(StoreError):
        store.gate("CZ", [mine, theirs], "alice", 5.0)
    # Had the refused call decohered `mine` to t = 5, this earlier read would show it.
    assert store.reduced_state([mine], 1.0)[0, 1] == pytest.approx(0.5 * math.exp(-1.0))
    assert store.group_count == 2


def test_ten_thousand_pairs_are_ten_thousand_groups_of_two() -> None:
    store = StateStore(seed=2)
    pairs = [store.create_pair(("a", "b"), bell_density(0), 0.0) for _ in range(10_000)]
    assert store.group_count == 10_000
    assert store.group_sizes() == {2: 10_000}
    assert store.qubit_count == 20_000
    store.measure(pairs[0][0], "Z", "a", 0.0)
    assert store.group_sizes() == {2: 9_999, 1: 2}


def test_two_qubit_gate_merges_and_measurement_splits() -> None:
    store = StateStore(seed=3)
    a1, b1 = store.create_pair(("n", "n"), bell_density(0), 0.0)
    a2, b2 = store.create_pair(("n", "n"), bell_density(0), 0.0)
    store.gate("CNOT", [b1, a2], "n", 0.0)
    assert store.group_count == 1
    assert set(store.group_members(a1)) == {a1, b1, a2, b2}
    outcome = store.measure(b1, "Z", "n", 0.0)
    assert store.group_members(b1) == (b1,)
    assert store.group_count == 2
    expected = np.zeros((2, 2))
    expected[outcome, outcome] = 1
    assert np.allclose(store.reduced_state([b1], 0.0), expected, atol=TOLERANCE)
    store.free(a1, "n", 0.0)
    assert store.qubit_count == 3
    assert set(store.group_members(a2)) == {a2, b2}


def test_measurement_leaves_partner_in_the_correlated_state() -> None:
    store = StateStore(seed=4)
    for basis in ("Z", "X", "Y"):
        for _ in range(20):
            a, b = store.create_pair(("a", "b"), bell_density(BellState.PHI_PLUS), 0.0)
            outcome_a = store.measure(a, basis, "a", 0.0, free=True)
            outcome_b = store.measure(b, basis, "b", 0.0)
            # Φ+ correlations: +1 in Z and X, anti-correlated in Y.
            assert outcome_a ^ outcome_b == (1 if basis == "Y" else 0)
            assert store.group_members(b) == (b,)
    assert store.qubit_count == 60


@pytest.mark.parametrize("bell_state", list(BellState))
def test_bell_measure_identifies_each_bell_state(bell_state: BellState) -> None:
    store = StateStore(seed=int(bell_state))
    for _ in range(25):
        a, b = store.create_pair(("n", "n"), bell_density(bell_state), 0.0)
        assert store.bell_measure(a, b, "n", 0.0) is bell_state
    assert store.qubit_count == 0 and store.group_count == 0


def test_bell_measure_without_free_leaves_computational_states() -> None:
    store = StateStore(seed=5)
    a, b = store.create_pair(("n", "n"), bell_density(BellState.PSI_MINUS), 0.0)
    assert store.bell_measure(a, b, "n", 0.0, free=False) is BellState.PSI_MINUS
    assert np.allclose(store.reduced_state([a, b], 0.0), np.diag([0, 0, 0, 1]), atol=TOLERANCE)


def test_readout_error_flips_reported_bits_at_its_rate() -> None:
    store = StateStore(seed=6)
    shots, p_flip = 4000, 0.1
    flips = sum(
        store.measure(store.alloc("n", 0.0), "Z", "n", 0.0, readout_error=(p_flip, 0.0), free=True)
        for _ in range(shots)
    )
    sigma = math.sqrt(shots * p_flip * (1 - p_flip))
    assert abs(flips - shots * p_flip) <= 5 * sigma


def test_x_basis_outcomes_of_zero_are_fair_coins() -> None:
    store = StateStore(seed=7)
    shots = 4000
    ones = sum(store.measure(store.alloc("n", 0.0), "X", "n", 0.0, free=True) for _ in range(shots))
    assert abs(ones - shots / 2) <= 5 * math.sqrt(shots / 4)


def test_teleportation_delivers_the_state() -> None:
    store = StateStore(seed=8)
    rng = np.random.default_rng(9)
    for _ in range(20):
        theta, phi = rng.uniform(0, math.pi), rng.uniform(0, 2 * math.pi)
        psi = np.array([math.cos(theta / 2), np.exp(1j * phi) * math.sin(theta / 2)])
        source = store.alloc("alice", 0.0)
        store.gate("RY", [source], "alice", 0.0, angle=theta)
        store.gate("RZ", [source], "alice", 0.0, angle=phi)
        a, b = store.create_pair(("alice", "bob"), bell_density(BellState.PHI_PLUS), 0.0)
        outcome = store.bell_measure(source, a, "alice", 0.0)
        if outcome & 1:  # parity bit
            store.gate("X", [b], "bob", 0.0)
        if outcome & 2:  # phase bit
            store.gate("Z", [b], "bob", 0.0)
        assert store.fidelity([b], psi, 0.0) == pytest.approx(1.0, abs=TOLERANCE)
        store.free(b, "bob", 0.0)
    assert store.qubit_count == 0


def test_reduced_state_orders_qubits_as_asked_across_groups() -> None:
    store = StateStore(seed=10)
    a, b = store.create_pair(("n", "n"), werner_state(0.8, BellState.PSI_PLUS), 0.0)
    c = store.alloc("n", 0.0)
    store.gate("X", [c], "n", 0.0)
    forward = store.reduced_state([a, b, c], 0.0)
    assert np.allclose(forward, np.kron(werner_state(0.8, BellState.PSI_PLUS), np.diag([0, 1])))
    shuffled = store.reduced_state([c, b, a], 0.0)
    tensor = forward.reshape((2,) * 6).transpose(2, 1, 0, 5, 4, 3).reshape(8, 8)
    assert np.allclose(shuffled, tensor, atol=TOLERANCE)


def test_fidelity_of_a_pure_target_matrix_equals_the_vector_form() -> None:
    store = StateStore(seed=12)
    pair = store.create_pair(("n", "n"), werner_state(0.9), 0.0)
    store.apply_noise("amplitude_damp", [pair[0]], 0.3, "n", 0.0)
    by_vector = store.fidelity(pair, bell_vector(0), 0.0)
    assert store.fidelity(pair, bell_density(0), 0.0) == pytest.approx(by_vector, abs=TOLERANCE)
    assert store.fidelity(pair, store.reduced_state(pair, 0.0), 0.0) == pytest.approx(1.0)


def test_gate_noise_depolarises_the_pair() -> None:
    store = StateStore(seed=13)
    pair = store.create_pair(("n", "n"), bell_density(0), 0.0)
    store.gate("CZ", list(pair), "n", 0.0, depolar_prob=0.2)
    store.gate("CZ", list(pair), "n", 0.0)
    expected = 0.8 + 0.2 / 4  # (1 − p)·1 + p·Tr(Φ+ · I/4)
    assert store.fidelity(pair, bell_vector(0), 0.0) == pytest.approx(expected, abs=TOLERANCE)


def test_created_pairs_do_not_share_memory_with_the_input_or_each_other() -> None:
    store = StateStore(seed=14)
    state = bell_density(BellState.PHI_PLUS)
    first = store.create_pair(("n", "n"), state, 0.0)
    second = store.create_pair(("n", "n"), state, 0.0)
    store.apply_noise("dephase", [first[0]], 0.5, "n", 0.0)
    state[:] = 0
    assert store.fidelity(second, bell_vector(0), 0.0) == pytest.approx(1.0, abs=TOLERANCE)
    assert store.fidelity(first, bell_vector(0), 0.0) == pytest.approx(0.5, abs=TOLERANCE)


def test_handles_increase_and_freed_ones_are_reported_as_freed() -> None:
    store = StateStore(seed=15)
    first = store.alloc("n", 0.0)
    store.free(first, "n", 0.0)
    second = store.alloc("n", 0.0)
    assert second > first
    with pytest.raises(StoreError) as refused:
        store.measure(first, "Z", "n", 0.0)
    assert refused.value.code == "freed_qubit"
    assert store.owner_of(np.int64(second)) == "n"


@pytest.mark.filterwarnings("ignore:matplotlib not found")
def test_export_qobj_has_qubit_dims() -> None:
    store = StateStore(seed=16)
    pair = store.create_pair(("n", "m"), werner_state(0.95), 0.0)
    qobj = store.export_qobj(pair, 0.0)
    assert qobj.dims == [[2, 2], [2, 2]]
    assert np.allclose(qobj.full(), werner_state(0.95), atol=TOLERANCE)
