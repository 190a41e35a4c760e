"""The purification protocol between the two ends of a link, in one process.

Two `Purifier`s (left end a, right end b) run against one in-process broker; their
messages are handed over directly (no sockets, no delay). This checks the protocol's
bookkeeping: both ends agree on every round, survivors come out as the same pair at both
ends, and a round that lost a pair fails at both ends and leaks nothing.
"""

import asyncio
import math
from types import SimpleNamespace

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, Counter

from qnemu.broker.server import BrokerService
from qnemu.broker.store import StateStore
from qnemu.node.network import EndToEndRequest, LinkHalf
from qnemu.node.purify import Purifier
from qnemu.physics.bell import BellState, bell_vector, werner_state
from qnemu.runtime import EmulatedClock, ServiceAddress
from qnemu.topology.models import NodeConfig
from qnemu.wire.broker import FidelityOp, FreeOp, OpsRequest
from qnemu.wire.network import PurifyOutcome, PurifyResult, PurifyStep

RAW_F = 0.8


class FakeNode:
    """What a Purifier uses of a node: the broker, the classical channel, a counter."""

    def __init__(self, name: str, broker: BrokerService, outbox: list, seed: int):
        self.name = name
        self.broker = broker
        self.outbox = outbox
        self.hardware = NodeConfig()
        self.rng = np.random.default_rng(seed)
        self.clock = SimpleNamespace(now=lambda: 0.0)
        self.registry = CollectorRegistry()
        self.m_purification = Counter("rounds", "", ["peer", "result"], registry=self.registry)
        self.freed: list[int] = []

    def send(self, to: str, body) -> None:
        self.outbox.append((self.name, to, body))

    async def broker_ops(self, ops: list) -> list:
        reply = self.broker.execute(OpsRequest(ops), self.name, 0.0)
        assert reply.error is None, reply.error
        return reply.results

    def forget_qubits(self, qubits: list[int]) -> None:
        pass

    async def release_qubits(self, qubits: list[int]) -> None:
        self.freed += qubits
        await self.broker_ops([FreeOp(q) for q in qubits])

    def rounds(self, result: str) -> float:
        labels = {"peer": "a" if self.name == "b" else "b", "result": result}
        return self.registry.get_sample_value("rounds_total", labels) or 0.0


class FakeNetwork:
    """Collects the pairs that come out of purification."""

    def __init__(self, node: FakeNode):
        self.node = node
        self.purified: dict[str, LinkHalf] = {}

    async def accept_link_half(self, e2e, half: LinkHalf, now: float) -> None:
        self.purified[half.pair_id] = half


class Link:
    """The two ends of link a-b for one request with `rounds` rounds of `protocol`."""

    def __init__(self, protocol: str, rounds: int, seed: int = 1):
        self.broker = BrokerService(
            "broker", ServiceAddress("inproc://purify"), EmulatedClock(0.0, 1.0),
            store=StateStore(seed=seed),
        )  # fmt: skip
        self.outbox: list = []
        self.ends = {}
        for index, name in enumerate("ab"):
            node = FakeNode(name, self.broker, self.outbox, seed + index)
            network = FakeNetwork(node)
            e2e = EndToEndRequest(
                src="a", request_id=1, path=("a", "b"), index=index, type="keep",
                basis="random", rounds=(rounds,), protocol=protocol,
            )  # fmt: skip
            self.ends[name] = SimpleNamespace(
                node=node, network=network, e2e=e2e, purifier=Purifier(network)
            )
        self.count = 0

    async def new_pair(self, bell: BellState = BellState.PHI_PLUS) -> str:
        """A heralded Werner pair around `bell`, at both ends."""
        qa, qb = self.broker.store.create_pair(("a", "b"), werner_state(RAW_F, bell), 0.0)
        self.count += 1
        pair_id = f"a:1:{self.count}"
        half = LinkHalf(pair_id, 0, int(bell), (qa, qb), 1, 0.0)
        for end in self.ends.values():
            end.e2e.own[pair_id] = half
            await end.purifier.on_link_pair(end.e2e, half)
        return pair_id

    async def deliver(self) -> None:
        """Hand over every message until none is left."""
        handlers = {PurifyStep: "on_step", PurifyOutcome: "on_outcome", PurifyResult: "on_result"}
        while self.outbox:
            _, to, body = self.outbox.pop(0)
            end = self.ends[to]
            await getattr(end.purifier, handlers[type(body)])(end.e2e, body)

    def fidelity(self, half: LinkHalf) -> float:
        target = bell_vector(BellState.PHI_PLUS)
        op = FidelityOp(list(half.qubits), target.real.tolist(), target.imag.tolist())
        return self.broker.execute(OpsRequest([op]), "a", 0.0).results[0]


@pytest.mark.parametrize("protocol", ["dejmps", "bbpssw"])
def test_both_ends_agree_on_every_round_and_survivors_have_the_closed_form(protocol):
    e = (1 - RAW_F) / 3
    success = RAW_F**2 + 2 * RAW_F * e + 5 * e**2
    closed = (RAW_F**2 + e**2) / success

    async def run() -> Link:
        link = Link(protocol, rounds=1)
        for i in range(400):
            await link.new_pair(BellState(i % 4))  # the right end brings each to Φ+
            await link.deliver()
        return link

    link = asyncio.run(run())
    a, b = link.ends["a"], link.ends["b"]
    assert a.network.purified.keys() == b.network.purified.keys()
    wins, losses = a.node.rounds("success"), a.node.rounds("failure")
    assert wins + losses == 200 and wins == len(a.network.purified)
    sigma = math.sqrt(200 * success * (1 - success))
    assert abs(wins - 200 * success) < 5 * sigma
    for pair_id, half in a.network.purified.items():
        assert half.bell_state == int(BellState.PHI_PLUS)
        assert b.network.purified[pair_id].qubits == half.qubits
        assert link.fidelity(half) == pytest.approx(closed, abs=1e-9)
    # The only qubits left are the survivors' (sacrificed ones were measured and freed).
    assert link.broker.store.qubit_count == 2 * len(a.network.purified)


def test_a_round_that_lost_a_pair_at_the_right_end_fails_at_both_ends():
    async def run() -> Link:
        link = Link("dejmps", rounds=1)
        keep = await link.new_pair()
        sacrifice = await link.new_pair()  # the left end does its half and sends the step
        (step,) = [body for _, _, body in link.outbox]
        assert (step.keep_id, step.sacrifice_id) == (keep, sacrifice)
        # Before the step arrives, the right end drops the sacrificed pair (cutoff).
        right = link.ends["b"]
        half = right.e2e.own.pop(sacrifice)
        await right.node.release_qubits([half.qubits[1]])
        assert right.purifier.drop(right.e2e, {sacrifice}) == []
        await link.deliver()
        return link

    link = asyncio.run(run())
    a, b = link.ends["a"], link.ends["b"]
    assert a.node.rounds("lost") == 1 and a.node.rounds("success") == 0
    assert not a.network.purified and not b.network.purified
    assert not a.e2e.own and not b.e2e.own
    assert link.broker.store.qubit_count == 0  # every half freed, at both ends
