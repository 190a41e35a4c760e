"""The network layer of one node: end-to-end pairs between non-adjacent nodes.

Swap as soon as possible: every pair of adjacent nodes on the path runs a keep-mode
link request for the end-to-end request (its `purpose`); a repeater performs a
Bell-state measurement as soon as it holds a pair on each side, and reports it to both
end nodes; the end nodes join the reports into chains (`chains.py`) and, when a chain
covers the whole path, hold one end-to-end pair whose Bell state is the XOR of its link
pairs' Bell states and the swap outcomes. The destination sends its half to the source,
which gives the client one OK per end-to-end pair.

When the plan purifies a link (`rounds[i] > 0`, chosen by `routing.py`), the two ends of
that link run purification rounds on its raw pairs first (`purify.py`) and only the
survivors, brought to Φ+, go on to be swapped: purify-then-swap. A request to a
neighbour above the link's fidelity is the one-link case of the same thing.

Which plan serves a request, or why it is refused, and the memory each link of a
request is promised at a node, are decided in `admission.py`.
"""

import logging
import math
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from qnemu.node.admission import link_window, memory_shortage, plan_request
from qnemu.node.chains import Chain, ChainTracker
from qnemu.node.expiry import KeptPair
from qnemu.node.purify import Purifier
from qnemu.node.requests import deadline_at, request_problem
from qnemu.node.routing import MAX_ROUNDS, Routing
from qnemu.physics.bell import BellState, bell_vector
from qnemu.physics.purification import PROTOCOLS
from qnemu.wire.broker import BellMeasureOp, FidelityOp, MeasureOp
from qnemu.wire.control import EntangleDone, EntangleErr, EntangleOk, EntangleRequest
from qnemu.wire.network import (
    EndHalf,
    LinkPairRef,
    PathEnd,
    PathFailed,
    PathRequest,
    PurifyOutcome,
    PurifyResult,
    PurifyStep,
    SegmentBroken,
    SwapReport,
)

if TYPE_CHECKING:
    from qnemu.node.memory import HeldQubit
    from qnemu.node.requests import LinkRequest
    from qnemu.node.service import NodeService
    from qnemu.wire.link import HeraldedPair

__all__ = ["EndToEndRequest", "NetworkLayer"]

log = logging.getLogger(__name__)

Key = tuple[str, int]  # (source node, request id)


@dataclass(frozen=True, slots=True)
class LinkHalf:
    """A link-level pair as held by this node, for one end-to-end request."""

    pair_id: str
    link_index: int
    bell_state: int
    qubits: tuple[int, int]  # (left node's half, right node's half)
    attempts: int
    created_at: float

    @property
    def ref(self) -> LinkPairRef:
        return LinkPairRef(
            self.pair_id, self.link_index, self.bell_state, self.qubits, self.attempts
        )


@dataclass(frozen=True, slots=True)
class EndPair:
    """An end-to-end pair as both ends will know it."""

    first_pair_id: str  # names the pair at both ends
    qubits: tuple[int, int]  # (source's half, destination's half)
    bell_state: int
    created_at: float
    attempts: int


@dataclass
class EndToEndRequest:
    """One end-to-end request, as one node of its path sees it."""

    src: str
    request_id: int
    path: tuple[str, ...]
    index: int  # this node's position on the path
    type: str
    basis: str
    number: int = 0
    deadline: float = math.inf
    sink: Any = None  # the source's client or workload
    estimated_fidelity: float = math.nan
    rounds: tuple[int, ...] = ()  # purification rounds per link of the path (): none
    protocol: str = "dejmps"  # of those rounds
    delivered: int = 0
    finished: bool = False
    link_request: "LinkRequest | None" = None  # the link towards path[index + 1]
    left: deque = field(default_factory=deque)  # LinkHalf waiting for a swap (repeater)
    right: deque = field(default_factory=deque)
    own: dict[str, LinkHalf] = field(default_factory=dict)  # end node: my link pairs
    tracker: ChainTracker | None = None
    waiting_for_own: dict[str, Chain] = field(default_factory=dict)  # complete, herald late
    done_here: dict[str, dict] = field(default_factory=dict)  # source: my half, by first pair
    done_there: dict[str, EndHalf] = field(default_factory=dict)  # source: the dst's half
    handed: dict[str, int] = field(default_factory=dict)  # dst, keep: halves sent to the source
    delivered_ids: list[str] = field(default_factory=list)  # source: first pair ids delivered
    lost: set[str] = field(default_factory=set)  # link pairs dropped (cutoff) anywhere

    @property
    def key(self) -> Key:
        return (self.src, self.request_id)

    @property
    def links(self) -> int:
        return len(self.path) - 1

    @property
    def role(self) -> str:
        if self.index == 0:
            return "src"
        return "dst" if self.index == self.links else "repeater"

    @property
    def ends(self) -> tuple[str, str]:
        return (self.path[0], self.path[-1])

    def rounds_on(self, link_index: int) -> int:
        return self.rounds[link_index] if self.rounds else 0

    def my_links(self) -> list[int]:
        """The links of the path this node is an end of (one, or two for a repeater)."""
        return [i for i in (self.index - 1, self.index) if 0 <= i < self.links]

    def memory_need(self) -> list[int]:
        """Qubits promised here to each of my links: r + 1 (one pair per level, plus one)."""
        return [self.rounds_on(i) + 1 for i in self.my_links()]

    def mine(self, half: LinkHalf) -> int:
        """My qubit of a link pair of this request (left end: the first)."""
        return half.qubits[0] if half.link_index == self.index else half.qubits[1]


class NetworkLayer:
    """End-to-end requests through repeaters, on top of a node's link layer."""

    def __init__(self, node: "NodeService"):
        self.node = node
        self.requests: dict[Key, EndToEndRequest] = {}
        self._next_id = 1
        self.purifier = Purifier(self)

    # ---- source: accept or refuse ----------------------------------------------------

    def submit(
        self, request: EntangleRequest, sink: Any, *, direct: bool = False
    ) -> EndToEndRequest | None:
        """Plan a path (and purification rounds) for the request, or refuse it at once.

        Args:
            direct: a request to a neighbour above its link's fidelity: that link only.
        """
        node = self.node
        request_id = self._next_id
        self._next_id += 1

        def refuse(code: str, message: str) -> None:
            sink.err(EntangleErr(request_id, code, message))

        problem = request_problem(request)
        if problem is not None:
            refuse("UNSUPP", problem)
            return None
        routing = node.routing or self._direct_routing()
        route, refusal = plan_request(request, node.name, routing, direct=direct)
        if refusal is not None:
            refuse(*refusal)
            return None
        e2e = EndToEndRequest(
            src=node.name,
            request_id=request_id,
            path=route.path,
            index=0,
            type=request.type,
            basis=request.basis,
            number=request.number,
            deadline=deadline_at(node.clock.now(), request.max_time_s),
            sink=sink,
            estimated_fidelity=route.estimated_fidelity,
            rounds=route.rounds if route.purifies else (),
            protocol=route.protocol,
            tracker=ChainTracker(len(route.path) - 1) if len(route.path) > 2 else None,
        )
        shortage = self._memory_shortage(e2e)
        if shortage is not None:
            refuse("NORES", shortage)
            return None
        self.requests[e2e.key] = e2e
        # Hop by hop, so that each node hears of the path before its left neighbour's CREATE.
        self._forward(e2e)
        return e2e

    def _direct_routing(self) -> Routing:
        """For a node built without routing (tests): its own links only."""
        links = [
            (self.node.name, peer, n.fidelity, 1.0, 0.0, n.coefficients)
            for peer, n in self.node.neighbours.items()
        ]
        return Routing(links, {self.node.name: self.node.memory.capacity})

    def _memory_shortage(self, e2e: EndToEndRequest) -> str | None:
        node = self.node
        return memory_shortage(node.name, node.memory.capacity, e2e, self.requests.values())

    def window(self, purpose: Key, peer: str) -> int:
        """The qubits the link towards `peer` of request `purpose` may hold here."""
        capacity = self.node.memory.capacity
        return link_window(capacity, self.requests.values(), self.requests.get(purpose), peer)

    def _forward(self, e2e: EndToEndRequest) -> None:
        following = e2e.path[e2e.index + 1]
        body = PathRequest(
            e2e.src,
            e2e.request_id,
            list(e2e.path),
            e2e.type,
            e2e.basis,
            list(e2e.rounds),
            e2e.protocol,
        )
        self.node.send(following, body)
        e2e.link_request = self.node.start_link_for(e2e, following)

    # ---- every node of the path ------------------------------------------------------

    def on_path_request(self, body: PathRequest, sender: str) -> None:
        path = tuple(body.path)
        name = self.node.name
        if name not in path or path.index(name) == 0 or path[path.index(name) - 1] != sender:
            log.warning("%s: ignoring path_request from %s for path %s", name, sender, path)
            return
        rounds = tuple(body.purify_rounds)
        if (rounds and len(rounds) != len(path) - 1) or not all(
            0 <= r <= MAX_ROUNDS for r in rounds
        ):
            log.warning("%s: ignoring path_request with purify_rounds %s", name, rounds)
            return
        if body.purify not in PROTOCOLS:
            log.warning("%s: ignoring path_request with purify %r", name, body.purify)
            return
        index = path.index(name)
        e2e = EndToEndRequest(
            src=body.src,
            request_id=body.request_id,
            path=path,
            index=index,
            type=body.type,
            basis=body.basis,
            rounds=rounds if any(rounds) else (),
            protocol=body.purify,
        )
        if e2e.role == "dst" and e2e.links > 1:
            e2e.tracker = ChainTracker(e2e.links)
        shortage = self._memory_shortage(e2e)
        if shortage is not None:  # the source ends it everywhere (path_end)
            self.node.send(body.src, PathFailed(body.src, body.request_id, "NORES", shortage))
            return
        self.requests[e2e.key] = e2e
        if e2e.role == "repeater":
            self._forward(e2e)

    async def on_link_half(
        self, key: Key, request: "LinkRequest", pair: "HeraldedPair", now: float
    ) -> None:
        """A link pair for end-to-end request `key` is in this node's memory."""
        e2e = self.requests.get(key)
        if e2e is None or e2e.finished:
            await self.node.release_qubits([pair.qubit])
            return
        if pair.qubit not in self.node.memory.held:
            return  # past the cutoff while its herald was handled: already freed
        pair_id = f"{request.initiator}:{request.create_id}:{pair.sequence_number}"
        if pair_id in e2e.lost:  # the other end dropped it before my herald came
            await self.node.release_qubits([pair.qubit])
            return
        i_am_left = request.initiator == self.node.name
        left_node = self.node.name if i_am_left else request.peer
        half = LinkHalf(
            pair_id=pair_id,
            link_index=e2e.path.index(left_node),
            bell_state=pair.bell_state,
            qubits=(pair.qubit, pair.peer_qubit) if i_am_left else (pair.peer_qubit, pair.qubit),
            attempts=pair.attempts,
            created_at=pair.created_at,
        )
        if e2e.rounds_on(half.link_index) > 0:
            e2e.own[half.pair_id] = half
            await self.purifier.on_link_pair(e2e, half)
            return
        await self.accept_link_half(e2e, half, now)

    async def accept_link_half(self, e2e: EndToEndRequest, half: LinkHalf, now: float) -> None:
        """A link pair ready to be used (raw, or purified as Φ+): swap it (repeater),
        deliver it (one-link path) or wait for the swaps that join it (end node)."""
        if e2e.finished or half.pair_id in e2e.lost:  # (lost: told while it was purified)
            await self.node.release_qubits([e2e.mine(half)])
            return
        if e2e.mine(half) not in self.node.memory.held:
            # Past the cutoff while it was being purified (freed then, in no queue yet).
            self._tell_lost(e2e, [half.pair_id])
            return
        if e2e.role == "repeater":
            (e2e.right if half.link_index == e2e.index else e2e.left).append(half)
            await self._swap_when_ready(e2e)
            return
        if e2e.links == 1:
            pair = EndPair(half.pair_id, half.qubits, half.bell_state, now, half.attempts)
            await self.deliver_end_pair(e2e, pair, now)
            return
        e2e.own[half.pair_id] = half
        chain = e2e.waiting_for_own.pop(half.pair_id, None)
        if chain is not None:
            await self._complete(e2e, chain, now)

    async def _swap_when_ready(self, e2e: EndToEndRequest) -> None:
        hardware = self.node.hardware
        while e2e.left and e2e.right and not e2e.finished:
            left, right = e2e.left.popleft(), e2e.right.popleft()
            my_left, my_right = left.qubits[1], right.qubits[0]
            self.node.forget_qubits([my_left, my_right])
            op = BellMeasureOp(
                (my_left, my_right),
                depolar_prob=hardware.two_qubit_gate_depolar_prob,
                readout_error=tuple(hardware.readout_error),
                free=True,
            )
            (outcome,) = await self.node.broker_ops([op])
            report = SwapReport(e2e.src, e2e.request_id, left.ref, right.ref, int(outcome))
            for end in e2e.ends:
                self.node.send(end, report)
            self.node.m_swaps.inc()

    # ---- end nodes: join swaps into end-to-end pairs ---------------------------------

    async def on_swap_report(self, report: SwapReport, swapped_at: float) -> None:
        e2e = self.requests.get((report.src, report.request_id))
        if e2e is None or e2e.finished or e2e.tracker is None:
            return
        chain = e2e.tracker.add_swap(report.left, report.right, report.outcome, swapped_at)
        if chain is None:
            return
        mine = chain.first_pair_id() if e2e.role == "src" else self._last_pair_id(e2e, chain)
        if mine not in e2e.own:
            e2e.waiting_for_own[mine] = chain  # my herald is still on its way
            return
        await self._complete(e2e, chain, self.node.clock.now())

    @staticmethod
    def _last_pair_id(e2e: EndToEndRequest, chain: Chain) -> str:
        return next(pid for pid, (link, _) in chain.pairs.items() if link == e2e.links - 1)

    async def _complete(self, e2e: EndToEndRequest, chain: Chain, now: float) -> None:
        src_qubit, dst_qubit = chain.end_qubits(e2e.links - 1)
        own_id = chain.first_pair_id() if e2e.role == "src" else self._last_pair_id(e2e, chain)
        e2e.own.pop(own_id, None)
        await self.deliver_end_pair(
            e2e,
            EndPair(
                first_pair_id=chain.first_pair_id(),
                qubits=(src_qubit, dst_qubit),
                bell_state=chain.bell_state,
                created_at=chain.created_at,  # the last swap made the end-to-end pair
                attempts=sum(chain.attempts.values()),
            ),
            now,
        )

    async def deliver_end_pair(self, e2e: EndToEndRequest, pair: "EndPair", now: float) -> None:
        """This end holds its half of an end-to-end pair: measure it or keep it, and join
        it with the other end's half (at the source) or send it there (destination)."""
        src_qubit, dst_qubit = pair.qubits
        mine = src_qubit if e2e.role == "src" else dst_qubit
        half: dict[str, Any] = {"delivered_at": now, "qubit": None, "outcome": None, "basis": None}
        if e2e.type == "keep":
            half["qubit"] = mine
        else:
            basis = self.node.pick_basis(e2e.basis)
            self.node.forget_qubits([mine])
            readout = tuple(self.node.hardware.readout_error)
            (outcome,) = await self.node.broker_ops(
                [MeasureOp(mine, basis=basis, readout_error=readout, free=True)]
            )
            half.update(outcome=int(outcome), basis=basis)
        if e2e.finished:  # ended while we asked the broker: nobody will take this half
            if half["qubit"] is not None:
                await self.node.release_qubits([half["qubit"]])
            return
        first = pair.first_pair_id
        if e2e.role == "dst":
            if half["qubit"] is not None:
                e2e.handed[first] = half["qubit"]
                # Whom to tell if this half is lost (cutoff) once the source has given
                # the pair out: the source, which frees its half and tells its client.
                # (The sequence number is the source's to give: -1 here.)
                self.node.kept.add(
                    KeptPair(
                        half["qubit"], e2e.src, e2e.src, e2e.request_id, -1, src_qubit, path=True
                    )
                )
            self.node.send(e2e.src, EndHalf(e2e.src, e2e.request_id, first, **half))
            return
        half.update(
            bell_state=pair.bell_state,
            fidelity=e2e.estimated_fidelity,
            created_at=pair.created_at,
            attempts=pair.attempts,
            dst_qubit=dst_qubit,
        )
        e2e.done_here[first] = half
        await self._try_deliver(e2e, first)

    def _purifying(self, body, sender: str) -> EndToEndRequest | None:
        """The request a purify_* message is about, if the sender is the other end of
        that link and the link is purified; else None (dropped)."""
        e2e = self.requests.get((body.src, body.request_id))
        if e2e is None or e2e.finished or body.link_index not in e2e.my_links():
            return None
        if e2e.rounds_on(body.link_index) == 0:
            return None
        ends = e2e.path[body.link_index : body.link_index + 2]
        return e2e if sender in ends and sender != self.node.name else None

    async def on_purify_step(self, body: PurifyStep, sender: str) -> None:
        e2e = self._purifying(body, sender)
        if e2e is not None:
            await self.purifier.on_step(e2e, body)

    async def on_purify_outcome(self, body: PurifyOutcome, sender: str) -> None:
        e2e = self._purifying(body, sender)
        if e2e is not None:
            await self.purifier.on_outcome(e2e, body)

    async def on_purify_result(self, body: PurifyResult, sender: str) -> None:
        e2e = self._purifying(body, sender)
        if e2e is not None:
            await self.purifier.on_result(e2e, body)

    async def on_end_half(self, body: EndHalf) -> None:
        e2e = self.requests.get((body.src, body.request_id))
        if e2e is None or e2e.finished or e2e.role != "src":
            return
        e2e.done_there[body.first_pair_id] = body
        await self._try_deliver(e2e, body.first_pair_id)

    async def _try_deliver(self, e2e: EndToEndRequest, first: str) -> None:
        here, there = e2e.done_here.get(first), e2e.done_there.get(first)
        if here is None or there is None:
            return
        keep = e2e.type == "keep"
        if keep and there.qubit is None:
            log.warning("%s: end_half without a qubit for keep request %s", e2e.src, e2e.key)
            return
        del e2e.done_here[first], e2e.done_there[first]
        if keep:
            # The OK's goodness: the oracle, once both ends are done with their halves
            # (the destination may still have rotated its half, e.g. BBPSSW's last twirl).
            target = bell_vector(BellState(here["bell_state"]))
            op = FidelityOp(
                [here["qubit"], there.qubit], target.real.tolist(), target.imag.tolist()
            )
            (fidelity,) = await self.node.broker_ops([op])
            here["fidelity"] = min(1.0, float(fidelity))
            if e2e.finished:  # ended meanwhile: the destination frees its half (path_end)
                await self.node.release_qubits([here["qubit"]])
                return
        pair = EntangleOk(
            create_id=e2e.request_id,
            sequence_number=e2e.delivered,
            src=e2e.path[0],
            dst=e2e.path[-1],
            bell_state=BellState(here["bell_state"]).label,
            fidelity=here["fidelity"],
            created_at=here["created_at"],
            delivered_at=here["delivered_at"],
            attempts=here["attempts"],
            qubits=(here["qubit"], there.qubit) if keep else None,
            outcomes=None if keep else (here["outcome"], there.outcome),
            bases=None if keep else (here["basis"], there.basis),
            path=list(e2e.path),
        )
        e2e.delivered += 1
        e2e.delivered_ids.append(first)
        if keep:  # whom to tell if a half is lost (cutoff) from now on: EXPIRE
            kept = KeptPair(
                here["qubit"],
                pair.dst,
                e2e.src,
                e2e.request_id,
                pair.sequence_number,
                there.qubit,
                e2e.sink,
                path=True,
            )
            self.node.kept.add(kept)
        self.node.count_end_to_end(e2e, pair)
        e2e.sink.ok(pair)
        if e2e.number > 0 and e2e.delivered >= e2e.number:
            self.finish(e2e, None, "done")

    # ---- ending ----------------------------------------------------------------------

    def finish(self, e2e: EndToEndRequest, error_code: str | None, message: str) -> None:
        """Source: end the request everywhere and tell the client."""
        if e2e.finished:
            return
        end = PathEnd(e2e.src, e2e.request_id, error_code or "done", e2e.delivered_ids)
        for other in e2e.path[1:]:
            self.node.send(other, end)
        self._release(e2e)
        if error_code is None:
            e2e.sink.done(EntangleDone(e2e.request_id, e2e.delivered))
        else:
            e2e.sink.err(EntangleErr(e2e.request_id, error_code, message, delivered=e2e.delivered))

    def on_path_end(self, body: PathEnd) -> None:
        e2e = self.requests.get((body.src, body.request_id))
        if e2e is None:
            return
        delivered = set(body.delivered)  # the client has those; the rest are nobody's
        unclaimed = [qubit for first, qubit in e2e.handed.items() if first not in delivered]
        self._release(e2e, unclaimed)

    def _release(self, e2e: EndToEndRequest, unclaimed: list[int] | None = None) -> None:
        """Forget the request here and free every qubit it still holds."""
        e2e.finished = True
        self.requests.pop(e2e.key, None)
        self.purifier.forget(e2e)
        if e2e.link_request is not None:
            self.node.end_link_for(e2e.link_request)
        held = [h.qubits[1] for h in e2e.left] + [h.qubits[0] for h in e2e.right]
        held += unclaimed or []
        held += [e2e.mine(half) for half in e2e.own.values()]
        for half in e2e.done_here.values():  # source: complete here, never joined by the dst
            if half["qubit"] is not None:
                held.append(half["qubit"])
        e2e.done_here.clear()
        e2e.left.clear()
        e2e.right.clear()
        e2e.own.clear()
        if held:
            self.node.spawn(self.node.release_qubits(held))

    def link_failed(self, key: Key, code: str, message: str) -> None:
        """A link-layer request feeding `key` ended in an error: the request fails."""
        e2e = self.requests.get(key)
        if e2e is None or e2e.finished:
            return
        text = f"link {self.node.name}-{e2e.path[e2e.index + 1]}: {message}"
        if e2e.role == "src":
            self.finish(e2e, code, text)
        else:
            self.node.send(e2e.src, PathFailed(e2e.src, e2e.request_id, code, text))

    def on_path_failed(self, body: PathFailed) -> None:
        e2e = self.requests.get((body.src, body.request_id))
        if e2e is not None and e2e.role == "src":
            self.finish(e2e, body.error_code, body.message)

    def check_deadlines(self, now: float) -> None:
        for e2e in list(self.requests.values()):
            if e2e.role == "src" and now > e2e.deadline:
                self.finish(e2e, "TIMEOUT", f"{e2e.delivered} of {e2e.number} end-to-end pairs")

    async def on_expired(self, expired: list["HeldQubit"]) -> list["HeldQubit"]:
        """Qubits past the cutoff: drop them from requests, tell the ends; returns the rest."""
        by_qubit = {held.qubit: held for held in expired}
        for e2e in list(self.requests.values()):  # (it awaits: requests may come and go)
            lost: list[str] = []
            for queue, mine in ((e2e.left, 1), (e2e.right, 0)):
                for half in list(queue):
                    if half.qubits[mine] in by_qubit:
                        queue.remove(half)
                        lost.append(half.pair_id)
            for pair_id, half in list(e2e.own.items()):
                if e2e.mine(half) in by_qubit:
                    del e2e.own[pair_id]
                    lost.append(pair_id)
            if lost:
                self._tell_lost(e2e, lost)
                stale = self.purifier.drop(e2e, set(lost))
                if stale:
                    await self.node.release_qubits(stale)
        return expired

    def _tell_lost(self, e2e: EndToEndRequest, pair_ids: list[str]) -> None:
        """These link pairs are gone here (cutoff): the ends drop what they joined, and
        the other end of each of my links drops its halves (and their rounds)."""
        e2e.lost.update(pair_ids)
        told = set(e2e.ends)
        for i in e2e.my_links():
            told |= set(e2e.path[i : i + 2])
        for other in told - {self.node.name}:
            self.node.send(other, SegmentBroken(e2e.src, e2e.request_id, pair_ids, "cutoff"))

    async def on_segment_broken(self, body: SegmentBroken) -> None:
        e2e = self.requests.get((body.src, body.request_id))
        if e2e is None or e2e.finished:
            return
        lost = set(body.pair_ids)
        e2e.lost |= lost
        stale = self.purifier.drop(e2e, lost)
        for pair_id in lost:  # my halves of them, not yet in any chain
            half = e2e.own.pop(pair_id, None)
            if half is not None:
                stale.append(e2e.mine(half))
        for queue in (e2e.left, e2e.right):  # repeater: not worth a swap any more
            for half in [h for h in queue if h.pair_id in lost]:
                queue.remove(half)
                stale.append(e2e.mine(half))
        for chain in e2e.tracker.discard(body.pair_ids) if e2e.tracker else []:
            for pair_id in chain.pairs:
                half = e2e.own.pop(pair_id, None)
                if half is not None:
                    stale.append(e2e.mine(half))
        if stale:
            await self.node.release_qubits(stale)

    def stats(self) -> dict[str, Any]:
        roles: dict[str, int] = {}
        for e2e in self.requests.values():
            roles[e2e.role] = roles.get(e2e.role, 0) + 1
        return roles
