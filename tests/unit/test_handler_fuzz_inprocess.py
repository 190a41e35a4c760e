"""The broker's ops handler, fuzzed in process: it never raises, and the store stays a state.

BrokerService.execute gets hypothesis-built OpsRequest bodies (well typed, odd values:
unknown and freed handles, other owners' qubits, bad gates, probabilities outside [0, 1],
huge times) against a real StateStore; after every batch each live qubit is in exactly
one group and each group's matrix is Hermitian, trace 1 and positive (within 1e-9).
"""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from qnemu.broker.server import BrokerService
from qnemu.broker.store import StateStore
from qnemu.physics.bell import BellState, bell_density
from qnemu.runtime import EmulatedClock, ServiceAddress
from qnemu.wire import decode, encode
from qnemu.wire.broker import (
    AllocOp,
    BellMeasureOp,
    CreatePairOp,
    FidelityOp,
    FreeOp,
    GateOp,
    MeasureOp,
    NoiseOp,
    OpsReply,
    OpsRequest,
    ReducedStateOp,
)

TOLERANCE = 1e-9
OWNERS = ["alice", "bob", "station-alice-bob", ""]
HANDLES = st.integers(-2, 12) | st.sampled_from([2**31, 2**63 - 1, -(2**63)])
QUBITS = st.lists(HANDLES, max_size=4)
PROBABILITIES = st.sampled_from([0.0, 0.1, 0.5, 1.0, -0.1, 1.5, 1e300])
TIMES = st.sampled_from([None, 1e-9, 0.5, 1e300, -1.0, 0.0])
ANGLES = st.sampled_from([None, 0.0, np.pi / 3, -1e300, 1e308])
GATES = st.sampled_from(["X", "H", "s", "RX", "CNOT", "cz", "", "SWAP", "\x00"])
BASES = st.sampled_from(["Z", "x", "Y", "W", ""])
STATES = st.sampled_from(
    [
        bell_density(BellState.PSI_MINUS).astype("<c16").tobytes(),
        (np.eye(4) / 4).astype("<c16").tobytes(),
        np.diag([1.0, 1.0, -1.0, 0.0]).astype("<c16").tobytes(),  # trace 1, not positive
        np.full((4, 4), np.nan).astype("<c16").tobytes(),
        b"\x00" * 256,
        b"\x00" * 255,
    ]
)
READOUT = st.tuples(PROBABILITIES, PROBABILITIES)
OPS = st.one_of(
    st.builds(AllocOp, t1_s=TIMES, t2_s=TIMES),
    st.builds(FreeOp, qubit=HANDLES),
    st.builds(GateOp, gate=GATES, qubits=QUBITS, angle=ANGLES, depolar_prob=PROBABILITIES),
    st.builds(MeasureOp, qubit=HANDLES, basis=BASES, readout_error=READOUT, free=st.booleans()),
    st.builds(
        BellMeasureOp,
        qubits=st.tuples(HANDLES, HANDLES),
        depolar_prob=PROBABILITIES,
        readout_error=READOUT,
        free=st.booleans(),
    ),
    st.builds(
        CreatePairOp,
        owners=st.tuples(st.sampled_from(OWNERS), st.sampled_from(OWNERS)),
        state=STATES,
        created_at=TIMES,
        t1_s=st.tuples(TIMES, TIMES),
        t2_s=st.tuples(TIMES, TIMES),
    ),
    st.builds(
        NoiseOp,
        channel=st.sampled_from(["depolarise", "dephase", "amplitude_damp", "bitflip"]),
        qubits=QUBITS,
        parameter=PROBABILITIES,
    ),
    st.builds(ReducedStateOp, qubits=QUBITS),
    st.builds(
        FidelityOp,
        qubits=QUBITS,
        target_real=st.lists(st.sampled_from([0.0, 1.0, 0.5, -1e300]), max_size=5),
        target_imag=st.lists(st.sampled_from([0.0, 1.0]), max_size=5),
    ),
)
BATCHES = st.lists(
    st.tuples(
        st.sampled_from(OWNERS[:3]),  # the sender of the batch
        st.sampled_from([0.0, 1.0, 2.0, 1e6]),  # its emulated send time
        st.lists(OPS, min_size=1, max_size=6),
    ),
    min_size=1,
    max_size=8,
)


def new_broker() -> BrokerService:
    clock = EmulatedClock(0.0, 1.0)
    address = ServiceAddress("inproc://fuzz-broker")
    return BrokerService(
        "broker",
        address,
        clock,
        store=StateStore(seed=7),
        pair_creators={"station-alice-bob"},
    )


def assert_store_is_a_state(store: StateStore) -> None:
    members = [handle for group in store._groups for handle in group.qubits]
    assert sorted(members) == sorted(store._qubits), "a live qubit in no group or in two"
    for handle, record in store._qubits.items():
        assert record.group in store._groups and handle in record.group.qubits
    for group in store._groups:
        rho = group.rho
        assert rho.shape == (1 << len(group.qubits),) * 2
        assert np.all(np.isfinite(rho))
        assert np.max(np.abs(rho - rho.conj().T)) <= TOLERANCE
        assert abs(np.trace(rho).real - 1.0) <= TOLERANCE
        assert np.linalg.eigvalsh(rho)[0] >= -TOLERANCE


@settings(max_examples=150, deadline=None, derandomize=True, database=None)
@given(BATCHES)
def test_fuzzed_ops_batches_never_raise_and_leave_a_valid_state(batches):
    broker = new_broker()
    try:
        for owner, now_s, ops in batches:
            reply = broker.execute(OpsRequest(ops), owner, now_s)
            assert isinstance(reply, OpsReply)
            # An error names the op that stopped the batch; results are those before it.
            if reply.error is not None:
                assert reply.error.index == len(reply.results) < len(ops)
            else:
                assert len(reply.results) == len(ops)
            assert_store_is_a_state(broker.store)
            # The reply goes on the wire: it must encode and decode.
            assert type(decode(encode(reply, sender="broker", sent_at=now_s)).body) is OpsReply
    finally:
        broker.close()


def test_a_refused_op_changes_nothing_and_stops_the_batch():
    broker = new_broker()
    try:
        (qubit,) = broker.execute(OpsRequest([AllocOp()]), "alice", 0.0).results
        ops = [GateOp("H", [qubit]), GateOp("CNOT", [qubit, qubit]), FreeOp(qubit)]
        reply = broker.execute(OpsRequest(ops), "alice", 1.0)
        assert reply.results == [None]
        assert reply.error.index == 1 and reply.error.code == "duplicate_qubit"
        assert broker.store.qubit_count == 1  # the free after the refused op never ran
        rho = broker.store.reduced_state([qubit], 1.0)
        assert np.allclose(rho, np.full((2, 2), 0.5), atol=1e-12)  # H|0><0|H = |+><+|
        stolen = broker.execute(OpsRequest([FreeOp(qubit)]), "bob", 1.0)
        assert stolen.error.code == "not_owner" and broker.store.qubit_count == 1
    finally:
        broker.close()
