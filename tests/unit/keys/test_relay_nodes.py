"""Trusted-node relay between three in-process key managers A–B–C, and the KME on top.

The nodes are stand-ins that carry each message through the real codec (encode/decode)
straight to the next node's handler; everything else — authentication, the pads, the
stores, the ETSI 014 logic — is the real code.
"""

import asyncio
import dataclasses
import itertools
import random
from pathlib import Path
from types import SimpleNamespace

import pytest
from prometheus_client import CollectorRegistry

from qnemu.keys import InsufficientKeyMaterial, KeyStore, RelayError, Reservation
from qnemu.kme import ApiError, KeyDeliveryApi
from qnemu.kme.models import KeyRequest
from qnemu.node.qkd import _Channel
from qnemu.node.relay import HopChannel, TrustedNodeRelay
from qnemu.qkd.auth import derive_key
from qnemu.wire import decode, encode

LINE = [("A", "B"), ("B", "C")]
SAES = {"alice_app": "A", "bob_app": "B", "carol_app": "C"}
BLOCK_BYTES = 1024  # per block; two blocks per link


class FakeNode:
    """Just what TrustedNodeRelay uses of a NodeService; messages go through the codec."""

    def __init__(self, name: str, network: dict[str, "FakeNode"]):
        self.name = name
        self.network = network
        self.registry = CollectorRegistry()
        self.relay: TrustedNodeRelay | None = None
        self.ids = itertools.count()
        self.tamper = None  # body -> body, applied to what this node sends

    async def request(self, peer: str, body, *, timeout_s: float):
        if self.tamper is not None:
            body = self.tamper(body)
        envelope = decode(encode(body, sender=self.name, sent_at=0.0))
        answer: asyncio.Future = asyncio.get_running_loop().create_future()
        origin = SimpleNamespace(answer=answer)
        await self.network[peer].relay.on_request(envelope, origin)
        return await asyncio.wait_for(answer, timeout_s)

    def reply(self, origin, body, *, parent_id) -> None:
        origin.answer.set_result(decode(encode(body, sender=self.name, sent_at=0.0)))


@pytest.fixture
def line(tmp_path: Path):
    """Nodes A, B, C with stores; links A-B and B-C each share 16384 bits."""
    network: dict[str, FakeNode] = {}
    stores = {name: KeyStore(tmp_path / f"{name}.sqlite", name) for name in "ABC"}
    shared = b"qnemu-qkd/test/1"
    for left, right in LINE:
        for block in range(2):
            material = random.Random(f"{left}{right}{block}").randbytes(BLOCK_BYTES)
            for me, peer in ((left, right), (right, left)):
                stores[me].add_block(peer, f"{left}-{right}/{block}", material, unit_bits=1024)
    for name in "ABC":
        node = network[name] = FakeNode(name, network)
        hops = {}
        for left, right in LINE:
            if name in (left, right):
                peer = right if name == left else left
                link = f"{left}-{right}"
                channel = _Channel(
                    derive_key(shared, f"{link}/key-relay".encode()), name, peer, "s"
                )
                hops[peer] = HopChannel(
                    channel, derive_key(shared, f"{link}/key-relay-reply".encode())
                )
        node.relay = TrustedNodeRelay(
            node, edges=LINE, kme_nodes="ABC", hops=hops, registry=node.registry
        )
        node.relay.attach(stores[name])
    yield network, stores
    for store in stores.values():
        store.close()


def relayed_bits(node: FakeNode, peer: str, role: str) -> float | None:
    labels = {"peer": peer, "role": role}
    return node.registry.get_sample_value("qnemu_key_relay_bits_total", labels)


def kme(network, stores, name: str, sae: str) -> KeyDeliveryApi:
    async def reserve_at_peer(peer: str, reservation: Reservation) -> None:
        stores[peer].reserve_for(name, reservation)

    return KeyDeliveryApi(
        name, {sae}, SAES.get, stores[name], reserve_at_peer, key_relay=network[name].relay
    )


async def test_a_key_for_a_far_sae_is_relayed_and_matches_at_both_ends(line):
    network, stores = line
    pools_b = {peer: stores["B"].pool_bits(peer) for peer in "AC"}
    alice, carol = kme(network, stores, "A", "alice_app"), kme(network, stores, "C", "carol_app")
    relay_a = network["A"].relay
    assert relay_a.relays_to("C") and not relay_a.relays_to("B") and not relay_a.relays_to("A")
    status = await alice.status("alice_app", "carol_app")
    own_first_hop = stores["A"].pool_bits("B", offerable=True)
    assert (status.target_KME_ID, status.stored_key_count) == ("C", own_first_hop // 256)

    container = await alice.enc_keys("alice_app", "carol_app", KeyRequest(number=2, size=256))
    sent = {key.key_ID: key.key for key in container.keys}
    got = await carol.dec_keys("carol_app", "alice_app", list(sent))
    assert {key.key_ID: key.key for key in got.keys} == sent and len(sent) == 2

    # The trusted node's two pools lost exactly the relayed bits, spent as pads.
    for peer in "AC":
        assert stores["B"].pool_bits(peer) == pools_b[peer] - 512
        assert stores["B"].pad_bits(peer) == 512
    assert stores["B"].relayed_peers() == []  # a trusted node keeps nothing of K
    assert relayed_bits(network["A"], "C", "origin") == 512
    assert relayed_bits(network["B"], "A>C", "relay") == 512
    assert relayed_bits(network["C"], "A", "destination") == 512
    # Everything relayed went out: the end-to-end pools are empty again.
    assert stores["A"].pool_bits("C") == 0 == stores["C"].pool_bits("A")

    # A second request while key is left over relays only what is missing.
    await network["A"].relay.relay("C", 128)
    await alice.enc_keys("alice_app", "carol_app", KeyRequest(number=1, size=256))
    assert relayed_bits(network["A"], "C", "origin") == 512 + 128 + 128


async def test_a_relay_goes_the_other_way_too(line):
    network, stores = line
    carol, alice = kme(network, stores, "C", "carol_app"), kme(network, stores, "A", "alice_app")
    container = await carol.enc_keys("carol_app", "alice_app", KeyRequest(number=1, size=128))
    got = await alice.dec_keys("alice_app", "carol_app", [container.keys[0].key_ID])
    assert got.keys == container.keys
    assert relayed_bits(network["B"], "C>A", "relay") == 128


async def test_503_when_a_later_hop_lacks_key_and_the_pads_stay_spent(line):
    network, stores = line
    alice = kme(network, stores, "A", "alice_app")
    own_bc = stores["B"].pool_bits("C", offerable=True)
    stores["B"].take_pad("C", own_bc, "drain")  # B has nothing left to offer towards C
    before_ab = stores["A"].pool_bits("B")
    with pytest.raises(ApiError) as refused:
        await alice.enc_keys("alice_app", "carol_app", KeyRequest(number=1, size=256))
    assert refused.value.status == 503 and "B" in refused.value.body.message
    # The first hop's pad crossed the fibre: gone at both ends, never offered again.
    assert stores["A"].pool_bits("B") == before_ab - 256
    assert stores["B"].pad_bits("A") == 256
    assert stores["A"].pool_bits("C") == 0 and stores["C"].pool_bits("A") == 0
    assert network["A"].relay.figures["failures"] == 1
    assert relayed_bits(network["A"], "C", "origin") is None


async def test_503_when_the_first_hop_lacks_key_spends_nothing(line):
    network, stores = line
    alice = kme(network, stores, "A", "alice_app")
    own_ab = stores["A"].pool_bits("B", offerable=True)
    with pytest.raises(ApiError) as refused:
        await alice.enc_keys("alice_app", "carol_app", KeyRequest(number=1, size=own_ab + 8))
    assert refused.value.status in (400, 503)  # above max size, or no key: never a key
    with pytest.raises(InsufficientKeyMaterial):
        await network["A"].relay.relay("C", own_ab + 8)
    assert stores["A"].pool_bits("B", offerable=True) == own_ab
    assert stores["B"].pad_bits("A") == 0


async def test_a_forged_or_replayed_hop_is_refused_before_any_key_is_spent(line):
    network, stores = line

    def flip(body):
        return dataclasses.replace(
            body, ciphertext=bytes([body.ciphertext[0] ^ 1]) + body.ciphertext[1:]
        )

    network["A"].tamper = flip
    with pytest.raises(RelayError, match="refused"):
        await network["A"].relay.relay("C", 64)
    assert stores["B"].pad_bits("A") == 0 and stores["B"].pad_bits("C") == 0
    # Replaying a hop that went through: the sequence number is spent.
    sent = []
    network["A"].tamper = lambda body: sent.append(body) or body
    await network["A"].relay.relay("C", 64)
    network["A"].tamper = lambda body: sent[0]
    with pytest.raises(RelayError):  # B refuses it: its answer names the replayed relay
        await network["A"].relay.relay("C", 64)
    assert network["B"].relay.figures["failures"] == 2
    assert stores["C"].pool_bits("A") == 64 and stores["B"].pad_bits("A") == 64


async def test_no_relay_without_a_path_or_to_a_neighbour(line):
    network, _ = line
    relay = network["A"].relay
    assert not relay.relays_to("Z") and relay.relayable_bits("Z") == 0
    assert relay.relayable_bits("B") == 0  # a neighbour: direct key, no relay
    with pytest.raises(RelayError, match="no path"):
        await relay.relay("B", 64)
