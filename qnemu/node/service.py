"""The node process: memory, link layer towards each neighbour, control for clients.

Flow of one CREATE (initiator I, peer P, station S between them):
  client → I  entangle_request
  I → P       create_request          P checks and answers create_accept / create_reject
  I, P → S    generate_credit          each end grants memory slots ready for a pair
  S → I, P    herald                   after the fibre delay from S to each node
  P → I       pair_report             P's half (qubit handle, or outcome and basis)
  I → client  entangle_ok per pair, then entangle_done (or entangle_err)
  I → P, S    request_end, generate_cancel

EXPIRE (`expiry.py`): a kept half lost at either end (cutoff; a cut fibre while it waited
for the peer's report) is freed, the other end is told (`pair_expire`, held until a cut
fibre is back) and frees its half, and the initiator tells the request's owner
(`entangle_expire`), during the request or after it.
"""

import asyncio
import logging
import math
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from prometheus_client import Counter, Gauge, Histogram

from qnemu.node.expiry import HeldNotices, KeptPair, KeptPairs, peer_reason
from qnemu.node.memory import HeldQubit, QuantumMemory
from qnemu.node.network import EndToEndRequest, NetworkLayer
from qnemu.node.requests import LinkRequest, LocalHalf, request_problem
from qnemu.node.routing import Routing
from qnemu.node.sinks import ClientSink, WorkloadSink
from qnemu.physics.bell import BellState, bell_vector
from qnemu.runtime import EmulatedClock, Origin, Service, ServiceAddress
from qnemu.topology.models import NodeConfig, WorkloadConfig
from qnemu.wire import Envelope
from qnemu.wire.broker import FidelityOp, FreeOp, MeasureOp, OpsReply, OpsRequest
from qnemu.wire.common import ErrorReply, PingRequest
from qnemu.wire.control import (
    EntangleDone,
    EntangleErr,
    EntangleExpire,
    EntangleOk,
    EntangleRequest,
    FreeReply,
    FreeRequest,
    MeasureReply,
    MeasureRequest,
)
from qnemu.wire.link import (
    CreateAccept,
    CreateReject,
    CreateRequest,
    GenerateCancel,
    GenerateCredit,
    Herald,
    PairExpire,
    PairReport,
    ReportedHalf,
    RequestEnd,
)
from qnemu.wire.network import (
    EndHalf,
    PathEnd,
    PathFailed,
    PathRequest,
    PurifyOutcome,
    PurifyResult,
    PurifyStep,
    SegmentBroken,
    SwapReport,
)

__all__ = ["Neighbour", "NodeExtension", "NodeService"]

log = logging.getLogger(__name__)
FIDELITY_BUCKETS = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.925, 0.95, 0.975, 0.99, 0.999, 1.0)


@dataclass
class Neighbour:
    """What a node knows of one link: the peer, the station and the best fidelity."""

    peer: str
    station: str
    link_name: str
    fidelity: float
    # Bell-diagonal weights (Φ+, Ψ−, Ψ+, Φ−) of a pair once brought to Φ+: what
    # purification works from. Default: a Werner state of that fidelity.
    coefficients: tuple[float, float, float, float] | None = None

    def __post_init__(self) -> None:
        if self.coefficients is None:
            other = (1.0 - self.fidelity) / 3.0
            self.coefficients = (self.fidelity, other, other, other)


class NodeService(Service):
    """A quantum network node: holds qubit handles and runs the link layer."""

    role = "node"

    def __init__(
        self,
        name: str,
        address: ServiceAddress,
        clock: EmulatedClock,
        *,
        hardware: NodeConfig,
        neighbours: dict[str, Neighbour],
        workloads: list[WorkloadConfig] | None = None,
        routing: Routing | None = None,
        broker: str = "broker",
        seed: int | None = None,
        **kwargs: Any,
    ):
        super().__init__(name, address, clock, **kwargs)
        self.hardware = hardware
        self.neighbours = neighbours
        self.workloads = [w for w in workloads or [] if w.src == name]
        self.broker = broker
        self.rng = np.random.default_rng(seed)
        self.memory = QuantumMemory(hardware.qubits)
        self.requests: dict[tuple[str, int], LinkRequest] = {}
        self.routing = routing
        self.network_layer = NetworkLayer(self)  # (self.network is the network's name)
        self.extensions: list[NodeExtension] = []  # added by add_extension() before run()
        self.run_dir: Path | None = None  # where extensions keep files (key store, KME URL)
        # (request, sequence_number, half) for every half this node measures in measure
        # mode, at either end of the link, before the peer reports it (QKD's raw key).
        self.half_measured_listeners: list[Callable[[LinkRequest, int, LocalHalf], None]] = []
        self.fault_listeners: list[Callable[[], None]] = []  # called after each fault applied
        # (qubits, message) for kept halves that expired here (apps: EXPIRE on next use).
        self.expire_listeners: list[Callable[[list[int], str], None]] = []
        self.kept = KeptPairs()  # kept halves handed over: whom to tell when one is lost
        self.held_notices = HeldNotices()  # EXPIREs for peers behind a cut fibre
        self._next_create_id = 1
        self._link_stats = {
            peer: {"delivered": 0, "heralded": 0, "fidelity_sum": 0.0} for peer in neighbours
        }
        self.handlers.update(
            {
                EntangleRequest.msg_type: self._on_entangle,
                CreateRequest.msg_type: self._on_create_request,
                CreateAccept.msg_type: self._on_create_accept,
                CreateReject.msg_type: self._on_create_reject,
                RequestEnd.msg_type: self._on_request_end,
                PairReport.msg_type: self._on_pair_report,
                PairExpire.msg_type: self._on_pair_expire,
                Herald.msg_type: self._on_herald,
                MeasureRequest.msg_type: self._on_measure,
                FreeRequest.msg_type: self._on_free,
                FreeReply.msg_type: lambda envelope, origin: None,
                PathRequest.msg_type: self._on_path_request,
                PathEnd.msg_type: lambda e, o: self.network_layer.on_path_end(e.body),
                SwapReport.msg_type: self._on_swap_report,
                SegmentBroken.msg_type: lambda e, o: self.network_layer.on_segment_broken(e.body),
                EndHalf.msg_type: lambda e, o: self.network_layer.on_end_half(e.body),
                PathFailed.msg_type: lambda e, o: self.network_layer.on_path_failed(e.body),
                PurifyStep.msg_type: lambda e, o: self.network_layer.on_purify_step(
                    e.body, e.header.sender
                ),
                PurifyOutcome.msg_type: lambda e, o: self.network_layer.on_purify_outcome(
                    e.body, e.header.sender
                ),
                PurifyResult.msg_type: lambda e, o: self.network_layer.on_purify_result(
                    e.body, e.header.sender
                ),
            }
        )
        self._init_metrics()

    def _init_metrics(self) -> None:
        registry = self.registry
        self.m_delivered = Counter(
            "qnemu_pairs_delivered",
            "Pairs delivered to applications (OKs at the initiating node), by peer and type.",
            ["peer", "type"],
            registry=registry,
        )
        self.m_heralded = Counter(
            "qnemu_pairs_heralded",
            "Heralds received for this node's halves of pairs, by peer.",
            ["peer"],
            registry=registry,
        )
        self.m_fidelity = Histogram(
            "qnemu_pair_fidelity",
            "Oracle fidelity of delivered pairs to their heralded Bell state, by peer.",
            ["peer"],
            buckets=FIDELITY_BUCKETS,
            registry=registry,
        )
        self.m_requests = Counter(
            "qnemu_link_requests",
            "Link-layer requests ended at the initiator, by peer and result.",
            ["peer", "result"],
            registry=registry,
        )
        self.m_swaps = Counter(
            "qnemu_swaps",
            "Entanglement swaps (Bell-state measurements) this node did as a repeater.",
            registry=registry,
        )
        self.m_purification = Counter(
            "qnemu_purification_rounds",
            "DEJMPS rounds decided at this (source) node, by result (success, failure).",
            ["peer", "result"],
            registry=registry,
        )
        self.m_end_to_end = Counter(
            "qnemu_end_to_end_pairs_delivered",
            "End-to-end pairs (through repeaters) delivered at this source node, by destination.",
            ["dst", "type"],
            registry=registry,
        )
        self.m_expired = Counter(
            "qnemu_memory_qubits_expired",
            "Held qubits discarded: past the cutoff time, or lost with a cut fibre (EXPIRE).",
            registry=registry,
        )
        self.m_pairs_expired = Counter(
            "qnemu_pairs_expired",
            "Link-layer pairs whose half here was given up (EXPIRE), by peer and reason "
            "(cut, cutoff, peer_cut, peer_cutoff).",
            ["peer", "reason"],
            registry=registry,
        )
        Gauge("qnemu_memory_qubits", "Qubit slots in this node's memory.", registry=registry).set(
            self.memory.capacity
        )
        in_use = Gauge(
            "qnemu_memory_qubits_in_use",
            "Memory slots holding a qubit or reserved for a pair to come.",
            registry=registry,
        )
        in_use.set_function(lambda: self.memory.in_use)

    async def start(self) -> None:
        await super().start()
        self.ready = True

    async def main(self) -> None:
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._watch_deadlines_and_cutoffs())
            for workload in self.workloads:
                tasks.create_task(self._run_workload(workload))
            for extension in self.extensions:
                tasks.create_task(extension.run())

    async def on_stop(self) -> None:
        for extension in self.extensions:
            await extension.stop()

    # ---- initiator side --------------------------------------------------------------

    def submit(self, request: EntangleRequest, sink) -> LinkRequest | None:
        """Start a CREATE towards `request.remote_node_id`; errors go to the sink."""
        create_id = self._next_create_id
        self._next_create_id += 1

        def refuse(code: str, message: str) -> None:
            sink.err(EntangleErr(create_id, code, message))
            self.m_requests.labels(peer=request.remote_node_id, result=code).inc()

        neighbour = self.neighbours.get(request.remote_node_id)
        if neighbour is None and self.routing is not None and request.remote_node_id != self.name:
            self._next_create_id -= 1  # the network layer numbers its own requests
            return self.network_layer.submit(request, sink)
        if neighbour is None:
            known = ", ".join(sorted(self.neighbours)) or "none"
            refuse(
                "UNSUPP", f"{self.name} has no link to {request.remote_node_id!r} (links: {known})"
            )
            return None
        problem = request_problem(request)
        if problem is not None:
            refuse("UNSUPP", problem)
            return None
        if request.minimum_fidelity > neighbour.fidelity + 1e-12:
            # Above the link: purified (or refused) by the network layer, on this link.
            self._next_create_id -= 1  # the network layer numbers its own requests
            return self.network_layer.submit(request, sink, direct=True)
        if request.type == "keep" and self.memory.free_slots == 0:
            refuse("NORES", f"{self.name}: all {self.memory.capacity} memory qubits in use")
            return None
        link_request = LinkRequest(
            create_id=create_id,
            initiator=self.name,
            peer=neighbour.peer,
            number=request.number,
            minimum_fidelity=request.minimum_fidelity,
            max_time_s=request.max_time_s,
            type=request.type,
            basis=request.basis,
            started_at=self.clock.now(),
            sink=sink,
        )
        self.requests[link_request.key] = link_request
        self.send(
            neighbour.peer,
            CreateRequest(
                create_id=create_id,
                remote_node_id=self.name,
                number=request.number,
                minimum_fidelity=request.minimum_fidelity,
                max_time_s=request.max_time_s,
                type=request.type,
                basis=request.basis,
            ),
        )
        return link_request

    def _on_entangle(self, envelope: Envelope, origin: Origin) -> None:
        self.submit(envelope.body, ClientSink(self, origin, envelope.header.msg_id))

    def _on_create_accept(self, envelope: Envelope, origin: Origin) -> None:
        request = self.requests.get((self.name, envelope.body.create_id))
        if request is None or request.finished:
            return
        request.accepted = True
        self._grant_credits(request)

    def _on_create_reject(self, envelope: Envelope, origin: Origin) -> None:
        reject: CreateReject = envelope.body
        request = self.requests.get((self.name, reject.create_id))
        if request is not None:
            self._finish(request, reject.error_code, f"{request.peer}: {reject.message}")

    def _on_pair_report(self, envelope: Envelope, origin: Origin) -> None:
        report: PairReport = envelope.body
        request = self.requests.get((self.name, report.create_id))
        if request is None or request.finished:
            stale = [half.qubit for half in report.halves if half.qubit is not None]
            if stale and envelope.header.sender in self.neighbours:  # the peer still holds them
                self.send(envelope.header.sender, FreeRequest(stale))
            return
        given_up = [
            h.qubit
            for h in report.halves
            if h.sequence_number in request.expired and h.qubit is not None
        ]
        if given_up:  # expired here before the report came: the peer still holds them
            self.send(envelope.header.sender, FreeRequest(given_up))
        for half in report.halves:
            if half.sequence_number in request.expired:
                continue
            request.remote[half.sequence_number] = half
            self._try_deliver(request, half.sequence_number)
            if request.finished:
                break

    def _try_deliver(self, request: LinkRequest, sequence_number: int) -> None:
        pair = request.assemble(sequence_number, self.name, request.peer)
        if pair is None:
            return
        request.delivered += 1
        stats = self._link_stats[request.peer]
        stats["delivered"] += 1
        stats["fidelity_sum"] += pair.fidelity
        self.m_delivered.labels(peer=request.peer, type=request.type).inc()
        self.m_fidelity.labels(peer=request.peer).observe(pair.fidelity)
        if pair.qubits is not None:  # kept: remember whom to tell if a half is lost
            own, theirs = pair.qubits
            self.kept.add(
                KeptPair(
                    own,
                    request.peer,
                    self.name,
                    request.create_id,
                    sequence_number,
                    theirs,
                    request.sink,
                )
            )
        request.sink.ok(pair)
        if request.complete:
            self._finish(request, None, "done")

    def _finish(self, request: LinkRequest, error_code: str | None, message: str) -> None:
        """End a request at the initiator: tell the sink, the peer and the station."""
        if request.finished:
            return
        request.finished = True
        self.requests.pop(request.key, None)
        self._release_credits(request)
        self._release_undelivered(request)
        neighbour = self.neighbours[request.peer]
        # Across a cut fibre these wait for it: else the peer and station would keep
        # the request (and grant credits for it) forever.
        self.send_or_hold(neighbour.station, GenerateCancel(request.initiator, request.create_id))
        self.send_or_hold(request.peer, RequestEnd(request.create_id, error_code or "done"))
        self.m_requests.labels(peer=request.peer, result=error_code or "OK").inc()
        if error_code is None:
            request.sink.done(EntangleDone(request.create_id, request.delivered))
        else:
            request.sink.err(
                EntangleErr(request.create_id, error_code, message, delivered=request.delivered)
            )

    # ---- peer side -------------------------------------------------------------------

    def _on_create_request(self, envelope: Envelope, origin: Origin) -> None:
        create: CreateRequest = envelope.body
        initiator = envelope.header.sender

        def reject(code: str, message: str) -> None:
            # Back on the connection it came in on: that also reaches a sender we have no
            # link (and so no connection) to.
            body = CreateReject(create.create_id, code, message)
            self.reply(origin, body, parent_id=envelope.header.msg_id)

        if initiator not in self.neighbours or create.remote_node_id != initiator:
            reject("UNSUPP", f"{self.name} has no link to {initiator!r}")
            return
        problem = request_problem(create)
        if problem is not None:
            reject("UNSUPP", problem)
            return
        # A link of an end-to-end path waits for memory; a client's request is told now.
        if create.type == "keep" and self.memory.free_slots == 0 and create.purpose is None:
            reject("NORES", f"{self.name}: all {self.memory.capacity} memory qubits in use")
            return
        request = LinkRequest(
            create_id=create.create_id,
            initiator=initiator,
            peer=initiator,
            number=create.number,
            minimum_fidelity=create.minimum_fidelity,
            max_time_s=create.max_time_s,
            type=create.type,
            basis=create.basis,
            started_at=envelope.header.sent_at,
            accepted=True,
        )
        if create.purpose is not None:
            request.purpose = _purpose_key(create.purpose)
            request.max_window = self.network_layer.window(request.purpose, initiator)
        self.requests[request.key] = request
        self.send(initiator, CreateAccept(create.create_id))
        self._grant_credits(request)

    def _on_request_end(self, envelope: Envelope, origin: Origin) -> None:
        request = self.requests.pop((envelope.header.sender, envelope.body.create_id), None)
        if request is not None:
            request.finished = True
            self._release_credits(request)

    # ---- both ends -------------------------------------------------------------------

    def _grant_credits(self, request: LinkRequest) -> None:
        holding = 0
        if request.purpose is not None:  # shares change as end-to-end requests come and go
            request.max_window = self.network_layer.window(request.purpose, request.peer)
            holding = self.memory.holding(request.key)
        wanted = request.credits_wanted(self.memory.free_slots, holding)
        granted = self.memory.reserve(wanted) if request.type == "keep" else wanted
        if granted <= 0:
            return
        request.granted += granted
        other = request.peer
        station = self.neighbours[other].station
        # Across a cut fibre the credit waits for it (the slots stay reserved for it).
        credit = GenerateCredit(request.initiator, request.create_id, other, granted)
        self.send_or_hold(station, credit)

    def _release_credits(self, request: LinkRequest) -> None:
        if request.type == "keep":
            self.memory.unreserve(request.granted)
        request.granted = 0

    def _release_undelivered(self, request: LinkRequest) -> None:
        """Free kept halves that never became an OK (the request ended first)."""
        stale = [half.qubit for half in request.local.values() if half.qubit is not None]
        request.local.clear()
        if stale:
            self.spawn(self.release_qubits(stale))

    def _regrant_all(self) -> None:
        for request in list(self.requests.values()):
            self._grant_credits(request)

    async def _on_herald(self, envelope: Envelope, origin: Origin) -> None:
        herald: Herald = envelope.body
        request = self.requests.get((herald.initiator, herald.create_id))
        sender = envelope.header.sender
        expected = {n.station for n in self.neighbours.values()}
        if request is not None:
            expected = {self.neighbours[request.peer].station}
        if sender not in expected:
            message = f"{sender!r} is not the station of this request ({', '.join(expected)})"
            self.reply(origin, ErrorReply("not_station", message), parent_id=envelope.header.msg_id)
            return
        qubits = [pair.qubit for pair in herald.pairs]
        if request is None or request.finished:  # ended while the pairs were in flight
            await self.broker_ops([FreeOp(qubit) for qubit in qubits])
            return
        now = self.clock.now()
        count = len(herald.pairs)
        request.granted = max(0, request.granted - count)
        request.heralded += count
        self._link_stats[request.peer]["heralded"] += count
        self.m_heralded.labels(peer=request.peer).inc(count)
        if request.purpose is not None:  # a link of an end-to-end path: the network layer
            for pair in herald.pairs:
                held = HeldQubit(
                    pair.qubit,
                    now,
                    request.create_id,
                    pair.sequence_number,
                    pair.peer_qubit,
                    request_key=request.key,
                )
                self.memory.store(held, reserved=True)
            self._grant_credits(request)
            for pair in herald.pairs:
                await self.network_layer.on_link_half(request.purpose, request, pair, now)
            return
        if request.type == "measure":
            halves = await self._measure_halves(herald, now)
            for pair, half in zip(herald.pairs, halves, strict=True):
                for listener in self.half_measured_listeners:
                    listener(request, pair.sequence_number, half)
        else:
            halves = await self._keep_halves(request, herald, now)
        if request.finished:  # ended while we were asking the broker: let the halves go
            await self.release_qubits([half.qubit for half in halves if half.qubit is not None])
            return
        self._grant_credits(request)
        if request.initiator == self.name:
            leftovers = []
            for pair, half in zip(herald.pairs, halves, strict=True):
                # Completed part-way through this herald, or the peer expired the pair
                # before its herald came here.
                if request.finished or pair.sequence_number in request.expired:
                    if half.qubit is not None:
                        leftovers.append(half.qubit)
                    continue
                request.local[pair.sequence_number] = half
                self._try_deliver(request, pair.sequence_number)
            if leftovers:
                await self.release_qubits(leftovers)
        else:
            reported = []
            late = []  # pairs the initiator expired before their herald came here
            for pair, half in zip(herald.pairs, halves, strict=True):
                reason = request.expired.get(pair.sequence_number)
                if reason is not None:
                    self.m_pairs_expired.labels(peer=request.initiator, reason=reason).inc()
                    if half.qubit is not None:
                        late.append(half.qubit)
                    continue
                if half.qubit is not None:  # the initiator's OK will hand it over
                    self.kept.add(
                        KeptPair(
                            half.qubit,
                            request.initiator,
                            request.initiator,
                            request.create_id,
                            pair.sequence_number,
                            half.peer_qubit,
                        )
                    )
                reported.append(
                    ReportedHalf(
                        sequence_number=pair.sequence_number,
                        delivered_at=half.delivered_at,
                        qubit=half.qubit,
                        outcome=half.outcome,
                        basis=half.basis,
                    )
                )
            if reported:
                self.send(request.initiator, PairReport(request.create_id, reported))
            if late:
                await self.release_qubits(late)

    async def _measure_halves(self, herald: Herald, now: float) -> list[LocalHalf]:
        request = self.requests.get((herald.initiator, herald.create_id))
        basis = request.basis if request is not None else "Z"
        bases = [self.pick_basis(basis) for _ in herald.pairs]
        readout = tuple(self.hardware.readout_error)
        ops = [
            MeasureOp(pair.qubit, basis=b, readout_error=readout, free=True)
            for pair, b in zip(herald.pairs, bases, strict=True)
        ]
        outcomes = await self.broker_ops(ops)
        return [
            LocalHalf(
                delivered_at=now,
                bell_state=pair.bell_state,
                created_at=pair.created_at,
                attempts=pair.attempts,
                fidelity=pair.fidelity,
                outcome=outcome,
                basis=b,
            )
            for pair, b, outcome in zip(herald.pairs, bases, outcomes, strict=True)
        ]

    async def _keep_halves(
        self, request: LinkRequest, herald: Herald, now: float
    ) -> list[LocalHalf]:
        for pair in herald.pairs:
            held = HeldQubit(
                pair.qubit, now, request.create_id, pair.sequence_number, pair.peer_qubit
            )
            self.memory.store(held, reserved=True)
        fidelities = [pair.fidelity for pair in herald.pairs]
        if request.initiator == self.name:  # the OK's goodness: oracle fidelity now
            ops = []
            for pair in herald.pairs:
                target = bell_vector(BellState(pair.bell_state))
                ops.append(
                    FidelityOp(
                        [pair.qubit, pair.peer_qubit], target.real.tolist(), target.imag.tolist()
                    )
                )
            fidelities = await self.broker_ops(ops)
        return [
            LocalHalf(
                delivered_at=now,
                bell_state=pair.bell_state,
                created_at=pair.created_at,
                attempts=pair.attempts,
                fidelity=float(fidelity),
                qubit=pair.qubit,
                peer_qubit=pair.peer_qubit,
            )
            for pair, fidelity in zip(herald.pairs, fidelities, strict=True)
        ]

    def pick_basis(self, basis: str) -> str:
        """The measurement basis for one half: `random` is Z or X, independently per node."""
        if basis != "random":
            return basis
        return "Z" if self.rng.random() < 0.5 else "X"

    # ---- qubits held for applications ------------------------------------------------

    async def _on_measure(self, envelope: Envelope, origin: Origin) -> None:
        request: MeasureRequest = envelope.body
        parent = envelope.header.msg_id
        if request.qubit not in self.memory.held:
            message = f"{self.name} holds no qubit {request.qubit}"
            self.reply(origin, ErrorReply("unknown_qubit", message), parent_id=parent)
            return
        if request.basis not in ("Z", "X", "Y"):
            message = f"basis must be Z, X or Y, got {request.basis!r}"
            self.reply(origin, ErrorReply("bad_basis", message), parent_id=parent)
            return
        self.memory.release(request.qubit)
        self.kept.pop(request.qubit)
        readout = tuple(self.hardware.readout_error)
        op = MeasureOp(request.qubit, basis=request.basis, readout_error=readout, free=True)
        (outcome,) = await self.broker_ops([op])
        self.reply(origin, MeasureReply(request.qubit, int(outcome)), parent_id=parent)
        self._regrant_all()

    async def _on_free(self, envelope: Envelope, origin: Origin) -> None:
        qubits = [q for q in envelope.body.qubits if q in self.memory.held]
        await self.release_qubits(qubits)
        self.reply(origin, FreeReply(len(qubits)), parent_id=envelope.header.msg_id)

    async def release_qubits(self, qubits: list[int]) -> None:
        """Free those of these qubits this node holds, and offer their slots again."""
        held = [q for q in qubits if q in self.memory.held]
        for qubit in held:
            self.memory.release(qubit)
            self.kept.pop(qubit)
        if held:
            await self.broker_ops([FreeOp(q) for q in held])
            self._regrant_all()

    async def broker_ops(self, ops: list) -> list[Any]:
        """Run a batch at the broker as this node; a refusal raises RuntimeError."""
        reply = await self.request(self.broker, OpsRequest(ops))
        body = reply.body
        if isinstance(body, ErrorReply):
            raise RuntimeError(f"broker: {body.code}: {body.message}")
        assert isinstance(body, OpsReply)
        if body.error is not None:
            raise RuntimeError(f"broker refused op {body.error.index}: {body.error.message}")
        return body.results

    def apply_fault(self, kind: str, target: str | None, parameters: dict[str, Any]) -> None:
        """Cutting the fibre to a neighbour cuts its station too; halves waiting for the
        peer's report are lost with the fibre (EXPIRE; their requests go on, or time out).
        Restoring it sends the EXPIREs held for the peer meanwhile.
        An extension may take a fault of its own (QKD: `eavesdrop` on a bb84_decoy link)."""
        self._apply_fault(kind, target, parameters)
        for listener in self.fault_listeners:  # e.g. MQTT control: tell fault_applied now
            listener()

    def _apply_fault(self, kind: str, target: str | None, parameters: dict[str, Any]) -> None:
        for extension in self.extensions:
            apply = getattr(extension, "apply_fault", None)
            if apply is not None and apply(kind, target, parameters):
                return
        super().apply_fault(kind, target, parameters)
        if kind == "clear":  # every fibre is back
            for other in self.held_notices.peers():
                self.spawn(self._send_held_notices_when_open(other))
        neighbour = self.neighbours.get(target or "")
        if kind not in ("cut", "restore") or neighbour is None:
            return
        super().apply_fault(kind, neighbour.station, parameters)
        if kind == "cut":
            for request in list(self.requests.values()):
                if request.peer != target or request.initiator != self.name:
                    continue
                lost = [
                    KeptPair(
                        half.qubit,
                        target,
                        self.name,
                        request.create_id,
                        sequence_number,
                        half.peer_qubit,
                        request.sink,
                        delivered=False,
                    )
                    for sequence_number, half in request.expire_waiting().items()
                ]
                self.m_expired.inc(sum(1 for pair in lost if pair.qubit is not None))
                self.expire(lost, "cut")
        else:
            for other in (target, neighbour.station):
                if self.held_notices.waiting(other):
                    self.spawn(self._send_held_notices_when_open(other))

    # ---- EXPIRE ----------------------------------------------------------------------

    def expire(self, lost: list[KeptPair], reason: str, *, tell_peer: bool = True) -> None:
        """These pairs are lost at this end: free the halves, tell each request's owner
        (initiator) or app, and the other end (so that it frees its halves too; pairs
        lost before their OK are made again, and the peer takes part in as many more)."""
        groups: dict[tuple[str, str, int, bool], list[KeptPair]] = defaultdict(list)
        for pair in lost:
            if pair.qubit is not None:
                self.kept.pop(pair.qubit)
            groups[(pair.peer, pair.initiator, pair.create_id, pair.path)].append(pair)
        freed: list[int] = []
        for (peer, initiator, create_id, path), pairs in groups.items():
            numbers = sorted(pair.sequence_number for pair in pairs)
            qubits = [pair.qubit for pair in pairs if pair.qubit is not None]
            freed += qubits
            self.m_pairs_expired.labels(peer=peer, reason=reason).inc(len(pairs))
            message = (
                f"{self.name}: pairs {numbers} of request {initiator}:{create_id} with {peer} "
                f"expired ({reason})"
            )
            log.info("%s", message)
            sink = pairs[0].sink
            tell = getattr(sink, "expire", None)
            if tell is not None:
                tell(EntangleExpire(create_id, numbers, qubits, reason, message))
            if qubits:
                for listener in self.expire_listeners:
                    listener(qubits, message)
            theirs = [pair.peer_qubit for pair in pairs if pair.peer_qubit is not None]
            remade = sum(1 for pair in pairs if not pair.delivered)
            if tell_peer and (theirs or remade):  # (measured pairs: only the count)
                body = PairExpire(initiator, create_id, numbers, theirs, reason, remade, path)
                self.send_or_hold(peer, body)
        if freed:
            self.spawn(self.release_qubits(freed))

    def _on_pair_expire(self, envelope: Envelope, origin: Origin) -> None:
        body: PairExpire = envelope.body
        peer = envelope.header.sender
        if peer not in (self.directory if body.path else self.neighbours):
            return
        lost = self.kept.pop_named(peer, body.initiator, body.create_id, body.qubits)
        if body.path:  # an end-to-end pair: its halves are all there is to it
            self.expire(lost, peer_reason(body.reason), tell_peer=False)
            return
        request = self.requests.get((body.initiator, body.create_id))
        if body.initiator == self.name and request is not None:
            remade = []
            for sequence_number in body.sequence_numbers:  # halves still waiting here
                half = request.expire(sequence_number, peer_reason(body.reason))
                if half is not None:
                    remade.append(sequence_number)
                    lost.append(
                        KeptPair(
                            half.qubit,
                            peer,
                            self.name,
                            body.create_id,
                            sequence_number,
                            half.peer_qubit,
                            request.sink,
                            delivered=False,
                        )
                    )
            if remade:  # lost before their OK: made again, the peer takes part in as many
                answer = PairExpire(self.name, body.create_id, remade, [], body.reason, len(remade))
                self.send_or_hold(peer, answer)
        elif request is not None:  # peer side
            named = {pair.sequence_number for pair in lost}
            for sequence_number in body.sequence_numbers:  # heralds still on their way
                if sequence_number not in named:
                    request.expired[sequence_number] = peer_reason(body.reason)
            if body.remake > 0:  # take part in making them again
                # (Below zero for a while when this overtakes their heralds: each herald
                # still counts one when it comes.)
                request.heralded -= min(body.remake, len(body.sequence_numbers))
                self._grant_credits(request)
        if lost:
            self.expire(lost, peer_reason(body.reason), tell_peer=False)

    def send_or_hold(self, peer: str, body: Any) -> None:
        """Send a link-layer notice now, or when the fibre to `peer` is back."""
        if self.faults.blocks(peer):
            self.held_notices.hold(peer, body)
        else:
            self.send(peer, body)

    async def _send_held_notices_when_open(self, peer: str) -> None:
        """Send what was held for `peer` once it answers a ping: the other end of the
        fibre may be restored after this one, and would drop what we send before."""
        timeout_s = 0.5
        while self.held_notices.waiting(peer):
            if self.faults.blocks(peer):  # cut again meanwhile: the next restore sends
                return
            try:
                await self.request(peer, PingRequest(), timeout_s=timeout_s)
            except TimeoutError:  # not back yet (or the peer is down): ask again
                timeout_s = min(5.0, 2 * timeout_s)
                continue
            for body in self.held_notices.take(peer):
                self.send_or_hold(peer, body)

    def describe_faults(self) -> dict[str, Any]:
        described = super().describe_faults()
        for extension in self.extensions:
            describe = getattr(extension, "describe_faults", None)
            if describe is not None:
                described.update(describe())
        return described

    def add_extension(self, extension: "NodeExtension") -> None:
        """Something more a node runs (applications, QKD, MQTT control): it may add
        handlers to `self.handlers`; its run() goes in the node's task group."""
        self.extensions.append(extension)

    # ---- what the network layer uses -------------------------------------------------

    def start_link_for(self, e2e: EndToEndRequest, peer: str) -> LinkRequest | None:
        """A keep-mode link request towards `peer` that feeds end-to-end request `e2e`."""
        neighbour = self.neighbours.get(peer)
        if neighbour is None:
            log.error("%s: path %s needs a link to %s", self.name, e2e.path, peer)
            return None
        create_id = self._next_create_id
        self._next_create_id += 1
        purpose = (e2e.src, e2e.request_id)
        request = LinkRequest(
            create_id=create_id,
            initiator=self.name,
            peer=peer,
            number=0,
            minimum_fidelity=0.0,
            max_time_s=0.0,
            type="keep",
            basis="random",
            started_at=self.clock.now(),
            sink=_PathLinkSink(self.network_layer, purpose),
            purpose=purpose,
            max_window=self.network_layer.window(purpose, peer),
        )
        self.requests[request.key] = request
        body = CreateRequest(
            create_id=create_id,
            remote_node_id=self.name,
            number=0,
            minimum_fidelity=0.0,
            max_time_s=0.0,
            type="keep",
            basis="random",
            purpose=f"{e2e.src}:{e2e.request_id}",
        )
        self.send(peer, body)
        return request

    def end_link_for(self, request: LinkRequest) -> None:
        self._finish(request, None, "done")

    def forget_qubits(self, qubits: list[int]) -> None:
        """Qubits an operation is about to consume at the broker (measured and freed)."""
        for qubit in qubits:
            if qubit in self.memory.held:
                self.memory.release(qubit)
            self.kept.pop(qubit)
        self._regrant_all()

    def count_end_to_end(self, e2e: EndToEndRequest, pair: EntangleOk) -> None:
        self.m_end_to_end.labels(dst=pair.dst, type=e2e.type).inc()

    def _on_path_request(self, envelope: Envelope, origin: Origin) -> None:
        self.network_layer.on_path_request(envelope.body, envelope.header.sender)

    async def _on_swap_report(self, envelope: Envelope, origin: Origin) -> None:
        await self.network_layer.on_swap_report(envelope.body, envelope.header.sent_at)

    # ---- time-driven work ------------------------------------------------------------

    async def _watch_deadlines_and_cutoffs(self) -> None:
        cutoff_s = self.hardware.cutoff_s
        tick_s = 0.05 if cutoff_s is None else min(0.05, cutoff_s / 4)
        while True:
            await asyncio.sleep(self.clock.wall_delay_s(tick_s))
            now = self.clock.now()
            for request in list(self.requests.values()):
                if request.initiator == self.name and now > request.deadline:
                    self._finish(
                        request,
                        "TIMEOUT",
                        f"{request.delivered} of {request.number} pairs within "
                        f"max_time_s {request.max_time_s}",
                    )
            self.network_layer.check_deadlines(now)
            expired = self.memory.expired(now, cutoff_s)
            if expired:
                self.m_expired.inc(len(expired))
                self._expire_past_cutoff(expired)
                await self.network_layer.on_expired(expired)
                await self.release_qubits([held.qubit for held in expired])

    def _expire_past_cutoff(self, expired: list[HeldQubit]) -> None:
        """Link-layer halves past the cutoff that someone was given or waits for: EXPIRE
        (the network layer's own pairs are told as segment_broken instead)."""
        lost = []
        for held in expired:
            pair = self.kept.pop(held.qubit)
            if pair is not None:
                lost.append(pair)
                continue
            request = self.requests.get((self.name, held.create_id or 0))
            if request is None or held.sequence_number not in request.local:
                continue
            half = request.expire(held.sequence_number, "cutoff")
            lost.append(
                KeptPair(
                    held.qubit,
                    request.peer,
                    self.name,
                    request.create_id,
                    held.sequence_number,
                    half.peer_qubit if half else None,
                    request.sink,
                    delivered=False,
                )
            )
        self.expire(lost, "cutoff")

    async def _run_workload(self, workload: WorkloadConfig) -> None:
        """A background application: request pairs again and again (for demos and load)."""
        while True:
            sink = WorkloadSink(self, release=workload.type == "keep")
            request = EntangleRequest(
                remote_node_id=workload.dst,
                number=workload.number,
                minimum_fidelity=workload.minimum_fidelity,
                max_time_s=0.0 if workload.number == 0 else 60.0,
                type=workload.type,
                basis=workload.basis or "random",
                purify=workload.purify,
            )
            if self.submit(request, sink) is not None:
                await sink.finished.wait()
            else:
                await asyncio.sleep(1.0)
            await asyncio.sleep(self.clock.wall_delay_s(max(workload.pause_s, 0.01)))

    def stats(self) -> dict[str, Any]:
        links = {}
        for peer, figures in self._link_stats.items():
            delivered = figures["delivered"]
            links[peer] = {
                "delivered": delivered,
                "heralded": figures["heralded"],
                "mean_fidelity": figures["fidelity_sum"] / delivered if delivered else math.nan,
            }
        extensions: dict[str, Any] = {}
        for extension in self.extensions:  # e.g. "qkd" and "kme_url" from the QKD extension
            extension_stats = getattr(extension, "stats", None)
            if extension_stats is not None:
                extensions.update(extension_stats())
        return {
            **super().stats(),
            **extensions,
            "memory": {
                "capacity": self.memory.capacity,
                "in_use": self.memory.in_use,
                "reserved": self.memory.reserved,
                "held": sorted(self.memory.held),
            },
            "links": links,
            "active_requests": len(self.requests),
            "end_to_end": self.network_layer.stats(),
        }


class NodeExtension(Protocol):
    """A part of a node process beyond the link and network layers."""

    async def run(self) -> None: ...
    async def stop(self) -> None: ...


class _PathLinkSink:
    """The sink of a link request that feeds an end-to-end path: pairs go to the network
    layer directly; only a failure matters, and it fails the end-to-end request."""

    def __init__(self, network: NetworkLayer, purpose: tuple[str, int]):
        self.network = network
        self.purpose = purpose

    def ok(self, pair: EntangleOk) -> None:
        pass

    def err(self, error: EntangleErr) -> None:
        self.network.link_failed(self.purpose, error.error_code, error.message)

    def done(self, done: EntangleDone) -> None:
        pass


def _purpose_key(purpose: str) -> tuple[str, int]:
    src, _, request_id = purpose.rpartition(":")
    return (src, int(request_id))
