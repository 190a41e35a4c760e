"""Random operation sequences through the numpy store and the qutip reference agree to 1e-10."""

import itertools
import math
import warnings

import numpy as np
import pytest

from qnemu.broker.store import StateStore, StoreError
from qnemu.physics.bell import BellState, bell_density, bell_vector, werner_state

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # qutip warns that matplotlib is missing
    from qnemu.broker.qutip_store import QutipStateStore

STATE_TOLERANCE = 1e-10
# qutip's fidelity takes √ of the rounding noise in zero eigenvalues: ~1e-8 for rank-deficient ρ.
MATRIX_FIDELITY_TOLERANCE = 1e-7
OWNERS = ("alice", "bob")
GATES = ("X", "Y", "Z", "H", "S", "T", "RX", "RY", "RZ")
MAX_LIVE_QUBITS = 7
OPERATIONS = {  # name -> probability of being drawn at each step
    "alloc": 0.08,
    "pair": 0.1,
    "gate": 0.2,
    "two": 0.14,
    "measure": 0.12,
    "bsm": 0.06,
    "noise": 0.12,
    "free": 0.06,
    "oracle": 0.07,
    "bad": 0.05,
}


def random_density(rng: np.random.Generator, dim: int, rank: int) -> np.ndarray:
    ginibre = rng.normal(size=(dim, rank)) + 1j * rng.normal(size=(dim, rank))
    rho = ginibre @ ginibre.conj().T
    return rho / np.trace(rho).real


def random_pair_state(rng: np.random.Generator) -> np.ndarray:
    kind = rng.integers(3)
    if kind == 0:
        return werner_state(rng.uniform(0.25, 1.0), BellState(int(rng.integers(4))))
    if kind == 1:
        return bell_density(BellState(int(rng.integers(4))))
    return random_density(rng, 4, int(rng.integers(1, 5)))


def random_memory(rng: np.random.Generator) -> tuple[float | None, float | None]:
    t1_s = None if rng.random() < 0.4 else rng.uniform(0.5, 5.0)
    if rng.random() < 0.3:
        return t1_s, None
    limit = 2 * t1_s if t1_s is not None else 5.0
    return t1_s, rng.uniform(0.1, limit)


def random_readout(rng: np.random.Generator) -> tuple[float, float]:
    if rng.random() < 0.5:
        return (0.0, 0.0)
    return float(rng.uniform(0, 0.2)), float(rng.uniform(0, 0.2))


def both(fast: StateStore, reference: QutipStateStore, method: str, *args, **kwargs):
    """Call both stores; their results (or refusal codes) must match."""
    outcomes = []
    for store in (fast, reference):
        try:
            outcomes.append(("ok", getattr(store, method)(*args, **kwargs)))
        except StoreError as refused:
            outcomes.append(("refused", refused.code))
    assert outcomes[0][0] == outcomes[1][0], (method, args, outcomes)
    if method == "fidelity" and outcomes[0][0] == "ok":
        tolerance = STATE_TOLERANCE if np.ndim(args[1]) == 1 else MATRIX_FIDELITY_TOLERANCE
        assert outcomes[0][1] == pytest.approx(outcomes[1][1], abs=tolerance)
    else:
        assert outcomes[0][1] == outcomes[1][1], (method, args, outcomes)
    return outcomes[0]


def assert_states_agree(fast, reference, qubits, now_s) -> None:
    rho_fast = fast.reduced_state(qubits, now_s)
    rho_reference = reference.reduced_state(qubits, now_s)
    assert np.allclose(rho_fast, rho_reference, atol=STATE_TOLERANCE, rtol=0), qubits


def run_sequence(seed: int, steps: int) -> dict[str, int]:
    rng = np.random.default_rng(1000 + seed)
    fast, reference = StateStore(seed=seed), QutipStateStore(seed=seed)
    live: dict[int, str] = {}  # handle -> owner
    freed: list[int] = []
    now_s = 0.0
    tally: dict[str, int] = {}

    def pick(count: int, same_owner: bool = True) -> list[int] | None:
        handles = list(live)
        if same_owner and count > 1:
            owner = OWNERS[rng.integers(2)]
            handles = [h for h in handles if live[h] == owner]
        if len(handles) < count:
            return None
        return [int(h) for h in rng.choice(handles, size=count, replace=False)]

    def owner_for(handles: list[int]) -> str:
        if rng.random() < 0.05:  # sometimes the wrong node asks
            return "mallory"
        return live[handles[0]]

    for _ in range(steps):
        now_s += float(rng.exponential(0.2))
        op_time = now_s - 0.3 if rng.random() < 0.1 else now_s  # out-of-order messages
        choice = str(rng.choice(list(OPERATIONS), p=list(OPERATIONS.values())))
        if len(live) >= MAX_LIVE_QUBITS and choice in ("alloc", "pair"):
            choice = "measure"
        tally[choice] = tally.get(choice, 0) + 1
        if choice == "alloc":
            owner = OWNERS[rng.integers(2)]
            t1_s, t2_s = random_memory(rng)
            _, handle = both(fast, reference, "alloc", owner, op_time, t1_s=t1_s, t2_s=t2_s)
            live[handle] = owner
        elif choice == "pair":
            owners = (OWNERS[rng.integers(2)], OWNERS[rng.integers(2)])
            (t1_a, t2_a), (t1_b, t2_b) = random_memory(rng), random_memory(rng)
            memory = {"t1_s": (t1_a, t1_b), "t2_s": (t2_a, t2_b)}
            state = random_pair_state(rng)
            _, pair = both(fast, reference, "create_pair", owners, state, op_time, **memory)
            live.update(zip(pair, owners, strict=True))
        elif choice in ("gate", "two") and (qubits := pick(1 if choice == "gate" else 2)):
            names = GATES if choice == "gate" else ("CNOT", "CZ")
            name = names[rng.integers(len(names))]
            options = {"depolar_prob": float(rng.uniform(0, 0.3)) if rng.random() < 0.3 else 0.0}
            if name[0] == "R":
                options["angle"] = float(rng.uniform(-2 * math.pi, 2 * math.pi))
            both(fast, reference, "gate", name, qubits, owner_for(qubits), op_time, **options)
        elif choice == "measure" and (qubits := pick(1)):
            basis = ("Z", "X", "Y")[rng.integers(3)]
            options = {"readout_error": random_readout(rng), "free": bool(rng.random() < 0.5)}
            args = (qubits[0], basis, owner_for(qubits), op_time)
            status, _ = both(fast, reference, "measure", *args, **options)
            if status == "ok" and options["free"]:
                live.pop(qubits[0])
                freed.append(qubits[0])
        elif choice == "bsm" and (qubits := pick(2)):
            options = {
                "depolar_prob": float(rng.uniform(0, 0.3)) if rng.random() < 0.5 else 0.0,
                "readout_error": random_readout(rng),
                "free": bool(rng.random() < 0.7),
            }
            args = (*qubits, owner_for(qubits), op_time)
            status, _ = both(fast, reference, "bell_measure", *args, **options)
            if status == "ok" and options["free"]:
                for handle in qubits:
                    live.pop(handle)
                    freed.append(handle)
        elif choice == "noise" and (qubits := pick(1 if rng.random() < 0.6 else 2)):
            channel = ("depolarise", "dephase", "amplitude_damp")[rng.integers(3)]
            args = (channel, qubits, float(rng.uniform(0, 1)), owner_for(qubits), op_time)
            both(fast, reference, "apply_noise", *args)
        elif choice == "free" and (qubits := pick(1)):
            status, _ = both(fast, reference, "free", qubits[0], owner_for(qubits), op_time)
            if status == "ok":
                live.pop(qubits[0])
                freed.append(qubits[0])
        elif choice == "oracle" and (qubits := pick(min(len(live), 2), same_owner=False)):
            dim = 1 << len(qubits)
            if rng.random() < 0.5:
                target = rng.normal(size=dim) + 1j * rng.normal(size=dim)
                target /= np.linalg.norm(target)
            else:
                target = random_density(rng, dim, dim)
            both(fast, reference, "fidelity", qubits, target, op_time)
        elif choice == "bad":
            handle = freed[rng.integers(len(freed))] if freed and rng.random() < 0.5 else 10**6
            both(fast, reference, "gate", "H", [handle], "alice", op_time)
            if qubits := pick(1):
                owner = live[qubits[0]]
                both(fast, reference, "gate", "RX", qubits, owner, op_time, angle=math.nan)
                both(fast, reference, "measure", qubits[0], "Q", owner, op_time)

        assert fast.qubit_count == reference.qubit_count == len(live)
        assert fast.group_sizes() == reference.group_sizes()
        if live and (qubits := pick(min(len(live), int(rng.integers(1, 4))), same_owner=False)):
            assert_states_agree(fast, reference, qubits, now_s)

    for qubit in list(live):  # every whole group, in the fast store's order
        assert_states_agree(fast, reference, list(fast.group_members(qubit)), now_s)
    return tally


@pytest.mark.parametrize("seed", range(24))
def test_random_sequences_agree(seed: int) -> None:
    tally = run_sequence(seed, steps=45)
    assert sum(tally.values()) == 45


def test_sequences_cover_every_operation() -> None:
    totals: dict[str, int] = {}
    for seed in range(24):
        for name, count in run_sequence(seed, steps=45).items():
            totals[name] = totals.get(name, 0) + count
    assert set(totals) == {
        "alloc",
        "pair",
        "gate",
        "two",
        "measure",
        "bsm",
        "noise",
        "free",
        "oracle",
        "bad",
    }
    assert min(totals.values()) >= 20


def test_bell_states_measure_alike_in_both_stores() -> None:
    fast, reference = StateStore(seed=5), QutipStateStore(seed=5)
    for bell_state in BellState:
        for store in (fast, reference):
            pair = store.create_pair(("n", "n"), bell_density(bell_state), 0.0)
            assert store.bell_measure(*pair, "n", 0.0) is bell_state
    pair = reference.create_pair(("n", "n"), werner_state(0.9), 0.0)
    assert reference.fidelity(pair, bell_vector(0), 0.0) == pytest.approx(0.9, abs=1e-12)


def test_a_large_group_takes_the_general_paths_alike() -> None:
    """Nine qubits: beyond the cached full operators and the cached index masks."""
    fast, reference = StateStore(seed=21), QutipStateStore(seed=21)
    qubits = []
    for index in range(9):
        memory = {"t1_s": 2.0, "t2_s": 1.0} if index % 2 else {"t2_s": 0.7}
        qubits.append(both(fast, reference, "alloc", "n", 0.0, **memory)[1])
    both(fast, reference, "gate", "H", qubits[:1], "n", 0.0)
    for index, (control, target) in enumerate(itertools.pairwise(qubits)):
        both(fast, reference, "gate", "CNOT", [control, target], "n", 0.01 * index)
    assert fast.group_sizes() == {9: 1}
    steps = [
        ("gate", "RX", [qubits[4]], "n", 0.2, {"angle": 0.3}),
        ("gate", "S", [qubits[6]], "n", 0.2, {}),
        ("gate", "CZ", [qubits[7], qubits[1]], "n", 0.3, {"depolar_prob": 0.1}),
        ("apply_noise", "depolarise", [qubits[2], qubits[6]], 0.2, "n", 0.4, {}),
        ("apply_noise", "amplitude_damp", [qubits[3]], 0.3, "n", 0.5, {}),
        ("measure", qubits[5], "X", "n", 0.6, {"readout_error": (0.05, 0.1)}),
        ("free", qubits[0], "n", 0.7, {}),
        ("bell_measure", qubits[1], qubits[8], "n", 0.8, {"free": False}),
    ]
    for method, *args, kwargs in steps:
        both(fast, reference, method, *args, **kwargs)
        live = qubits[1:] if method in ("free", "bell_measure") else qubits
        for qubit in live:
            assert_states_agree(fast, reference, list(fast.group_members(qubit)), 1.0)
