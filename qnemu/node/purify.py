"""Purification on one link (DEJMPS), for requests above what the raw link delivers.

The request runs like an end-to-end request over the path [src, dst]: a keep-mode link
request feeds both ends with raw pairs. The destination first brings each raw pair
to Φ+ with a local Pauli (a frame update, noise-free). The source drives every round:
when it holds two pairs of the same round it tells the destination which to keep and
which to sacrifice, both apply Rx(±π/2) to their two halves, CNOT keep → sacrifice and
measure the sacrificed half; the pair is kept when the two outcomes agree. A pair that
has survived `rounds` rounds is delivered as Φ+ like any end-to-end pair.
"""

import logging
import math
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from qnemu.physics.bell import BellState
from qnemu.wire.broker import GateOp, MeasureOp
from qnemu.wire.network import PurifyOutcome, PurifyResult, PurifyStep

if TYPE_CHECKING:
    from qnemu.node.network import EndToEndRequest, LinkHalf, NetworkLayer

__all__ = ["Purifier"]

log = logging.getLogger(__name__)


@dataclass
class _Progress:
    """The source's view of one purified request."""

    rounds_of: dict[str, int] = field(default_factory=dict)  # pair id -> rounds survived
    waiting: dict[int, deque] = field(default_factory=lambda: defaultdict(deque))
    attempts: dict[str, int] = field(default_factory=dict)
    pending: dict[str, tuple[int, str]] = field(default_factory=dict)  # keep -> (outcome, sac)
    ready: set[str] = field(default_factory=set)  # destination: frame-corrected halves
    steps: list[PurifyStep] = field(default_factory=list)  # destination: waiting for halves


class Purifier:
    """DEJMPS rounds for the purified requests of one node."""

    def __init__(self, network: "NetworkLayer"):
        self.network = network
        self.node = network.node
        self._progress: dict[tuple[str, int], _Progress] = {}

    def progress(self, e2e: "EndToEndRequest") -> _Progress:
        return self._progress.setdefault(e2e.key, _Progress())

    def forget(self, e2e: "EndToEndRequest") -> None:
        self._progress.pop(e2e.key, None)

    # ---- both ends: a raw pair arrived -------------------------------------------------

    async def on_own_pair(self, e2e: "EndToEndRequest", half: "LinkHalf") -> None:
        progress = self.progress(e2e)
        if e2e.role == "dst":
            await self._to_phi_plus(half)
            progress.ready.add(half.pair_id)
            await self._run_waiting_steps(e2e)
            return
        progress.rounds_of[half.pair_id] = 0
        progress.attempts[half.pair_id] = half.attempts
        progress.waiting[0].append(half.pair_id)
        await self._step_when_ready(e2e, 0)

    async def _to_phi_plus(self, half: "LinkHalf") -> None:
        state = BellState(half.bell_state)
        ops = []
        if state & 1:  # Ψ: flip the parity
            ops.append(GateOp("X", [half.qubits[1]]))
        if state & 2:  # minus: flip the phase
            ops.append(GateOp("Z", [half.qubits[1]]))
        if ops:
            await self.node.broker_ops(ops)

    # ---- source: drive the rounds ------------------------------------------------------

    async def _step_when_ready(self, e2e: "EndToEndRequest", level: int) -> None:
        progress = self.progress(e2e)
        queue = progress.waiting[level]
        while len(queue) >= 2 and not e2e.finished:
            keep, sacrifice = queue.popleft(), queue.popleft()
            # Our half of the round first, then the step: the destination's outcome can
            # only come back once ours is known.
            outcome = await self._local_round(e2e, keep, sacrifice, sign=+1)
            progress.pending[keep] = (outcome, sacrifice)
            progress.attempts[keep] += progress.attempts.pop(sacrifice, 0)
            self.node.send(e2e.path[1], PurifyStep(e2e.src, e2e.request_id, keep, sacrifice))

    async def _local_round(self, e2e: "EndToEndRequest", keep: str, sacrifice: str, sign: int):
        """This end's half of one DEJMPS round; returns the sacrificed half's outcome."""
        side = 0 if e2e.role == "src" else 1
        keep_qubit = e2e.own[keep].qubits[side]
        sacrificed = e2e.own.pop(sacrifice).qubits[side]
        hardware = self.node.hardware
        single = hardware.single_qubit_gate_depolar_prob
        double = hardware.two_qubit_gate_depolar_prob
        self.node.forget_qubits([sacrificed])
        ops = [
            GateOp("RX", [keep_qubit], angle=sign * math.pi / 2, depolar_prob=single),
            GateOp("RX", [sacrificed], angle=sign * math.pi / 2, depolar_prob=single),
            GateOp("CNOT", [keep_qubit, sacrificed], depolar_prob=double),
            MeasureOp(sacrificed, "Z", readout_error=tuple(hardware.readout_error), free=True),
        ]
        *_, outcome = await self.node.broker_ops(ops)
        return int(outcome)

    async def on_outcome(self, e2e: "EndToEndRequest", body: PurifyOutcome) -> None:
        progress = self.progress(e2e)
        if body.keep_id not in progress.pending:
            return
        mine, _ = progress.pending.pop(body.keep_id)
        level = progress.rounds_of.pop(body.keep_id) + 1
        success = mine == body.outcome
        result = "success" if success else "failure"
        self.node.m_purification.labels(peer=e2e.path[1], result=result).inc()
        final = success and level >= e2e.purify_rounds
        self.node.send(
            e2e.path[1], PurifyResult(e2e.src, e2e.request_id, body.keep_id, success, final)
        )
        if not success:
            await self._discard(e2e, body.keep_id)
        elif final:
            await self._deliver(e2e, body.keep_id, progress.attempts.pop(body.keep_id, 0))
        else:
            progress.rounds_of[body.keep_id] = level
            progress.waiting[level].append(body.keep_id)
            await self._step_when_ready(e2e, level)

    # ---- destination: follow the source ------------------------------------------------

    async def on_step(self, e2e: "EndToEndRequest", body: PurifyStep) -> None:
        self.progress(e2e).steps.append(body)
        await self._run_waiting_steps(e2e)

    async def _run_waiting_steps(self, e2e: "EndToEndRequest") -> None:
        progress = self.progress(e2e)
        while not e2e.finished:
            step = next(
                (s for s in progress.steps if {s.keep_id, s.sacrifice_id} <= progress.ready), None
            )
            if step is None:
                return
            progress.steps.remove(step)
            progress.ready.discard(step.sacrifice_id)
            outcome = await self._local_round(e2e, step.keep_id, step.sacrifice_id, sign=-1)
            reply = PurifyOutcome(e2e.src, e2e.request_id, step.keep_id, outcome)
            self.node.send(e2e.src, reply)

    async def on_result(self, e2e: "EndToEndRequest", body: PurifyResult) -> None:
        if not body.success:
            self.progress(e2e).ready.discard(body.keep_id)
            await self._discard(e2e, body.keep_id)
        elif body.final:
            self.progress(e2e).ready.discard(body.keep_id)
            await self._deliver(e2e, body.keep_id, 0)

    # ---- both ends ---------------------------------------------------------------------

    async def _discard(self, e2e: "EndToEndRequest", pair_id: str) -> None:
        half = e2e.own.pop(pair_id, None)
        if half is not None:
            await self.node.release_qubits([half.qubits[0 if e2e.role == "src" else 1]])

    async def _deliver(self, e2e: "EndToEndRequest", pair_id: str, attempts: int) -> None:
        from qnemu.node.network import EndPair

        half = e2e.own.pop(pair_id, None)
        if half is None:
            return
        pair = EndPair(
            first_pair_id=pair_id,
            qubits=half.qubits,
            bell_state=int(BellState.PHI_PLUS),
            created_at=self.node.clock.now(),
            attempts=attempts,
        )
        await self.network.deliver_end_pair(e2e, pair, self.node.clock.now())
