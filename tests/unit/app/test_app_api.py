"""The app-side API against a fake node: which requests it sends, what it makes of replies."""

import asyncio
import json
import math

import numpy as np
import pytest

from qnemu.app.api import AppError, NodeHandle, Qubit
from qnemu.wire.app import (
    AppAllocReply,
    AppAllocRequest,
    AppDoneReply,
    AppEprCreateRequest,
    AppEprRecvRequest,
    AppEprReply,
    AppMeasureReply,
    AppMeasureRequest,
    AppPair,
    AppRecvReply,
    AppRecvRequest,
    AppSendRequest,
    AppStateReply,
    AppStateRequest,
    AppSubroutineReply,
    AppSubroutineRequest,
)


class FakeNode:
    """Answers app requests from a script and records what it was asked."""

    def __init__(self) -> None:
        self.requests: list = []
        self.next_qubit = 100
        self.inbox: list[str] = []
        self.pairs: list[AppPair] = []
        self.state: np.ndarray = np.eye(2) / 2
        self.refuse_gate: str | None = None

    def ops(self, kind: str) -> list:
        return [
            op
            for body in self.requests
            if isinstance(body, AppSubroutineRequest)
            for op in body.ops
            if op.kind == kind
        ]

    async def submit(self, body, *, timeout_s=None):
        future = asyncio.get_running_loop().create_future()
        try:
            future.set_result(await self.call(body))
        except AppError as error:
            future.set_exception(error)
        return future

    async def call(self, body, *, timeout_s=None):
        self.requests.append(body)
        if isinstance(body, AppSubroutineRequest):
            refused = [op for op in body.ops if op.gate and op.gate == self.refuse_gate]
            if refused:
                raise AppError("bad_gate", f"no {self.refuse_gate}")
            return AppSubroutineReply([1 for op in body.ops if op.kind == "measure"])
        if isinstance(body, AppAllocRequest):
            self.next_qubit += 1
            return AppAllocReply(self.next_qubit)
        if isinstance(body, AppMeasureRequest):
            return AppMeasureReply(1)
        if isinstance(body, AppStateRequest):
            return AppStateReply(self.state.real.ravel().tolist(), self.state.imag.ravel().tolist())
        if isinstance(body, AppRecvRequest):
            return AppRecvReply(self.inbox.pop(0))
        if isinstance(body, AppEprCreateRequest | AppEprRecvRequest):
            return AppEprReply(self.pairs[: body.number])
        return AppDoneReply()


@pytest.fixture
def fake() -> FakeNode:
    return FakeNode()


@pytest.fixture
def node(fake) -> NodeHandle:
    return NodeHandle("alice", fake, memory_qubits=4)


async def test_gates_become_named_gate_requests_on_handles(node, fake):
    q, r = await node.qubit(), await node.qubit()
    await q.H()
    await q.X()
    await q.cnot(r)
    await r.cphase(q)
    await q.rot_z(0.3)
    await node.flush()
    gates = [(op.gate, op.qubits, op.angle) for op in fake.ops("gate")]
    assert gates == [
        ("H", [101], None),
        ("X", [101], None),
        ("CNOT", [101, 102], None),
        ("CZ", [102, 101], None),
        ("RZ", [101], 0.3),
    ]


async def test_rotations_take_netqasm_n_and_d(node, fake):
    q = await node.qubit()
    await q.rot_x(n=3, d=2)  # 3π/4
    await q.rot_y(angle=-1.5)
    await node.flush()
    angles = [op.angle for op in fake.ops("gate")]
    assert angles == pytest.approx([3 * math.pi / 4, -1.5], abs=1e-15)


async def test_a_measured_qubit_refuses_further_use_without_asking_the_node(node, fake):
    q = await node.qubit()
    assert await q.measure("X") == 1
    asked = len(fake.requests)
    with pytest.raises(AppError, match="released"):
        await q.H()
    with pytest.raises(AppError, match="released"):
        await q.free()
    await node.flush()
    assert len(fake.requests) == asked
    (measure,) = fake.ops("measure")
    assert (measure.qubits, measure.basis, measure.inplace) == ([101], "X", False)


async def test_inplace_measurement_keeps_the_qubit_and_free_releases_it(node, fake):
    q = await node.qubit()
    await q.measure(inplace=True)
    await q.H()
    await q.free()
    await node.flush()
    last = fake.requests[-1]
    assert isinstance(last, AppSubroutineRequest)
    assert [(op.kind, op.qubits) for op in last.ops] == [("gate", [101]), ("free", [101])]
    assert not q.active


async def test_gates_and_frees_wait_for_the_next_measurement_and_go_with_it(node, fake):
    q, r = await node.qubit(), await node.qubit()
    asked = len(fake.requests)
    await q.H()
    await q.cnot(r)
    await r.free()
    assert len(fake.requests) == asked  # nothing sent yet
    assert await q.measure() == 1
    assert len(fake.requests) == asked + 1  # one request for all four
    (subroutine,) = fake.requests[asked:]
    assert [op.kind for op in subroutine.ops] == ["gate", "gate", "free", "measure"]


async def test_deferred_ops_go_before_any_other_request(node, fake):
    q = await node.qubit()
    await q.X()
    await node.socket("bob").send("after the gate")
    kinds = [type(body).__name__ for body in fake.requests[-2:]]
    assert kinds == ["AppSubroutineRequest", "AppSendRequest"]


async def test_a_refused_deferred_gate_raises_at_the_next_request_or_flush(node, fake):
    fake.refuse_gate = "T"
    q = await node.qubit()
    await q.T()  # deferred: no error yet
    with pytest.raises(AppError, match="no T"):
        await node.qubit()
    await q.T()
    with pytest.raises(AppError, match="no T"):
        await node.flush()
    await q.T()
    with pytest.raises(AppError, match="no T"):
        await q.measure()


async def test_a_qubit_of_another_node_cannot_be_a_gate_partner(node, fake):
    q = await node.qubit()
    other = Qubit(NodeHandle("bob", fake), 7)
    with pytest.raises(AppError, match="not on alice"):
        await q.cnot(other)


async def test_state_is_the_complex_matrix_the_oracle_returns(node, fake):
    plus_i = np.array([1, 1j]) / math.sqrt(2)
    fake.state = np.outer(plus_i, plus_i.conj())
    q = await node.qubit()
    rho = await q.state()
    assert rho.shape == (2, 2)
    np.testing.assert_allclose(rho, fake.state, atol=1e-15)
    bell = np.zeros((4, 4))
    bell[0, 0] = bell[0, 3] = bell[3, 0] = bell[3, 3] = 0.5
    fake.state = bell
    joint = await node.state(q, 55)
    assert joint.shape == (4, 4)
    assert fake.requests[-1].qubits == [101, 55]


async def test_socket_sends_json_and_receives_values(node, fake):
    sock = node.socket("bob")
    await sock.send([1, np.int64(0), {"basis": "X"}, np.array([0.5, 1.0])])
    sent = fake.requests[-1]
    assert isinstance(sent, AppSendRequest) and sent.remote_node_id == "bob"
    assert json.loads(sent.payload) == [1, 0, {"basis": "X"}, [0.5, 1.0]]
    fake.inbox.append('{"m": [0, 1]}')
    assert await sock.recv() == {"m": [0, 1]}
    with pytest.raises(TypeError, match="JSON values only"):
        await sock.send(object())


async def test_epr_socket_returns_qubits_and_results_with_their_pair(node, fake):
    fake.pairs = [
        AppPair(3, 0, "psi+", qubit=41, fidelity=0.97, path=["alice", "r", "bob"]),
        AppPair(3, 1, "phi+", qubit=42, fidelity=0.96),
    ]
    epr = node.epr_socket("bob")
    first, second = await epr.create_keep(2, minimum_fidelity=0.9)
    request = fake.requests[-1]
    assert (request.remote_node_id, request.number, request.type) == ("bob", 2, "keep")
    assert request.minimum_fidelity == 0.9
    assert (first.handle, second.handle) == (41, 42)
    assert first.pair.path == ("alice", "r", "bob") and second.pair.path is None
    assert first.pair.fidelity == 0.97 and first.pair.remote_node_id == "bob"
    fake.pairs = [AppPair(5, 0, "phi-", outcome=1, basis="X")]
    (result,) = await epr.recv_measure(1)
    assert (result.outcome, result.basis, result.pair.bell_state) == (1, "X", "phi-")
    assert fake.requests[-1].type == "measure"
