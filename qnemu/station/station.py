"""The heralding station of one link: it turns both nodes' memory credits into pairs.

While both nodes have granted credits for a request (one credit = one memory slot
ready for a pair), the station samples the number of attempts to the next success
(geometric: the link runs at its physical rate at any attempt frequency), asks the
broker to create the heralded pair state on the two nodes' qubits, and sends each node
its herald, stamped with the emulated moment of success so that the node's fibre delay
counts from there. Concurrent requests take turns (round robin, one batch each); the
link does one attempt at a time.
"""

import asyncio
import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from prometheus_client import Counter, Gauge
from pydantic import ValidationError

from qnemu.physics.bell import BellState
from qnemu.physics.links import LinkPhysics
from qnemu.runtime import EmulatedClock, Origin, Service, ServiceAddress
from qnemu.wire import Envelope
from qnemu.wire.broker import CreatePairOp, FreeOp, OpsReply, OpsRequest
from qnemu.wire.common import ErrorReply
from qnemu.wire.link import GenerateCancel, GenerateCredit, Herald, HeraldedPair

__all__ = ["MemoryParameters", "StationService"]

log = logging.getLogger(__name__)
MAX_PAIRS_PER_BATCH = 512
# Emulated seconds before a success at which its pair is created at the broker (longer
# than a broker round trip on a busy machine; shorter than the broker lets a pair be
# dated ahead, `qnemu.broker.server.CREATE_AHEAD_MAX_S`).
CREATE_AHEAD_S = 0.05
CANCELLED_REMEMBERED = 10_000  # requests whose late credits are ignored


@dataclass(frozen=True)
class MemoryParameters:
    """T1/T2 of the memory a node stores its half of a pair in (None: no decay)."""

    t1_s: float | None = None
    t2_s: float | None = None


@dataclass
class _Generation:
    initiator: str
    create_id: int
    credits: dict[str, int] = field(default_factory=dict)
    next_sequence_number: int = 0

    def ready(self, nodes: tuple[str, str]) -> int:
        return min(self.credits.get(node, 0) for node in nodes)


@dataclass(frozen=True, slots=True)
class _Success:
    created_at: float
    attempts: int
    bell_state: BellState


class StationService(Service):
    """A heralding station between `nodes[0]` and `nodes[1]` (the link's order)."""

    role = "station"

    def __init__(
        self,
        name: str,
        address: ServiceAddress,
        clock: EmulatedClock,
        *,
        link_name: str,
        nodes: tuple[str, str],
        physics: LinkPhysics,
        memories: dict[str, MemoryParameters],
        link: Any = None,  # its topology model: `qnemu fault set` changes its parameters
        broker: str = "broker",
        seed: int | None = None,
        **kwargs: Any,
    ):
        super().__init__(name, address, clock, **kwargs)
        self.link_name = link_name
        self.nodes = nodes
        self.link = self.configured_link = link
        self.configured_physics = physics
        self.memories = memories
        self.paused = False  # the fibre is cut: no attempt can succeed
        self.eavesdrop_fraction = 0.0  # intercept-resend on node_b's half
        self.broker = broker
        self.rng = np.random.default_rng(seed)
        self._use_physics(physics)
        self._generations: OrderedDict[tuple[str, int], _Generation] = OrderedDict()
        self._cancelled: OrderedDict[tuple[str, int], None] = OrderedDict()
        self._wake = asyncio.Event()
        self._link_free_at = 0.0
        self._sampled: tuple[float, int] | None = None  # the next success, drawn ahead
        self.total_attempts = 0
        self.total_pairs = 0
        self.handlers[GenerateCredit.msg_type] = self._on_credit
        self.handlers[GenerateCancel.msg_type] = self._on_cancel
        labels = {"link": link_name}
        self.attempts = Counter(
            "qnemu_link_attempts",
            "Entanglement attempts made on the link.",
            ["link"],
            registry=self.registry,
        ).labels(**labels)
        self.pairs = Counter(
            "qnemu_link_pairs_generated",
            "Heralded pairs generated on the link.",
            ["link"],
            registry=self.registry,
        ).labels(**labels)
        Gauge(
            "qnemu_link_success_probability",
            "Success probability of one attempt, from the link physics.",
            ["link"],
            registry=self.registry,
        ).labels(**labels).set(physics.success_probability)
        Gauge(
            "qnemu_link_expected_fidelity",
            "Fidelity of a heralded pair at creation, from the link physics.",
            ["link"],
            registry=self.registry,
        ).labels(**labels).set(physics.fidelity)
        self.m_faults = Gauge(
            "qnemu_link_faults_active",
            "Faults emulated on the link now (cut, set_link: 1 when active; eavesdrop: fraction).",
            ["link", "kind"],
            registry=self.registry,
        )
        self.active = Gauge(
            "qnemu_link_active_requests",
            "Generation requests the station is serving.",
            ["link"],
            registry=self.registry,
        ).labels(**labels)

    async def start(self) -> None:
        await super().start()
        self._link_free_at = self.started_at = self.clock.now()
        self.ready = True

    # ---- requests from the nodes -----------------------------------------------------

    def _on_credit(self, envelope: Envelope, origin: Origin) -> None:
        credit: GenerateCredit = envelope.body
        sender = envelope.header.sender
        problem = self._check_parties(sender, credit.initiator, credit.peer)
        if problem is None and credit.credits < 0:
            problem = f"credits must be >= 0, got {credit.credits}"
        if problem is not None:
            self.reply(origin, ErrorReply("bad_request", problem), parent_id=envelope.header.msg_id)
            return
        key = (credit.initiator, credit.create_id)
        if key in self._cancelled:
            return  # a credit that crossed the cancel on the wire
        generation = self._generations.get(key)
        if generation is None:
            generation = self._generations[key] = _Generation(credit.initiator, credit.create_id)
        generation.credits[sender] = generation.credits.get(sender, 0) + credit.credits
        self.active.set(len(self._generations))
        self._wake.set()

    def _on_cancel(self, envelope: Envelope, origin: Origin) -> None:
        cancel: GenerateCancel = envelope.body
        key = (cancel.initiator, cancel.create_id)
        self._generations.pop(key, None)
        self._cancelled[key] = None
        while len(self._cancelled) > CANCELLED_REMEMBERED:
            self._cancelled.popitem(last=False)
        self.active.set(len(self._generations))

    def _check_parties(self, sender: str, initiator: str, peer: str) -> str | None:
        if sender not in self.nodes:
            return f"{sender!r} is not an end of link {self.link_name}"
        if {sender, peer} != set(self.nodes) or initiator not in self.nodes:
            return f"request between {sender!r} and {peer!r} is not on link {self.link_name}"
        return None

    # ---- generation ------------------------------------------------------------------

    def _use_physics(self, physics: LinkPhysics) -> None:
        self.physics = physics
        self._state_bytes = {
            state: _as_bytes(physics.delivered_state(state)) for state in physics.herald_bell_states
        }
        # What an intercept-resend eavesdropper leaves: node_b's half measured (unread)
        # in Z or X, i.e. fully dephased in that basis.
        self._intercepted_bytes = {
            (state, basis): _as_bytes(_dephase_second(physics.delivered_state(state), basis))
            for state in physics.herald_bell_states
            for basis in ("Z", "X")
        }

    def apply_fault(self, kind: str, target: str | None, parameters: dict[str, Any]) -> None:
        """Besides the classical faults: cut the link, change it, or add an eavesdropper."""
        if kind in ("cut", "restore") and target is None:
            self.paused = kind == "cut"
            for node in self.nodes:
                super().apply_fault(kind, node, {})
            if not self.paused:
                self._wake.set()
            self.m_faults.labels(link=self.link_name, kind="cut").set(int(self.paused))
        elif kind == "set_link":
            if self.link is None:
                raise ValueError("this station was started without its link's model")
            try:
                changed = type(self.link).model_validate({**self.link.model_dump(), **parameters})
            except ValidationError as error:
                first = error.errors()[0]
                where = ".".join(str(part) for part in first["loc"])
                raise ValueError(f"{where}: {first['msg']}") from None
            self._use_physics(changed.physics())  # ValueError names a bad parameter
            self.link = changed
            self.m_faults.labels(link=self.link_name, kind="set_link").set(
                int(self.link != self.configured_link)
            )
        elif kind == "eavesdrop":
            fraction = float(parameters.get("fraction", 1.0))
            if not 0.0 <= fraction <= 1.0:
                raise ValueError(f"fraction must be in [0, 1], got {fraction}")
            self.eavesdrop_fraction = fraction
            self.m_faults.labels(link=self.link_name, kind="eavesdrop").set(fraction)
        elif kind == "clear":
            super().apply_fault(kind, target, parameters)
            self.paused, self.eavesdrop_fraction = False, 0.0
            self.link = self.configured_link
            self._use_physics(self.configured_physics)
            for fault in ("cut", "set_link", "eavesdrop"):
                self.m_faults.labels(link=self.link_name, kind=fault).set(0)
            self._wake.set()
        else:
            super().apply_fault(kind, target, parameters)

    def describe_faults(self) -> dict[str, Any]:
        return {
            **super().describe_faults(),
            "link_cut": self.paused,
            "eavesdrop_fraction": self.eavesdrop_fraction,
            "link_changed": self._link_changes(),
            "success_probability": self.physics.success_probability,
            "fidelity": self.physics.fidelity,
        }

    def _link_changes(self) -> dict[str, Any]:
        """The link parameters a `set_link` fault changed: name -> value now."""
        if self.link is None or self.link == self.configured_link:
            return {}
        now, configured = self.link.model_dump(), self.configured_link.model_dump()
        return {key: value for key, value in now.items() if configured.get(key) != value}

    def _next_generation(self) -> _Generation | None:
        if self.paused:
            return None
        for generation in self._generations.values():
            if generation.ready(self.nodes) > 0:
                return generation
        return None

    async def main(self) -> None:
        while True:
            generation = self._next_generation()
            if generation is None:
                self._wake.clear()
                await self._wake.wait()
                # The link stopped attempting while idle: start afresh from now.
                self._link_free_at = max(self._link_free_at, self.clock.now())
                self._sampled = None
                continue
            successes, ahead = await self._attempt_until_success(generation)
            key = (generation.initiator, generation.create_id)
            if self._generations.get(key) is not generation:
                # Cancelled while we were attempting: those attempts were wasted.
                if ahead is not None:
                    self.spawn(self._discard(ahead))
                continue
            await self._deliver(generation, successes, ahead)
            if key in self._generations:  # it may have been cancelled meanwhile
                self._generations.move_to_end(key)  # round robin: no request starves another

    def _next_success(self) -> tuple[float, int]:
        """The next success after the last one: a sample drawn earlier but not yet reached
        is kept, never redrawn (redrawing the long waits would bias the rate upwards)."""
        if self._sampled is not None:
            sampled, self._sampled = self._sampled, None
            return sampled
        attempts = self.physics.sample_attempts(self.rng)
        return self._link_free_at + attempts * self.physics.attempt_period_s, attempts

    async def _attempt_until_success(
        self, generation: _Generation
    ) -> tuple[list[_Success], asyncio.Task | None]:
        """Wait for the next success, and take every further one already due.

        A success still ahead has its pair created at the broker shortly before it (the
        task returned), so that its herald leaves at the success, not a broker round trip
        later: at metro distances that round trip is longer than the fibre."""
        budget = min(generation.ready(self.nodes), MAX_PAIRS_PER_BATCH)
        success_at, attempts = self._next_success()
        first = _Success(success_at, attempts, self.physics.sample_bell_state(self.rng))
        ahead = None
        if success_at > self.clock.now():
            await self.clock.sleep_until(success_at - CREATE_AHEAD_S)
            ahead = asyncio.ensure_future(
                self.request(self.broker, OpsRequest([self._pair_op(first)]))
            )
            await self.clock.sleep_until(success_at)
        self._link_free_at = success_at
        successes = [first]
        now = self.clock.now()
        while len(successes) < budget:
            next_at, attempts = self._next_success()
            if next_at > now:
                self._sampled = (next_at, attempts)  # not yet: keep it for the next round
                break
            self._link_free_at = success_at = next_at
            successes.append(
                _Success(success_at, attempts, self.physics.sample_bell_state(self.rng))
            )
        return successes, ahead

    def _pair_op(self, success: _Success) -> CreatePairOp:
        memory_a, memory_b = (self.memories[node] for node in self.nodes)
        state = self._state_bytes[success.bell_state]
        if self.eavesdrop_fraction and self.rng.random() < self.eavesdrop_fraction:
            basis = "Z" if self.rng.random() < 0.5 else "X"
            state = self._intercepted_bytes[(success.bell_state, basis)]
        return CreatePairOp(
            owners=self.nodes,
            state=state,
            created_at=success.created_at,
            t1_s=(memory_a.t1_s, memory_b.t1_s),
            t2_s=(memory_a.t2_s, memory_b.t2_s),
        )

    def _created(self, reply: Envelope) -> list[list[int]] | None:
        body = reply.body
        if not isinstance(body, OpsReply) or body.error is not None:
            log.error("%s: broker refused pairs: %s", self.name, body)
            return None
        return list(body.results)

    async def _discard(self, ahead: asyncio.Task) -> None:
        """Free a pair created ahead for a success no request will get."""
        created = self._created(await ahead)
        if created:
            ((qubit_a, qubit_b),) = created
            await self.request(self.broker, OpsRequest([FreeOp(qubit_a), FreeOp(qubit_b)]))

    async def _deliver(
        self, generation: _Generation, successes: list[_Success], ahead: asyncio.Task | None
    ) -> None:
        node_a, node_b = self.nodes
        created: list[list[int]] = []
        rest = successes
        if ahead is not None:  # the first success's pair, created before it
            first = self._created(await ahead)
            if first is None:
                return
            created, rest = first, successes[1:]
        if rest:
            more = self._created(
                await self.request(self.broker, OpsRequest([self._pair_op(s) for s in rest]))
            )
            if more is None:
                if ahead is not None:
                    self.spawn(self._discard(ahead))
                return
            created += more
        for node in self.nodes:
            generation.credits[node] -= len(successes)
        attempts = sum(success.attempts for success in successes)
        self.attempts.inc(attempts)
        self.pairs.inc(len(successes))
        self.total_attempts += attempts
        self.total_pairs += len(successes)
        heralds: dict[str, list[HeraldedPair]] = {node_a: [], node_b: []}
        for success, (qubit_a, qubit_b) in zip(successes, created, strict=True):
            sequence_number = generation.next_sequence_number
            generation.next_sequence_number += 1
            common = dict(
                sequence_number=sequence_number,
                bell_state=int(success.bell_state),
                created_at=success.created_at,
                attempts=success.attempts,
                fidelity=self.physics.fidelity,
            )
            heralds[node_a].append(HeraldedPair(qubit=qubit_a, peer_qubit=qubit_b, **common))
            heralds[node_b].append(HeraldedPair(qubit=qubit_b, peer_qubit=qubit_a, **common))
        # One herald message per node per batch, stamped with its last success, so that
        # no pair reaches a node before the physics would let it.
        for node, pairs in heralds.items():
            herald = Herald(generation.initiator, generation.create_id, pairs)
            self.send(node, herald, sent_at=successes[-1].created_at)

    def stats(self) -> dict[str, Any]:
        return {
            **super().stats(),
            "link": self.link_name,
            "attempts": self.total_attempts,
            "pairs": self.total_pairs,
            "success_probability": self.physics.success_probability,
            "expected_fidelity": self.physics.fidelity,
            "expected_rate_hz": self.physics.expected_rate_hz,
            "uptime_s": self.clock.now() - self.started_at,
            "active_requests": len(self._generations),
            "faults": self.describe_faults(),  # nodes watch their links' faults (linkwatch)
        }


def _as_bytes(state: np.ndarray) -> bytes:
    return np.ascontiguousarray(state, dtype="<c16").tobytes()


_HADAMARD = np.array([[1, 1], [1, -1]]) / np.sqrt(2)


def _dephase_second(state: np.ndarray, basis: str) -> np.ndarray:
    """The pair after the second qubit is measured in `basis` and the result discarded."""
    change = np.kron(np.eye(2), _HADAMARD if basis == "X" else np.eye(2))
    rotated = change @ state @ change.conj().T
    projectors = [np.kron(np.eye(2), np.diag([1.0, 0.0])), np.kron(np.eye(2), np.diag([0.0, 1.0]))]
    dephased = sum(p @ rotated @ p for p in projectors)
    return change.conj().T @ dephased @ change
