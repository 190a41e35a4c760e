"""Node extension: the node side of applications (`qnemu.app`).

One app at a time is attached to a node (over the node's ROUTER, like a client). The node
holds the app's qubits in its memory (they count against `qubits`), applies its gates
with the node's gate noise and measures with its readout error, carries classical
messages to the app on another node (fibre-delayed, node to node), and gets entangled
pairs from the link and network layers. The initiator's node tells the other end which
half is its app's (`app_epr_half`); the receiving node applies the Pauli-frame correction
(noise-free: a frame update) so that both apps hold Φ+.

A pair half the app was given that the link layer expires (the other half passed its
cutoff, or the pair was lost to a cut fibre: EXPIRE) is freed; the app's next operation
on it fails with `EXPIRE`.

Qubits an app holds are exempt from the link-layer cutoff: they are kept with
`stored_at = +inf`, so `now − stored_at` never exceeds `cutoff_s` (the cutoff discards
pairs nobody has claimed; an app decides for itself how long to keep what it owns).
"""

import asyncio
import inspect
import json
import logging
import math
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from qnemu.node.memory import HeldQubit, MemoryFull
from qnemu.physics.bell import BellState
from qnemu.runtime import Origin
from qnemu.wire import Envelope
from qnemu.wire.app import (
    AppAllocReply,
    AppAllocRequest,
    AppAttachReply,
    AppAttachRequest,
    AppDetachReply,
    AppDetachRequest,
    AppDoneReply,
    AppEprCreateRequest,
    AppEprHalf,
    AppEprRecvRequest,
    AppEprReply,
    AppFreeRequest,
    AppGateRequest,
    AppMeasureReply,
    AppMeasureRequest,
    AppMessage,
    AppOp,
    AppPair,
    AppRecvReply,
    AppRecvRequest,
    AppSendRequest,
    AppStateReply,
    AppStateRequest,
    AppSubroutineReply,
    AppSubroutineRequest,
)
from qnemu.wire.broker import AllocOp, FreeOp, GateOp, MeasureOp, ReducedStateOp
from qnemu.wire.common import ErrorReply
from qnemu.wire.control import (
    EntangleDone,
    EntangleErr,
    EntangleExpire,
    EntangleOk,
    EntangleRequest,
)

if TYPE_CHECKING:
    from qnemu.node.service import NodeService

__all__ = [
    "FRAME_GATES",
    "NodeApps",
    "corrected_outcome",
    "extension",
]

log = logging.getLogger(__name__)

SINGLE_QUBIT_GATES = frozenset({"X", "Y", "Z", "H", "S", "T", "RX", "RY", "RZ"})
TWO_QUBIT_GATES = frozenset({"CNOT", "CZ"})
ROTATIONS = frozenset({"RX", "RY", "RZ"})
LOCAL_OPS = frozenset(
    {
        AppSubroutineRequest.msg_type,
        AppGateRequest.msg_type,
        AppMeasureRequest.msg_type,
        AppFreeRequest.msg_type,
    }
)
# Requests with effects beyond the app's own qubits: they wait for the local ops before.
AFTER_LOCAL_OPS = frozenset(
    {AppSendRequest.msg_type, AppEprCreateRequest.msg_type, AppEprRecvRequest.msg_type}
)
BASES = ("Z", "X", "Y")

# The local gates on the receiving half that turn each Bell state into Φ+:
# Ψ+ = (1⊗X)Φ+, Φ− = (1⊗Z)Φ+, Ψ− = (1⊗XZ)Φ+ (up to a global phase).
FRAME_GATES: dict[BellState, tuple[str, ...]] = {
    BellState.PHI_PLUS: (),
    BellState.PSI_PLUS: ("X",),
    BellState.PHI_MINUS: ("Z",),
    BellState.PSI_MINUS: ("X", "Z"),
}


def corrected_outcome(bell_state: BellState, basis: str, outcome: int) -> int:
    """A receiving half's outcome as if its frame correction had come before the measurement:
    X (Ψ states) flips Z and Y outcomes, Z (minus states) flips X and Y outcomes."""
    flip = 0
    if bell_state & 1 and basis in ("Z", "Y"):
        flip ^= 1
    if bell_state & 2 and basis in ("X", "Y"):
        flip ^= 1
    return int(outcome) ^ flip


def extension(node: "NodeService", topology, plan) -> "NodeApps":
    """Every node can run an app."""
    return NodeApps(node)


class _Refused(Exception):
    """An app op the node will not run: `code` and `message` go back in an error reply."""

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass
class _EprWaiter:
    origin: Origin
    parent_id: str
    number: int
    type: str
    pairs: list[AppPair] = field(default_factory=list)


@dataclass
class _Session:
    app: str
    identity: bytes | None
    owned: set[int] = field(default_factory=set)
    # Pair halves the link layer expired (freed), with why: EXPIRE on the next use.
    expired: dict[int, str] = field(default_factory=dict)
    # Local operations (gates, measurements, frees) still at the broker. What the app
    # asks after them that others can see (a message, a pair) waits for them: the app
    # pipelines its requests, and a message must not overtake the gates before it.
    running_ops: list[asyncio.Future] = field(default_factory=list)


class NodeApps:
    """The app currently attached to this node: its qubits, inboxes and waiting receives."""

    def __init__(self, node: "NodeService"):
        self.node = node
        self.session: _Session | None = None
        self.messages: dict[str, deque[str]] = {}  # by sending node
        self.message_waiters: dict[str, deque[tuple[Origin, str]]] = {}
        self.halves: dict[str, deque[tuple[str, AppPair | str]]] = {}  # (type, pair or error)
        self.epr_waiters: dict[str, deque[_EprWaiter]] = {}
        self._frame_lock = asyncio.Lock()  # halves reach the app in the order they came
        session_handlers = {
            AppDetachRequest.msg_type: self._on_detach,
            AppAllocRequest.msg_type: self._on_alloc,
            AppGateRequest.msg_type: self._on_gate,
            AppMeasureRequest.msg_type: self._on_measure,
            AppFreeRequest.msg_type: self._on_free,
            AppSubroutineRequest.msg_type: self._on_subroutine,
            AppStateRequest.msg_type: self._on_state,
            AppSendRequest.msg_type: self._on_send,
            AppRecvRequest.msg_type: self._on_recv,
            AppEprCreateRequest.msg_type: self._on_epr_create,
            AppEprRecvRequest.msg_type: self._on_epr_recv,
        }
        node.handlers[AppAttachRequest.msg_type] = self._on_attach
        for msg_type, handler in session_handlers.items():
            node.handlers[msg_type] = self._in_session(handler)
        node.handlers[AppMessage.msg_type] = self._on_app_message
        node.handlers[AppEprHalf.msg_type] = self._on_epr_half
        node.expire_listeners.append(self._on_expired)

    async def run(self) -> None:
        """Nothing runs on its own: everything is a reaction to a message."""

    async def stop(self) -> None:
        self.session = None

    # ---- sessions --------------------------------------------------------------------

    def _in_session(self, handler):
        """Only the attached app may use app requests."""

        def checked(envelope: Envelope, origin: Origin):
            session = self.session
            if session is None or origin.identity != session.identity:
                message = f"no app of {envelope.header.sender!r} is attached to {self.node.name}"
                self._error(origin, envelope, "not_attached", message)
                return None
            if envelope.body.msg_type in LOCAL_OPS:
                return self._tracked(session, handler(envelope, origin, session))
            running = [op for op in session.running_ops if not op.done()]
            session.running_ops = running
            if running and envelope.body.msg_type in AFTER_LOCAL_OPS:
                return self._after(running, handler, envelope, origin, session)
            return handler(envelope, origin, session)

        return checked

    def _tracked(self, session: _Session, run: Awaitable[None]) -> Awaitable[None]:
        """Register local ops as running now (in message order), done when `run` is."""
        done = asyncio.get_running_loop().create_future()
        session.running_ops.append(done)

        async def tracked() -> None:
            try:
                await run
            finally:
                done.set_result(None)

        return tracked()

    async def _after(self, running, handler, envelope: Envelope, origin: Origin, session) -> None:
        await asyncio.gather(*running)
        result = handler(envelope, origin, session)
        if inspect.isawaitable(result):
            await result

    async def _on_attach(self, envelope: Envelope, origin: Origin) -> None:
        freed = await self._end_session()
        if freed:
            log.info("%s: an earlier app session's %d qubits freed", self.node.name, freed)
        self.session = _Session(envelope.body.app, origin.identity)
        reply = AppAttachReply(self.node.name, self.node.memory.capacity, self.node.clock.now())
        self.node.reply(origin, reply, parent_id=envelope.header.msg_id)

    async def _on_detach(self, envelope: Envelope, origin: Origin, session: _Session) -> None:
        freed = await self._end_session()
        self.node.reply(origin, AppDetachReply(freed), parent_id=envelope.header.msg_id)

    async def _end_session(self) -> int:
        """Free the session's qubits and forget every inbox and waiting receive."""
        owned = set(self.session.owned) if self.session is not None else set()
        self.session = None
        for queue in self.halves.values():
            for _, pair in queue:
                if isinstance(pair, AppPair) and pair.qubit is not None:
                    owned.add(pair.qubit)
        self.messages.clear()
        self.message_waiters.clear()
        self.halves.clear()
        self.epr_waiters.clear()
        held = [qubit for qubit in owned if qubit in self.node.memory.held]
        if held:
            await self.node.release_qubits(held)
        return len(held)

    def describe(self) -> dict[str, Any]:
        """Which app is attached and the qubits it owns (the MQTT `app` request)."""
        session = self.session
        if session is None:
            return {"attached": False, "app": None, "qubits": []}
        return {"attached": True, "app": session.app, "qubits": sorted(session.owned)}

    async def force_detach(self) -> int:
        """End the attached app's session from outside (the MQTT `app` request): its
        waiting receives are answered with an error, its qubits freed; returns how many."""
        message = f"the app was detached from {self.node.name} by a control program"
        for message_waiters in self.message_waiters.values():
            for origin, parent in message_waiters:
                self._error(origin, parent, "detached", message)
        for epr_waiters in self.epr_waiters.values():
            for waiter in epr_waiters:
                self._error(waiter.origin, waiter.parent_id, "detached", message)
        return await self._end_session()

    def _error(self, origin: Origin, envelope: Envelope | str, code: str, message: str) -> None:
        parent = envelope if isinstance(envelope, str) else envelope.header.msg_id
        self.node.reply(origin, ErrorReply(code, message), parent_id=parent)

    def _done(self, origin: Origin, envelope: Envelope) -> None:
        self.node.reply(origin, AppDoneReply(), parent_id=envelope.header.msg_id)

    def _claim(self, session: _Session, qubit: int) -> bool:
        """Make a held qubit the app's: out of the cutoff's reach and off any link request."""
        memory = self.node.memory
        if qubit not in memory.held:
            return False
        memory.release(qubit)
        memory.store(HeldQubit(qubit, math.inf), reserved=False)  # the slot just freed
        session.owned.add(qubit)
        return True

    def _unknown(self, session: _Session, qubits: list[int]) -> list[int]:
        held = self.node.memory.held
        return [q for q in qubits if q not in session.owned or q not in held]

    def _on_expired(self, qubits: list[int], message: str) -> None:
        """The link layer gave up these pair halves (and frees them): if they are the
        app's, its next operation on one of them fails with EXPIRE."""
        session = self.session
        if session is None:
            return
        for qubit in qubits:
            if qubit in session.owned:
                session.owned.discard(qubit)
                session.expired[qubit] = message

    # ---- local qubits ----------------------------------------------------------------

    async def _on_alloc(self, envelope: Envelope, origin: Origin, session: _Session) -> None:
        node = self.node
        if node.memory.free_slots <= 0:
            message = f"{node.name}: all {node.memory.capacity} memory qubits in use"
            self._error(origin, envelope, "NORES", message)
            return
        hardware = node.hardware
        (qubit,) = await node.broker_ops([AllocOp(t1_s=hardware.t1_s, t2_s=hardware.t2_s)])
        try:  # a pair may have taken the last slot while the broker answered
            node.memory.store(HeldQubit(qubit, math.inf), reserved=False)
        except MemoryFull as error:
            await node.broker_ops([FreeOp(qubit)])
            self._error(origin, envelope, "NORES", f"{node.name}: {error}")
            return
        if self.session is not session:  # detached meanwhile
            await node.release_qubits([qubit])
            return
        session.owned.add(qubit)
        node.reply(origin, AppAllocReply(qubit), parent_id=envelope.header.msg_id)

    async def _on_gate(self, envelope: Envelope, origin: Origin, session: _Session) -> None:
        request: AppGateRequest = envelope.body
        op = AppOp("gate", list(request.qubits), gate=request.gate, angle=request.angle)
        await self._run_ops(envelope, origin, session, [op], lambda _: AppDoneReply())

    async def _on_measure(self, envelope: Envelope, origin: Origin, session: _Session) -> None:
        request: AppMeasureRequest = envelope.body
        op = AppOp("measure", [request.qubit], basis=request.basis, inplace=request.inplace)
        reply = lambda outcomes: AppMeasureReply(outcomes[0])  # noqa: E731
        await self._run_ops(envelope, origin, session, [op], reply)

    async def _on_free(self, envelope: Envelope, origin: Origin, session: _Session) -> None:
        op = AppOp("free", list(envelope.body.qubits))
        await self._run_ops(envelope, origin, session, [op], lambda _: AppDoneReply())

    async def _on_subroutine(self, envelope: Envelope, origin: Origin, session: _Session) -> None:
        ops = list(envelope.body.ops)
        await self._run_ops(envelope, origin, session, ops, AppSubroutineReply)

    async def _run_ops(
        self,
        envelope: Envelope,
        origin: Origin,
        session: _Session,
        ops: list[AppOp],
        reply_of: Callable[[list[int]], Any],
    ) -> None:
        """Check every op against what the app holds, then run them as one broker batch.

        The broker request goes out before this coroutine first waits, so requests the
        app pipelines reach the broker in the order the app sent them."""
        holding = {q for q in session.owned if q in self.node.memory.held}
        try:
            used = {q for op in ops for q in op.qubits}
            expired = sorted(used & session.expired.keys())
            if expired:
                raise _Refused("EXPIRE", session.expired[expired[0]])
            batch = [
                broker_op
                for index, op in enumerate(ops)
                for broker_op in self._broker_ops(op, holding, index, len(ops))
            ]
        except _Refused as refused:
            self._error(origin, envelope, refused.code, refused.message)
            return
        consumed = [
            op.qubit
            for op in batch
            if isinstance(op, FreeOp) or (isinstance(op, MeasureOp) and op.free)
        ]
        session.owned.difference_update(consumed)
        self.node.forget_qubits(consumed)
        try:
            results = await self.node.broker_ops(batch)
        except RuntimeError as error:
            self._error(origin, envelope, "broker_refused", str(error))
            return
        outcomes = [
            int(result)
            for op, result in zip(batch, results, strict=True)
            if isinstance(op, MeasureOp)
        ]
        self.node.reply(origin, reply_of(outcomes), parent_id=envelope.header.msg_id)

    def _broker_ops(
        self, op: AppOp, holding: set[int], index: int, count: int
    ) -> list[GateOp | MeasureOp | FreeOp]:
        """The broker operations for one app op; `holding` loses what it measures or frees.
        Raises _Refused naming the op (by index, in a subroutine of several)."""
        where = f"op {index}: " if count > 1 else ""
        unknown = [q for q in op.qubits if q not in holding]
        if op.kind == "gate":
            gate = (op.gate or "").upper()
            if gate in SINGLE_QUBIT_GATES:
                arity, noise = 1, self.node.hardware.single_qubit_gate_depolar_prob
            elif gate in TWO_QUBIT_GATES:
                arity, noise = 2, self.node.hardware.two_qubit_gate_depolar_prob
            else:
                known = ", ".join(sorted(SINGLE_QUBIT_GATES | TWO_QUBIT_GATES))
                raise _Refused("bad_gate", f"{where}unknown gate {op.gate!r} ({known})")
            if len(op.qubits) != arity or len(set(op.qubits)) != arity:
                message = f"{where}{gate} acts on {arity} distinct qubit(s), got {op.qubits}"
                raise _Refused("bad_gate", message)
            if (gate in ROTATIONS) != (op.angle is not None):
                message = f"{where}{gate} {'needs' if gate in ROTATIONS else 'takes no'} angle"
                raise _Refused("bad_gate", message)
            if unknown:
                raise _Refused("unknown_qubit", where + self._not_held(unknown))
            return [GateOp(gate, list(op.qubits), angle=op.angle, depolar_prob=noise)]
        if op.kind == "measure":
            if op.basis not in BASES:
                message = f"{where}basis must be Z, X or Y, got {op.basis!r}"
                raise _Refused("bad_basis", message)
            if len(op.qubits) != 1:
                raise _Refused("bad_qubits", f"{where}measure takes one qubit, got {op.qubits}")
            if unknown:
                raise _Refused("unknown_qubit", where + self._not_held(unknown))
            readout = tuple(self.node.hardware.readout_error)
            if not op.inplace:
                holding.discard(op.qubits[0])
            return [MeasureOp(op.qubits[0], op.basis, readout_error=readout, free=not op.inplace)]
        if op.kind == "free":
            if unknown or len(set(op.qubits)) != len(op.qubits):
                raise _Refused("unknown_qubit", where + self._not_held(unknown or op.qubits))
            holding.difference_update(op.qubits)
            return [FreeOp(qubit) for qubit in op.qubits]
        raise _Refused("bad_op", f"{where}kind must be gate, measure or free, got {op.kind!r}")

    def _not_held(self, qubits: list[int]) -> str:
        return f"the app on {self.node.name} holds no qubit {', '.join(map(str, qubits))}"

    async def _on_state(self, envelope: Envelope, origin: Origin, session: _Session) -> None:
        qubits = list(envelope.body.qubits)
        if not qubits or len(set(qubits)) != len(qubits):
            self._error(origin, envelope, "bad_qubits", f"distinct qubits needed, got {qubits}")
            return
        try:  # an oracle: any node's qubits, as the emulator sees them
            ((real, imag),) = await self.node.broker_ops([ReducedStateOp(qubits)])
        except RuntimeError as error:
            self._error(origin, envelope, "unknown_qubit", str(error))
            return
        self.node.reply(origin, AppStateReply(real, imag), parent_id=envelope.header.msg_id)

    # ---- classical messages ----------------------------------------------------------

    def _on_send(self, envelope: Envelope, origin: Origin, session: _Session) -> None:
        request: AppSendRequest = envelope.body
        try:
            json.loads(request.payload)
        except ValueError:
            self._error(origin, envelope, "bad_payload", "the payload must be JSON text")
            return
        if request.remote_node_id == self.node.name:
            self._deliver_message(self.node.name, request.payload)
        else:
            try:
                self.node.send(request.remote_node_id, AppMessage(request.payload))
            except ValueError:
                message = f"{self.node.name} cannot reach node {request.remote_node_id!r}"
                self._error(origin, envelope, "unknown_node", message)
                return
        self._done(origin, envelope)

    def _on_recv(self, envelope: Envelope, origin: Origin, session: _Session) -> None:
        remote = envelope.body.remote_node_id
        self.message_waiters.setdefault(remote, deque()).append((origin, envelope.header.msg_id))
        self._serve_messages(remote)

    def _on_app_message(self, envelope: Envelope, origin: Origin) -> None:
        self._deliver_message(envelope.header.sender, envelope.body.payload)

    def _deliver_message(self, sender: str, payload: str) -> None:
        self.messages.setdefault(sender, deque()).append(payload)
        self._serve_messages(sender)

    def _serve_messages(self, remote: str) -> None:
        inbox = self.messages.get(remote)
        waiters = self.message_waiters.get(remote)
        while inbox and waiters:
            origin, parent = waiters.popleft()
            self.node.reply(origin, AppRecvReply(inbox.popleft()), parent_id=parent)

    # ---- entangled pairs -------------------------------------------------------------

    def _on_epr_create(self, envelope: Envelope, origin: Origin, session: _Session) -> None:
        request: AppEprCreateRequest = envelope.body
        if request.number < 1:
            message = f"number must be >= 1, got {request.number}"
            self._error(origin, envelope, "UNSUPP", message)
            return
        sink = _AppPairSink(self, session, request.type, origin, envelope.header.msg_id)
        self.node.submit(
            EntangleRequest(
                remote_node_id=request.remote_node_id,
                number=request.number,
                minimum_fidelity=request.minimum_fidelity,
                max_time_s=request.max_time_s,
                type=request.type,
                basis=request.basis,
            ),
            sink,
        )

    def _on_epr_recv(self, envelope: Envelope, origin: Origin, session: _Session) -> None:
        request: AppEprRecvRequest = envelope.body
        if request.number < 1 or request.type not in ("keep", "measure"):
            message = f"number >= 1 and type keep or measure, got {request.number}, {request.type}"
            self._error(origin, envelope, "UNSUPP", message)
            return
        waiter = _EprWaiter(origin, envelope.header.msg_id, request.number, request.type)
        self.epr_waiters.setdefault(request.remote_node_id, deque()).append(waiter)
        self._serve_halves(request.remote_node_id)

    async def _on_epr_half(self, envelope: Envelope, origin: Origin) -> None:
        body: AppEprHalf = envelope.body
        sender = envelope.header.sender
        pair = body.pair
        if sender not in self.node.directory and sender not in self.node.neighbours:
            message = f"{sender!r} is not a node of this network: it cannot hand over pairs"
            self._error(origin, envelope, "not_a_node", message)
            return
        try:
            bell_state = BellState.from_label(pair.bell_state)
        except ValueError as error:
            self._error(origin, envelope, "bad_bell_state", str(error))
            return
        async with self._frame_lock:
            session = self.session
            entry: AppPair | str
            if body.type == "measure":
                outcome = corrected_outcome(bell_state, pair.basis or "Z", pair.outcome or 0)
                entry = replace(pair, outcome=outcome)
            elif session is None or pair.qubit is None or not self._claim(session, pair.qubit):
                if session is None and pair.qubit is not None:
                    await self.node.release_qubits([pair.qubit])
                entry = (
                    f"{self.node.name} no longer held its half of pair {pair.create_id}:"
                    f"{pair.sequence_number} from {sender} (expired: memory cutoff_s passed)"
                )
            else:
                gates = FRAME_GATES[bell_state]
                if gates:  # a frame update: noise-free
                    await self.node.broker_ops([GateOp(g, [pair.qubit]) for g in gates])
                entry = pair
            self.halves.setdefault(sender, deque()).append((body.type, entry))
            self._serve_halves(sender)

    def _serve_halves(self, remote: str) -> None:
        queue = self.halves.get(remote)
        waiters = self.epr_waiters.get(remote)
        while queue and waiters:
            waiter = waiters[0]
            kind, entry = queue[0]
            if isinstance(entry, str) or kind != waiter.type:
                queue.popleft()
                waiters.popleft()
                message = (
                    entry
                    if isinstance(entry, str)
                    else (f"{remote} created {kind} pairs; recv_{waiter.type} cannot take them")
                )
                code = "EXPIRE" if isinstance(entry, str) else "mismatch"
                self._error(waiter.origin, waiter.parent_id, code, message)
                continue
            queue.popleft()
            waiter.pairs.append(entry)
            if len(waiter.pairs) == waiter.number:
                waiters.popleft()
                reply = AppEprReply(waiter.pairs)
                self.node.reply(waiter.origin, reply, parent_id=waiter.parent_id)


class _AppPairSink:
    """Where the initiator's link or network layer reports an app's request."""

    def __init__(self, apps: NodeApps, session: _Session, type: str, origin: Origin, parent: str):
        self.apps = apps
        self.session = session
        self.type = type
        self.origin = origin
        self.parent_id = parent
        self.pairs: list[AppPair] = []

    def ok(self, pair: EntangleOk) -> None:
        node = self.apps.node
        common: dict[str, Any] = {
            "create_id": pair.create_id,
            "sequence_number": pair.sequence_number,
            "bell_state": pair.bell_state,
            "path": pair.path,
        }
        if self.type == "keep" and pair.qubits is not None:
            mine, theirs = pair.qubits
            if self.apps.session is self.session:
                self.apps._claim(self.session, mine)
            else:  # the app went away: nobody will use this half
                node.spawn(node.release_qubits([mine]))
            self.pairs.append(AppPair(qubit=mine, fidelity=pair.fidelity, **common))
            there = AppPair(qubit=theirs, **common)
        else:
            outcomes, bases = pair.outcomes or (0, 0), pair.bases or ("Z", "Z")
            self.pairs.append(
                AppPair(outcome=outcomes[0], basis=bases[0], fidelity=pair.fidelity, **common)
            )
            there = AppPair(outcome=outcomes[1], basis=bases[1], **common)
        node.send(pair.dst, AppEprHalf(self.type, there))

    def err(self, error: EntangleErr) -> None:
        mine = [p.qubit for p in self.pairs if p.qubit is not None]
        if mine:  # the app never learns these handles: let them go
            self.session.owned.difference_update(mine)
            self.apps.node.spawn(self.apps.node.release_qubits(mine))
        message = f"{error.message} ({error.delivered} delivered)"
        self.apps._error(self.origin, self.parent_id, error.error_code, message)

    def done(self, done: EntangleDone) -> None:
        self.apps.node.reply(self.origin, AppEprReply(self.pairs), parent_id=self.parent_id)

    def expire(self, expire: EntangleExpire) -> None:
        """Nothing more to do: `NodeApps._on_expired` (the node's expire listener) has
        marked the app's halves, so its next operation on one fails with EXPIRE."""
