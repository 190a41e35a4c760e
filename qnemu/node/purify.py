"""Purification of one link's pairs (DEJMPS or BBPSSW), before they are swapped or delivered.

A request whose plan purifies link i (`EndToEndRequest.rounds[i] > 0`) runs the rounds
between the two ends of that link, on the raw pairs its keep-mode link request brings:

- the right end first brings each raw pair to Φ+ with a local Pauli (a frame update);
- the left end drives: when it holds two pairs that survived the same number of rounds,
  it does its half of a round (below) and sends `purify_step` (keep, sacrifice); the
  right end does its half and answers `purify_outcome`; the left end compares the two
  outcomes of the sacrificed pair (agree: success) and sends `purify_result`;
- a round's half: DEJMPS, Rx(π/2) on both my qubits (Rx(−π/2) at the right end);
  BBPSSW, the twirl element the left end chose at random for each pair and announced in
  the step (U at the left end, U* at the right). Then CNOT kept → sacrificed and a
  Z measurement of the sacrificed qubit, at the broker, with the node's gate noise and
  readout error;
- a pair that survived its link's rounds (BBPSSW: twirled once more, the element in the
  final result) goes back to the network layer as a Φ+ link pair: a repeater swaps it,
  an end node joins it into the end-to-end pair (on a one-link path, delivers it).

The twirl is honest only as an ensemble: each pair gets one random rotation that the
nodes then ignore, so a single pair is a permuted Bell-diagonal state, and the Werner
map (and the swap chain formula) hold for averages over many pairs.
"""

import logging
import math
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from qnemu.physics.purification import TWIRLS, twirl_gates
from qnemu.wire.broker import GateOp, MeasureOp
from qnemu.wire.network import PurifyOutcome, PurifyResult, PurifyStep

if TYPE_CHECKING:
    from qnemu.node.network import EndToEndRequest, LinkHalf, NetworkLayer

__all__ = ["Purifier"]

log = logging.getLogger(__name__)
LOST = -1  # the outcome the right end reports for a round it could not run


@dataclass
class _Link:
    """One purified link of one request, as one of its two ends sees it."""

    index: int
    left: bool  # this node is the link's left end: it drives the rounds
    peer: str
    rounds: int
    # left end
    level_of: dict[str, int] = field(default_factory=dict)  # pair id -> rounds survived
    waiting: dict[int, deque] = field(default_factory=lambda: defaultdict(deque))
    attempts: dict[str, int] = field(default_factory=dict)  # raw attempts in each pair
    pending: dict[str, tuple[int, str]] = field(default_factory=dict)  # keep -> (outcome, sac)
    # right end
    ready: set[str] = field(default_factory=set)  # pairs brought to Φ+
    steps: list[PurifyStep] = field(default_factory=list)  # waiting for their heralds
    lost: set[str] = field(default_factory=set)  # dropped (cutoff): a step naming one fails


class Purifier:
    """The purification rounds of every request on one node's links."""

    def __init__(self, network: "NetworkLayer"):
        self.network = network
        self.node = network.node
        self._links: dict[tuple[tuple[str, int], int], _Link] = {}

    def link(self, e2e: "EndToEndRequest", index: int) -> _Link:
        key = (e2e.key, index)
        if key not in self._links:
            left = e2e.path[index] == self.node.name
            peer = e2e.path[index + 1] if left else e2e.path[index]
            self._links[key] = _Link(index, left, peer, e2e.rounds[index])
        return self._links[key]

    def forget(self, e2e: "EndToEndRequest") -> None:
        for key in [key for key in self._links if key[0] == e2e.key]:
            del self._links[key]

    # ---- both ends: a raw pair arrived -------------------------------------------------

    async def on_link_pair(self, e2e: "EndToEndRequest", half: "LinkHalf") -> None:
        """A raw pair of a purified link is in e2e.own."""
        link = self.link(e2e, half.link_index)
        if not link.left:
            await self._to_phi_plus(half)
            link.ready.add(half.pair_id)
            await self._run_waiting_steps(e2e, link)
            return
        link.level_of[half.pair_id] = 0
        link.attempts[half.pair_id] = half.attempts
        link.waiting[0].append(half.pair_id)
        await self._step_when_ready(e2e, link, 0)

    async def _to_phi_plus(self, half: "LinkHalf") -> None:
        ops = []
        if half.bell_state & 1:  # Ψ: flip the parity
            ops.append(GateOp("X", [half.qubits[1]]))
        if half.bell_state & 2:  # minus: flip the phase
            ops.append(GateOp("Z", [half.qubits[1]]))
        if ops:
            await self.node.broker_ops(ops)

    # ---- left end: drive the rounds ----------------------------------------------------

    async def _step_when_ready(self, e2e: "EndToEndRequest", link: _Link, level: int) -> None:
        queue = link.waiting[level]
        while len(queue) >= 2 and not e2e.finished:
            keep, sacrifice = queue.popleft(), queue.popleft()
            twirls = []
            if e2e.protocol == "bbpssw":
                twirls = [int(self.node.rng.integers(TWIRLS)) for _ in range(2)]
            # Our half of the round first, then the step: the right end's outcome can
            # only come back once ours is known.
            outcome = await self._local_round(e2e, link, keep, sacrifice, twirls)
            if outcome is None:  # one was lost meanwhile: the other waits for a new partner
                queue.extendleft(p for p in (sacrifice, keep) if p in e2e.own)
                continue
            link.pending[keep] = (outcome, sacrifice)
            link.attempts[keep] = link.attempts.get(keep, 0) + link.attempts.pop(sacrifice, 0)
            step = PurifyStep(e2e.src, e2e.request_id, keep, sacrifice, link.index, twirls)
            self.node.send(link.peer, step)

    async def _local_round(
        self, e2e: "EndToEndRequest", link: _Link, keep: str, sacrifice: str, twirls: list[int]
    ) -> int | None:
        """This end's half of one round; the sacrificed half's outcome (None: gone)."""
        side = 0 if link.left else 1
        if keep not in e2e.own or sacrifice not in e2e.own:
            return None
        keep_qubit = e2e.own[keep].qubits[side]
        sacrificed = e2e.own.pop(sacrifice).qubits[side]
        hardware = self.node.hardware
        single = hardware.single_qubit_gate_depolar_prob
        ops: list = []
        if e2e.protocol == "dejmps":
            angle = math.pi / 2 if link.left else -math.pi / 2
            for qubit in (keep_qubit, sacrificed):
                ops.append(GateOp("RX", [qubit], angle=angle, depolar_prob=single))
        else:
            ops += self._twirl_ops(keep_qubit, twirls[0], side)
            ops += self._twirl_ops(sacrificed, twirls[1], side)
        self.node.forget_qubits([sacrificed])
        ops += [
            GateOp(
                "CNOT",
                [keep_qubit, sacrificed],
                depolar_prob=hardware.two_qubit_gate_depolar_prob,
            ),
            MeasureOp(sacrificed, "Z", readout_error=tuple(hardware.readout_error), free=True),
        ]
        *_, outcome = await self.node.broker_ops(ops)
        return int(outcome)

    def _twirl_ops(self, qubit: int, index: int, side: int) -> list[GateOp]:
        single = self.node.hardware.single_qubit_gate_depolar_prob
        return [
            GateOp(name, [qubit], angle=angle, depolar_prob=single)
            for name, angle in twirl_gates(index, side)
        ]

    async def on_outcome(self, e2e: "EndToEndRequest", body: PurifyOutcome) -> None:
        link = self.link(e2e, body.link_index)
        if not link.left or body.keep_id not in link.pending:
            return
        mine, _ = link.pending.pop(body.keep_id)
        level = link.level_of.pop(body.keep_id, 0) + 1
        # A pair lost at either end meanwhile (cutoff) fails the round at both ends.
        lost = body.outcome == LOST or body.keep_id not in e2e.own
        success = mine == body.outcome and not lost
        result = "lost" if lost else "success" if success else "failure"
        self.node.m_purification.labels(peer=link.peer, result=result).inc()
        final = success and level >= link.rounds
        attempts = link.attempts.pop(body.keep_id, 0) if final or not success else 0
        twirl = None
        if final and e2e.protocol == "bbpssw":
            twirl = int(self.node.rng.integers(TWIRLS))
        result_body = PurifyResult(
            e2e.src, e2e.request_id, body.keep_id, success, final, link.index, attempts, twirl
        )
        self.node.send(link.peer, result_body)
        if not success:
            await self._discard(e2e, link, body.keep_id)
        elif final:
            await self._purified(e2e, link, body.keep_id, attempts, twirl)
        else:
            link.level_of[body.keep_id] = level
            link.waiting[level].append(body.keep_id)
            await self._step_when_ready(e2e, link, level)

    # ---- right end: follow the left end ------------------------------------------------

    async def on_step(self, e2e: "EndToEndRequest", body: PurifyStep) -> None:
        link = self.link(e2e, body.link_index)
        if link.left:
            return
        if e2e.protocol == "bbpssw" and (
            len(body.twirls) != 2 or not all(0 <= t < TWIRLS for t in body.twirls)
        ):
            log.warning("%s: purify_step without two twirl elements: %s", self.node.name, body)
            return
        link.steps.append(body)
        await self._run_waiting_steps(e2e, link)

    async def _run_waiting_steps(self, e2e: "EndToEndRequest", link: _Link) -> None:
        for step in [s for s in link.steps if {s.keep_id, s.sacrifice_id} & link.lost]:
            link.steps.remove(step)
            await self._cannot_run(e2e, link, step)
        while not e2e.finished:
            step = next((s for s in link.steps if {s.keep_id, s.sacrifice_id} <= link.ready), None)
            if step is None:
                return
            link.steps.remove(step)
            link.ready.discard(step.sacrifice_id)
            outcome = await self._local_round(
                e2e, link, step.keep_id, step.sacrifice_id, list(step.twirls)
            )
            if outcome is None:
                await self._cannot_run(e2e, link, step)
                continue
            reply = PurifyOutcome(e2e.src, e2e.request_id, step.keep_id, outcome, link.index)
            self.node.send(link.peer, reply)

    async def _cannot_run(self, e2e: "EndToEndRequest", link: _Link, step: PurifyStep) -> None:
        """A pair of this step is gone here (cutoff): drop the other, and answer LOST so
        the left end fails the round instead of waiting for an outcome forever."""
        freed = self.drop(e2e, {step.keep_id, step.sacrifice_id})
        if freed:
            await self.node.release_qubits(freed)
        reply = PurifyOutcome(e2e.src, e2e.request_id, step.keep_id, LOST, link.index)
        self.node.send(link.peer, reply)

    async def on_result(self, e2e: "EndToEndRequest", body: PurifyResult) -> None:
        link = self.link(e2e, body.link_index)
        if link.left:
            return
        if not body.success:
            link.ready.discard(body.keep_id)
            await self._discard(e2e, link, body.keep_id)
        elif body.final:
            if body.twirl is not None and not 0 <= body.twirl < TWIRLS:
                return
            link.ready.discard(body.keep_id)
            await self._purified(e2e, link, body.keep_id, body.attempts, body.twirl)

    # ---- both ends ---------------------------------------------------------------------

    async def _discard(self, e2e: "EndToEndRequest", link: _Link, pair_id: str) -> None:
        half = e2e.own.pop(pair_id, None)
        if half is not None:
            await self.node.release_qubits([half.qubits[0 if link.left else 1]])

    async def _purified(
        self, e2e: "EndToEndRequest", link: _Link, pair_id: str, attempts: int, twirl: int | None
    ) -> None:
        """The pair survived every round: hand it back to the network layer as Φ+."""
        from qnemu.node.network import LinkHalf

        half = e2e.own.pop(pair_id, None)
        if half is None:
            return
        side = 0 if link.left else 1
        if twirl is not None:
            await self.node.broker_ops(self._twirl_ops(half.qubits[side], twirl, side))
        now = self.node.clock.now()
        purified = LinkHalf(pair_id, half.link_index, 0, half.qubits, attempts, now)
        await self.network.accept_link_half(e2e, purified, now)

    def drop(self, e2e: "EndToEndRequest", pair_ids: set[str]) -> list[int]:
        """Pairs lost at either end of their link (cutoff): forget them, and fail every
        round they were part of; returns my qubits to free."""
        freed: list[int] = []
        for (key, _), link in self._links.items():
            if key != e2e.key:
                continue
            side = 0 if link.left else 1
            lost = set(pair_ids)
            for keep, (_, sacrifice) in list(link.pending.items()):
                if keep in lost or sacrifice in lost:
                    del link.pending[keep]
                    lost.add(keep)
            for step in list(link.steps):
                if step.keep_id in lost or step.sacrifice_id in lost:
                    link.steps.remove(step)
                    lost |= {step.keep_id, step.sacrifice_id}
            for queue in link.waiting.values():
                for pair_id in [p for p in queue if p in lost]:
                    queue.remove(pair_id)
            link.lost |= lost
            for pair_id in lost:
                link.level_of.pop(pair_id, None)
                link.attempts.pop(pair_id, None)
                link.ready.discard(pair_id)
                half = e2e.own.get(pair_id)
                if half is not None and half.link_index == link.index:
                    del e2e.own[pair_id]
                    freed.append(half.qubits[side])
        return freed
