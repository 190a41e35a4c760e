"""Node side of trusted-node key relay: end-to-end keys carried hop by hop under link keys.

Division of labour: `qnemu.keys.relay` finds the path and checks each hop (pure);
the key store cuts and consumes the one-time pads and keeps the relayed key; this
module carries `key_relay_request` / `key_relay_reply` between neighbours over the
authenticated classical channel and plays whichever part the node has in a relay:

- **origin** (the master SAE's KME asked for keys): draws a fresh random key K, sends
  K ⊕ pad to the first hop, and stores K once the destination has stored it;
- **trusted node**: removes the incoming pad, adds the pad of the next link, forwards,
  and answers back only once the next hop has answered; it keeps nothing of K;
- **destination**: removes the last pad and stores K.

Every pad is consumed for good at both ends of its link, whatever happens next. K goes
into the store at both ends as *relayed* units of the far node, owned by the origin,
so only the origin's KME offers them (see docs/qkd.md, "Trusted-node relay").
"""

import asyncio
import dataclasses
import hmac
import logging
import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from prometheus_client import Counter

from qnemu.keys import (
    KeySegment,
    KeyStore,
    KeyStoreError,
    RelayError,
    new_relay_id,
    one_time_pad,
    qkd_route,
    relay_step,
)
from qnemu.qkd.auth import AuthenticationError, mac_tag
from qnemu.wire import Envelope
from qnemu.wire.common import ErrorReply
from qnemu.wire.qkd import KeyRelayReply, KeyRelayRequest, authenticated_payload

__all__ = ["HOP_TIMEOUT_S", "HopChannel", "TrustedNodeRelay"]

log = logging.getLogger(__name__)

HOP_TIMEOUT_S = 4.0  # wall seconds per remaining hop to wait for the answer from downstream
BITS_PER_BYTE = 8


class SealingChannel(Protocol):
    """The sequenced, authenticated channel of one link and purpose (`qnemu.node.qkd`)."""

    def seal(self, body: Any) -> Any: ...
    def open(self, body: Any) -> Any: ...


@dataclass(frozen=True)
class HopChannel:
    """How this node talks relay with one QKD neighbour: requests sequenced, replies keyed."""

    request: SealingChannel
    reply_key: bytes


class TrustedNodeRelay:
    """This node's key manager as origin, trusted node or destination of key relays.

    Args:
        node: the NodeService (name, request, reply, handlers).
        edges: every QKD link of the network as (node, node).
        kme_nodes: nodes that run a key manager (declare SAEs).
        hops: this node's QKD neighbours and their channels.
        registry: Prometheus registry for qnemu_key_relay_bits_total.
        watch_pool: called with a peer the first time relayed key with it is stored.
    """

    def __init__(
        self,
        node,
        *,
        edges: Iterable[tuple[str, str]],
        kme_nodes: Iterable[str],
        hops: Mapping[str, HopChannel],
        registry,
        watch_pool: Callable[[str], None] = lambda peer: None,
    ):
        self.node = node
        self.me: str = node.name
        self.edges = tuple(edges)
        self.kme_nodes = frozenset(kme_nodes)
        self.hops = dict(hops)
        self.store: KeyStore | None = None
        self.watch_pool = watch_pool
        self._routes: dict[str, tuple[str, ...]] = {}
        self.figures: dict[str, Any] = {"bits": {}, "failures": 0}
        self.m_bits = Counter(
            "qnemu_key_relay_bits",
            "End-to-end key bits relayed through trusted nodes, by role (origin, relay,"
            " destination); peer is the far end, or '<origin>><destination>' at a trusted node.",
            ["peer", "role"],
            registry=registry,
        )

    def attach(self, store: KeyStore) -> None:
        self.store = store
        for peer in store.relayed_peers():
            self.watch_pool(peer)

    # ---- what the KME asks -----------------------------------------------------------

    def route_to(self, peer: str) -> tuple[str, ...]:
        """The path of QKD links to `peer` (fewest hops), or () if there is none."""
        if peer not in self._routes:
            self._routes[peer] = qkd_route(self.edges, self.me, peer)
        return self._routes[peer]

    def relays_to(self, peer: str) -> bool:
        return (
            peer != self.me
            and peer not in self.hops
            and peer in self.kme_nodes
            and len(self.route_to(peer)) > 2
        )

    def relayable_bits(self, peer: str) -> int:
        """What the first hop could carry now: an upper bound (later hops are not known here)."""
        if self.store is None or not self.relays_to(peer):
            return 0
        return self.store.pool_bits(self.route_to(peer)[1], offerable=True)

    async def relay(self, peer: str, bits: int) -> None:
        """Establish `bits` new end-to-end key bits with `peer`; stored at both ends on return.

        Raises:
            InsufficientKeyMaterial: the first hop lacks key.
            RelayError: no path, or a later hop refused or did not answer.
        """
        store = self.store
        route = self.route_to(peer)
        if store is None or len(route) < 3:
            raise RelayError(f"{self.me} has no path of QKD links to {peer}")
        if bits <= 0 or bits % BITS_PER_BYTE:
            raise ValueError("relay a positive whole number of bytes")
        relay_id = new_relay_id(self.me, peer)
        key = secrets.token_bytes(bits // BITS_PER_BYTE)
        try:
            segments, pad = await asyncio.to_thread(store.take_pad, route[1], bits, relay_id)
            request = KeyRelayRequest(
                relay_id, list(route), _segments_out(segments), one_time_pad(key, pad)
            )
            await self._forward(route[1], request, len(route) - 1)
        except Exception:
            self.figures["failures"] += 1
            raise
        # The destination holds K: now the origin stores it too, and the KME may offer it.
        await asyncio.to_thread(store.add_relayed, peer, relay_id, key, owner=self.me)
        self._count(peer, "origin", bits)
        log.info("%s: relayed %d key bits to %s along %s", self.me, bits, peer, "-".join(route))

    # ---- hop by hop ------------------------------------------------------------------

    async def _forward(self, next_hop: str, request: KeyRelayRequest, hops_left: int) -> None:
        """Send one hop and wait until everything downstream has answered."""
        hop = self.hops[next_hop]
        try:
            envelope = await self.node.request(
                next_hop, hop.request.seal(request), timeout_s=HOP_TIMEOUT_S * hops_left
            )
        except TimeoutError:
            raise RelayError(f"{next_hop} did not answer relay {request.relay_id}") from None
        reply = envelope.body
        if isinstance(reply, ErrorReply):
            raise RelayError(f"{next_hop}: {reply.code}: {reply.message}")
        if not isinstance(reply, KeyRelayReply) or reply.relay_id != request.relay_id:
            raise RelayError(f"{next_hop} answered {reply.msg_type} to relay {request.relay_id}")
        expected = mac_tag(hop.reply_key, next_hop, self.me, 0, authenticated_payload(reply))
        if not hmac.compare_digest(expected, reply.tag):
            raise RelayError(f"unauthenticated relay reply from {next_hop}")
        if not reply.ok:
            raise RelayError(f"{next_hop} refused relay {request.relay_id}: {reply.message}")

    async def on_request(self, envelope: Envelope, origin) -> None:
        """A neighbour hands us one hop of a relay: decrypt, then store or forward."""
        sender = envelope.header.sender
        body: KeyRelayRequest = envelope.body
        hop = self.hops.get(sender)
        ok, message = False, ""
        try:
            if hop is None or self.store is None:
                raise RelayError(f"{self.me} has no QKD link to {sender}")
            hop.request.open(body)
            await self._take_hop(sender, body)
            ok = True
        except (RelayError, KeyStoreError, AuthenticationError, ValueError) as error:
            message = str(error)
            self.figures["failures"] += 1
            log.warning("%s: relay %s from %s failed: %s", self.me, body.relay_id, sender, message)
        if hop is None:
            error_reply = ErrorReply("no_qkd_link", message)
            self.node.reply(origin, error_reply, parent_id=envelope.header.msg_id)
            return
        reply = KeyRelayReply(body.relay_id, ok, message)
        tag = mac_tag(hop.reply_key, self.me, sender, 0, authenticated_payload(reply))
        self.node.reply(
            origin, dataclasses.replace(reply, tag=tag), parent_id=envelope.header.msg_id
        )

    async def _take_hop(self, sender: str, body: KeyRelayRequest) -> None:
        store = self.store
        assert store is not None
        step = relay_step(body.relay_id, body.route, self.me, sender)
        segments = _segments_in(body.segments)
        bits = len(body.ciphertext) * BITS_PER_BYTE
        if not bits or sum(s.size_bits for s in segments) != bits:
            raise RelayError(f"pad of relay {body.relay_id} does not match its key")
        # The pad crossed the fibre as K ⊕ pad: its bits are spent whatever happens next.
        pad = await asyncio.to_thread(store.use_pad, sender, segments, body.relay_id)
        key = one_time_pad(body.ciphertext, pad)
        if step.next_hop is None:
            await asyncio.to_thread(
                store.add_relayed, step.origin, body.relay_id, key, owner=step.origin
            )
            self._count(step.origin, "destination", bits)
            return
        if step.next_hop not in self.hops:
            raise RelayError(f"{self.me} has no QKD link to {step.next_hop}")
        out_segments, out_pad = await asyncio.to_thread(
            store.take_pad, step.next_hop, bits, body.relay_id
        )
        forward = KeyRelayRequest(
            body.relay_id, list(body.route), _segments_out(out_segments), one_time_pad(key, out_pad)
        )
        del key  # a trusted node sees K, and forgets it at once
        hops_left = len(body.route) - 1 - body.route.index(self.me)
        await self._forward(step.next_hop, forward, hops_left)
        self._count(f"{step.origin}>{step.destination}", "relay", bits)

    # ---- figures ---------------------------------------------------------------------

    def _count(self, peer: str, role: str, bits: int) -> None:
        self.m_bits.labels(peer=peer, role=role).inc(bits)
        by_peer = self.figures["bits"].setdefault(role, {})
        by_peer[peer] = by_peer.get(peer, 0) + bits
        if role != "relay":
            self.watch_pool(peer)

    def stats(self) -> dict[str, Any]:
        """Relayed bits by role and peer, failures, and the end-to-end pools."""
        figures = {"bits": {role: dict(peers) for role, peers in self.figures["bits"].items()}}
        figures["failures"] = self.figures["failures"]
        if self.store is not None:
            peers = self.store.relayed_peers()
            figures["pools"] = {peer: self.store.pool_bits(peer) for peer in peers}
        return figures


def _segments_out(segments: Iterable[KeySegment]) -> list[tuple[str, int, int]]:
    return [(s.unit_id, s.start_bits, s.size_bits) for s in segments]


def _segments_in(segments: Iterable[tuple[str, int, int]]) -> list[KeySegment]:
    return [KeySegment(unit_id, start, bits) for unit_id, start, bits in segments]
