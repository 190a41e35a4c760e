"""The link layer's EXPIRE: two nodes in one process, a hand-driven wire, no sockets.

Alice initiates keep-mode CREATEs to Bob through station s. The test plays the station
(heralds) and the fibre (it hands each sent message to its receiver when told to), so
it can cut the fibre while Bob's reports are in flight.
"""

import math
from types import SimpleNamespace

import pytest

from qnemu.node.apps import NodeApps, _Session
from qnemu.node.expiry import HeldNotices, KeptPair, KeptPairs
from qnemu.node.memory import HeldQubit
from qnemu.node.requests import LinkRequest, LocalHalf
from qnemu.node.service import Neighbour, NodeService
from qnemu.runtime import EmulatedClock, ServiceAddress
from qnemu.topology.models import NodeConfig
from qnemu.wire import decode, encode
from qnemu.wire.app import AppOp, AppSubroutineRequest
from qnemu.wire.broker import FidelityOp, FreeOp
from qnemu.wire.control import EntangleExpire, EntangleRequest
from qnemu.wire.link import Herald, HeraldedPair, PairExpire, PairReport

STATION = "s"


class Sink:
    def __init__(self):
        self.oks, self.errs, self.dones, self.expires = [], [], [], []

    def ok(self, pair):
        self.oks.append(pair)

    def err(self, error):
        self.errs.append(error)

    def done(self, done):
        self.dones.append(done)

    def expire(self, expire: EntangleExpire):
        self.expires.append(expire)


class Node(NodeService):
    """A NodeService whose sends, broker and background tasks the test drives."""

    def __init__(self, name: str, peer: str, cutoff_s: float | None = None):
        super().__init__(
            name,
            ServiceAddress(f"inproc://{name}"),
            EmulatedClock(0.0, 1.0),
            hardware=NodeConfig(qubits=8, cutoff_s=cutoff_s),
            neighbours={peer: Neighbour(peer, STATION, "alice-bob", 1.0)},
        )
        self.outbox: list[tuple[str, object]] = []
        self.replies: list = []
        self.tasks: list = []
        self.freed: list[int] = []

    def send(self, peer, body, *, parent_id=None, sent_at=None):
        if not self.faults.blocks(peer):  # as the real send: lost across a cut
            self.outbox.append((peer, body))
        return "id"

    def reply(self, origin, body, *, parent_id=None):
        self.replies.append(body)

    def spawn(self, coroutine):
        self.tasks.append(coroutine)

    async def request(self, peer, body, *, timeout_s=30.0):
        return SimpleNamespace(body=None)  # (a ping: the tests restore both ends first)

    async def broker_ops(self, ops):
        self.freed += [op.qubit for op in ops if isinstance(op, FreeOp)]
        return [1.0 if isinstance(op, FidelityOp) else None for op in ops]

    async def settle(self):
        while self.tasks:
            await self.tasks.pop(0)

    def take(self, msg_type: type) -> list:
        """Sent messages of one type (removed from the outbox)."""
        taken = [body for _, body in self.outbox if isinstance(body, msg_type)]
        self.outbox = [(p, b) for p, b in self.outbox if not isinstance(b, msg_type)]
        return taken


async def deliver(node: NodeService, body, sender: str) -> None:
    envelope = decode(encode(body, sender=sender, sent_at=node.clock.now()))
    result = node.handlers[body.msg_type](envelope, SimpleNamespace(socket=None, identity=None))
    if result is not None:
        await result


async def wire_up(alice: Node, bob: Node) -> None:
    """Hand every message between the two nodes over until none is left."""
    await alice.settle()
    await bob.settle()
    while alice.outbox or bob.outbox:
        for node, other in ((alice, bob), (bob, alice)):
            for peer, body in list(node.outbox):
                node.outbox.remove((peer, body))
                if peer == other.name and not other.faults.blocks(node.name):
                    await deliver(other, body, node.name)
        await alice.settle()
        await bob.settle()


def herald(numbers: list[int]) -> tuple[Herald, Herald]:
    """One herald per node: Alice's qubits are 100 + n, Bob's 200 + n."""

    def pairs(mine: int, theirs: int):
        return [HeraldedPair(n, mine + n, theirs + n, 0, 0.0, 1, 1.0) for n in numbers]

    return Herald("alice", 1, pairs(100, 200)), Herald("alice", 1, pairs(200, 100))


@pytest.fixture
async def link():
    alice, bob = Node("alice", "bob"), Node("bob", "alice", cutoff_s=1.0)
    sink = Sink()
    alice.submit(EntangleRequest("bob", number=6, max_time_s=30.0, type="keep"), sink)
    await wire_up(alice, bob)  # create_request, create_accept
    return alice, bob, sink


async def test_a_cut_expires_exactly_the_pairs_whose_reports_it_lost_and_frees_both_ends(link):
    alice, bob, sink = link
    to_alice, to_bob = herald([0, 1, 2, 3])
    await deliver(alice, to_alice, STATION)
    await deliver(bob, to_bob, STATION)
    reports = bob.take(PairReport)
    await deliver(alice, reports[0].__class__(1, reports[0].halves[:2]), "bob")  # 0, 1 arrive
    assert [ok.sequence_number for ok in sink.oks] == [0, 1]

    for node, other in ((alice, "bob"), (bob, "alice")):  # the rest of the report is lost
        node.apply_fault("cut", other, {})
    await alice.settle()
    (expire,) = sink.expires
    assert (expire.sequence_numbers, expire.qubits, expire.reason) == ([2, 3], [102, 103], "cut")
    assert sorted(alice.memory.held) == [100, 101] and alice.freed == [102, 103]
    assert alice.m_pairs_expired.labels(peer="bob", reason="cut")._value.get() == 2
    assert sorted(bob.memory.held) == [200, 201, 202, 203]  # Bob cannot know yet

    alice.apply_fault("restore", "bob", {})  # the EXPIRE goes once Bob answers a ping
    assert alice.held_notices.waiting("bob")
    bob.apply_fault("restore", "alice", {})
    await wire_up(alice, bob)
    assert not alice.held_notices.waiting("bob")
    assert sorted(bob.memory.held) == [200, 201] and sorted(bob.freed) == [202, 203]
    assert bob.m_pairs_expired.labels(peer="alice", reason="peer_cut")._value.get() == 2
    assert len(sink.expires) == 1  # Bob's side adds nothing for the client
    # The two lost before their OK are made again: both ends count them out.
    assert alice.requests[("alice", 1)].heralded == bob.requests[("alice", 1)].heralded == 2

    # A late copy of the lost report is not an OK: Bob is told to free those halves.
    await deliver(alice, reports[0], "bob")
    assert [ok.sequence_number for ok in sink.oks] == [0, 1]


async def test_an_expire_that_overtakes_the_peer_herald_frees_the_half_when_it_comes(link):
    alice, bob, sink = link
    to_alice, to_bob = herald([0, 1])
    await deliver(alice, to_alice, STATION)
    alice.apply_fault("cut", "bob", {})
    await alice.settle()
    assert [e.sequence_numbers for e in sink.expires] == [[0, 1]]
    alice.apply_fault("restore", "bob", {})
    await wire_up(alice, bob)  # the EXPIRE reaches Bob before his (delayed) herald
    assert bob.requests[("alice", 1)].expired == {0: "peer_cut", 1: "peer_cut"}
    await deliver(bob, to_bob, STATION)
    await bob.settle()
    assert bob.memory.held == {} and sorted(bob.freed) == [200, 201]
    assert bob.take(PairReport) == []  # nothing to report for pairs already given up
    assert bob.m_pairs_expired.labels(peer="alice", reason="peer_cut")._value.get() == 2
    assert alice.requests[("alice", 1)].heralded == bob.requests[("alice", 1)].heralded == 0


async def test_a_peer_half_past_its_cutoff_expires_the_delivered_pair_at_both_ends(link):
    alice, bob, sink = link
    to_alice, to_bob = herald([0, 1])
    await deliver(alice, to_alice, STATION)
    await deliver(bob, to_bob, STATION)
    await wire_up(alice, bob)
    assert len(sink.oks) == 2 and sink.dones == [] and not sink.errs
    past = [bob.memory.held[200]]  # as the cutoff watcher would find it
    bob._expire_past_cutoff(past)
    await bob.settle()
    assert bob.freed == [200]
    await wire_up(alice, bob)
    (expire,) = sink.expires
    assert (expire.sequence_numbers, expire.qubits, expire.reason) == ([0], [100], "peer_cutoff")
    assert alice.freed == [100] and sorted(alice.memory.held) == [101]
    assert 100 not in alice.kept and 101 in alice.kept


async def test_a_peer_half_past_its_cutoff_before_the_ok_is_made_again_at_both_ends(link):
    alice, bob, sink = link
    to_alice, to_bob = herald([0, 1])
    await deliver(alice, to_alice, STATION)
    await deliver(bob, to_bob, STATION)
    bob.take(PairReport)  # lost: Alice waits for both reports
    bob._expire_past_cutoff([bob.memory.held[200]])
    await wire_up(alice, bob)
    (expire,) = sink.expires
    assert (expire.sequence_numbers, expire.reason) == ([0], "peer_cutoff") and not sink.oks
    assert sorted(alice.memory.held) == [101] and bob.freed == [200]
    assert alice.requests[("alice", 1)].heralded == bob.requests[("alice", 1)].heralded == 1


async def test_freeing_or_measuring_a_half_forgets_it():
    alice = Node("alice", "bob")
    alice.kept.add(KeptPair(5, "bob", "alice", 1, 0, 9))
    alice.forget_qubits([5])
    assert 5 not in alice.kept


def test_a_request_gives_up_waiting_halves_and_remembers_them():
    request = LinkRequest(1, "a", "b", 3, 0.0, 1.0, "keep", "random", 0.0, accepted=True)
    half = LocalHalf(0.0, 0, 0.0, 1, 1.0, qubit=4, peer_qubit=7)
    request.local = {0: half, 2: half}
    assert request.expire_waiting() == {0: half, 2: half}
    assert request.local == {} and request.expired == {0: "cut", 2: "cut"}
    assert request.expire(5, "cutoff") is None and request.expired[5] == "cutoff"


def test_kept_pairs_free_only_what_the_peer_may_name():
    kept = KeptPairs()
    kept.add(KeptPair(1, "bob", "alice", 7, 0, 11))
    kept.add(KeptPair(2, "carol", "alice", 7, 0, 12))
    kept.add(KeptPair(3, "bob", "alice", 8, 0, 13))
    named = kept.pop_named("bob", "alice", 7, [1, 2, 3, 4])
    assert [pair.qubit for pair in named] == [1] and len(kept) == 2


def test_held_notices_wait_per_peer():
    held = HeldNotices()
    held.hold("bob", "x")
    assert held.waiting("bob") and held.peers() == ["bob"] and not held.waiting("s")
    assert held.take("bob") == ["x"] and not held.waiting("bob")


def test_entangle_expire_and_pair_expire_are_wire_messages():
    body = EntangleExpire(1, [2, 3], [102, 103], "cut", "lost")
    assert decode(encode(body, sender="alice", sent_at=0.0)).body == body
    body = PairExpire("alice", 1, [2], [202], "cutoff")
    assert decode(encode(body, sender="alice", sent_at=1.0)).body == body


async def test_an_app_is_told_expire_on_its_next_use_of_an_expired_half():
    bob = Node("bob", "alice")
    apps = NodeApps(bob)
    apps.session = session = _Session("app", None, owned={5, 6})
    for qubit in (5, 6):
        bob.memory.store(HeldQubit(qubit, math.inf), reserved=False)  # claimed halves
    bob.kept.add(KeptPair(5, "alice", "alice", 1, 0, 9))
    await deliver(bob, PairExpire("alice", 1, [0], [5], "cutoff"), "alice")
    await bob.settle()
    assert bob.freed == [5] and session.owned == {6} and 5 in session.expired
    body = AppSubroutineRequest([AppOp("gate", [5], gate="H")])
    envelope = decode(encode(body, sender="app", sent_at=0.0))
    await apps._run_ops(envelope, None, session, list(body.ops), lambda _: None)
    (refused,) = bob.replies
    assert refused.code == "EXPIRE" and "peer_cutoff" in refused.message


async def test_an_end_to_end_expire_comes_from_the_other_end_node_only():
    alice = Node("alice", "bob")
    alice.directory["carol"] = "inproc://carol"  # a node of the network, not a neighbour
    sink = Sink()
    alice.memory.store(HeldQubit(7, 0.0), reserved=False)
    alice.kept.add(KeptPair(7, "carol", "alice", 3, 0, 9, sink, path=True))
    await deliver(alice, PairExpire("alice", 3, [-1], [7], "cutoff", 0, True), "mallory")
    await deliver(alice, PairExpire("alice", 3, [-1], [7], "cutoff"), "carol")  # not a link
    assert 7 in alice.kept and not sink.expires
    await deliver(alice, PairExpire("alice", 3, [-1], [7], "cutoff", 0, True), "carol")
    await alice.settle()
    (expire,) = sink.expires
    assert (expire.sequence_numbers, expire.qubits, expire.reason) == ([0], [7], "peer_cutoff")
    assert alice.freed == [7] and alice.memory.held == {}
