"""Node extension: BBM92 key generation on the node's QKD links, and its ETSI GS QKD 014 KME.

Division of labour: the link layer measures pairs (measure mode, random Z/X bases);
this extension keeps each end's own outcomes (Alice from her OKs, Bob from the node's
`half_measured_listeners` hook), carries the post-processing of `qnemu.qkd.session`
over the fibre-delayed classical channel, authenticated with `qnemu.qkd.auth`, stores
finished blocks in the node's `KeyStore` and serves them to SAEs through the KME.
It never touches amplitudes (the broker) nor HTTP details (`qnemu.kme`).

An entanglement link runs BBM92 when its `qkd` field says so (`auto`, the default: when
both its nodes declare SAEs; `bbm92`; never with `none`); the node whose name sorts
first is Alice (initiator). A `bb84_decoy` link runs decoy-state BB84 instead: Alice's pulse
source (`qnemu.node.decoy_link`) samples blocks paced to the emulated clock, sends Bob
his detector record as the fibre would, and the same post-processing follows
(`qnemu.qkd.decoy_session`). Keys for a KME with no QKD link to this one are relayed through trusted
nodes (`qnemu.node.relay`). See docs/qkd.md.
"""

import asyncio
import contextlib
import dataclasses
import fcntl
import json
import logging
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from prometheus_client import Counter, Gauge
from prometheus_client.core import CounterMetricFamily

from qnemu.keys import KeyStore, Reservation, ReservationError, key_store_path
from qnemu.node.decoy_link import DecoyPulseSource
from qnemu.node.relay import HopChannel, TrustedNodeRelay
from qnemu.qkd.auth import (
    AuthenticatedMessage,
    AuthenticationError,
    MessageAuthenticator,
    derive_key,
)
from qnemu.qkd.decoy_session import DecoyAliceBlock, DecoyBobBlock
from qnemu.qkd.session import (
    BASIS_CODES,
    AliceBlock,
    BlockResult,
    BobBlock,
    QkdSettings,
    basis_code,
    bob_raw_bit,
)
from qnemu.topology.models import DecoyBB84LinkConfig
from qnemu.wire import Envelope
from qnemu.wire.common import ErrorReply
from qnemu.wire.control import EntangleDone, EntangleErr, EntangleOk, EntangleRequest
from qnemu.wire.qkd import (
    KeyRelayReply,
    KeyRelayRequest,
    KmeReserveReply,
    KmeReserveRequest,
    QkdBlockAbort,
    QkdDecoyEstimateRequest,
    QkdDecoyPulses,
    QkdDecoySiftRequest,
    QkdEstimateReply,
    QkdEstimateRequest,
    QkdKeyStored,
    QkdParityReply,
    QkdParityRequest,
    QkdSiftReply,
    QkdSiftRequest,
    QkdVerifyReply,
    QkdVerifyRequest,
    authenticated_payload,
)

if TYPE_CHECKING:
    from qnemu.kme import KeyDeliveryApi, KmeServer

__all__ = ["QkdExtension", "extension", "kme_info_path", "qkd_edges", "qkd_links"]

log = logging.getLogger(__name__)

REQUEST_PAIRS = 8192  # pairs per link-layer request; a new one follows at once
REQUEST_MAX_TIME_S = 20.0  # emulated; a request the peer never answered ends, and is retried
STEP_TIMEOUT_S = 15.0  # wall seconds to wait for the peer's next post-processing message
RESERVE_ATTEMPTS = 10  # a reservation may arrive just before its block's ack: wait a little
RESERVE_RETRY_S = 0.2
POST_PROCESSING = (
    QkdSiftRequest,
    QkdSiftReply,
    QkdEstimateRequest,
    QkdEstimateReply,
    QkdParityRequest,
    QkdParityReply,
    QkdVerifyRequest,
    QkdVerifyReply,
    QkdKeyStored,
    QkdBlockAbort,
    QkdDecoyPulses,
    QkdDecoySiftRequest,
    QkdDecoyEstimateRequest,
)
# Decoy blocks reveal only a tenth of the sifted signal bits: their QBER serves the abort
# test and Cascade, the key length rests on the decoy bounds (docs/qkd.md).
DECOY_SAMPLE_FRACTION = 0.1
# Decoy blocks post-processed at once on a link: the source goes on while earlier blocks
# wait for the peer's answers, as a real system's would (Cascade is mostly round trips).
DECOY_BLOCKS_IN_FLIGHT = 3
RECORDS_KEPT = 2 * DECOY_BLOCKS_IN_FLIGHT  # Bob's records waiting for their sift request
BLOCKS_KEPT = 2 * DECOY_BLOCKS_IN_FLIGHT  # Bob's open blocks (more: Alice gave some up)


def qkd_links(topology, name: str) -> dict[str, str]:
    """peer -> link name (`<a>-<b>` in topology order) of every QKD link of node `name`.

    Which links run QKD is the topology's rule (`Topology.qkd_protocol`: the link's
    `qkd` field, auto meaning both nodes declare SAEs; bb84_decoy links always).
    """
    if name not in topology.nodes:
        return {}
    return {
        link.other(name): f"{link.nodes[0]}-{link.nodes[1]}"
        for link in topology.qkd_links()
        if name in link.nodes
    }


def qkd_edges(topology) -> list[tuple[str, str]]:
    """Every QKD link of the network as (node, node): what key relay routes over."""
    return [tuple(link.nodes) for link in topology.qkd_links()]


def kme_info_path(run_dir: Path, node: str) -> Path:
    """Where a node's KME writes its URL (read by `qnemu status` and tests)."""
    return Path(run_dir) / "kme" / f"{node}.json"


class _Channel:
    """One purpose of the authenticated classical channel with one peer (both directions).

    The sender's name in every tag carries its session (one per start of the extension),
    so a restarted node starts a fresh sequence and its old messages cannot be replayed.
    """

    def __init__(self, key: bytes, me: str, peer: str, session: str):
        self.key, self.me, self.peer, self.session = key, me, peer, session
        self._out = MessageAuthenticator(key, f"{me}#{session}", peer)
        self._in: dict[str, MessageAuthenticator] = {}
        self._retired: set[str] = set()

    def seal(self, body: Any) -> Any:
        sealed = self._out.seal(authenticated_payload(body))
        return dataclasses.replace(
            body, session=self.session, sequence_number=sealed.sequence_number, tag=sealed.tag
        )

    def open(self, body: Any) -> Any:
        """The body if authentic and new; else AuthenticationError."""
        session = body.session
        receiver = self._in.get(session)
        if receiver is None:
            if session in self._retired or not session:
                raise AuthenticationError(f"session {session!r} of {self.peer} is over")
            self._retired.update(self._in)  # the peer restarted: its old session is over
            self._in = {session: MessageAuthenticator(self.key, self.me, f"{self.peer}#{session}")}
            receiver = self._in[session]
        message = AuthenticatedMessage(body.sequence_number, authenticated_payload(body), body.tag)
        receiver.open(message)
        return body


@dataclass
class _Link:
    """One QKD link as this node sees it."""

    peer: str
    name: str
    role: str  # "alice" (initiator) or "bob"
    postprocessing: _Channel
    kme_request: _Channel
    kme_reply: _Channel
    relay: _Channel  # key_relay_request, sequenced; replies are tagged with relay_reply_key
    relay_reply_key: bytes
    raw: list[tuple[int, int, int, int]] = field(default_factory=list)  # Alice's own halves
    halves: dict[tuple[int, int], tuple[int, int]] = field(default_factory=dict)  # Bob's
    inboxes: dict[str, asyncio.Queue] = field(default_factory=dict)  # Alice: Bob's, by block
    blocks: dict[str, BobBlock] = field(default_factory=dict)  # Bob: open blocks by ID
    next_block: int = 0
    figures: dict[str, Any] = field(default_factory=dict)
    decoy: DecoyBB84LinkConfig | None = None  # a bb84_decoy link: its configuration
    source: DecoyPulseSource | None = None  # Alice's pulses on a bb84_decoy link
    records: dict[str, QkdDecoyPulses] = field(default_factory=dict)  # Bob's, by block


class _PairSink:
    """Alice's link-layer sink: keeps her own outcome and basis of every pair, nothing more."""

    def __init__(self, link: _Link):
        self.link = link
        self.delivered = 0
        self.error: EntangleErr | None = None
        self.finished = asyncio.Event()

    def ok(self, pair: EntangleOk) -> None:
        if pair.outcomes is None or pair.bases is None or pair.bases[0] not in BASIS_CODES:
            return
        self.delivered += 1
        own = (pair.create_id, pair.sequence_number, pair.outcomes[0], basis_code(pair.bases[0]))
        self.link.raw.append(own)

    def err(self, error: EntangleErr) -> None:
        self.error = error
        self.finished.set()

    def done(self, done: EntangleDone) -> None:
        self.finished.set()


class _BlockAborted(Exception):
    """The peer gave the block up."""


class _KmeRequestsCollector:
    """qnemu_kme_requests_total from the KME's own counter, read at scrape time."""

    def __init__(self) -> None:
        self.api: KeyDeliveryApi | None = None

    def collect(self):
        family = CounterMetricFamily(
            "qnemu_kme_requests",
            "ETSI GS QKD 014 requests answered by this node's KME, by endpoint and HTTP status.",
            labels=["endpoint", "status"],
        )
        if self.api is not None:
            for (endpoint, status), count in sorted(self.api.stats.items()):
                family.add_metric([endpoint, str(status)], count)
        yield family


class QkdExtension:
    """BBM92 on a node's QKD links plus its KME; idle on a node with neither."""

    def __init__(
        self,
        node,
        topology,
        *,
        run_dir: Path | None,
        seed: int | None = None,
        settings: QkdSettings | None = None,
        kme_host: str = "127.0.0.1",
        kme_port: int | None = None,
        state_dir: Path | None = None,
        secrets_dir: Path | None = None,
    ):
        self.node = node
        self.topology = topology
        self.run_dir = Path(run_dir) if run_dir is not None else None
        # Where the key store and KME address go (a container's volume), and where the
        # KME's TLS key is mounted when the deployment made the PKI (a container's secret).
        self.state_dir = Path(state_dir) if state_dir is not None else self.run_dir
        self.secrets_dir = Path(secrets_dir) if secrets_dir is not None else None
        self.kme_port = kme_port
        self.settings = settings or QkdSettings()
        self.kme_host = kme_host
        self.session = secrets.token_hex(4)
        self.saes = tuple(topology.nodes[node.name].saes)
        self.sae_nodes = {
            sae: name for name, config in topology.nodes.items() for sae in config.saes
        }
        self.rng = np.random.default_rng()  # sample, tag and PA seeds: fresh each run
        self.store: KeyStore | None = None
        self.kme: KmeServer | None = None
        self.kme_url: str | None = None
        self.links: dict[str, _Link] = {}
        self.api: KeyDeliveryApi | None = None  # the KME's logic, once it serves
        # (peer, link name, result) of every key block post-processed (MQTT: qber_alarm)
        self.block_listeners: list[Callable[[str, str, BlockResult], None]] = []
        self.shared = f"qnemu-qkd/{topology.name}/{seed}".encode()  # pre-shared: docs/qkd.md
        for peer, link_name in qkd_links(topology, node.name).items():
            first = node.name < peer

            def channel(purpose: str, link_name: str = link_name, peer: str = peer) -> _Channel:
                return _Channel(self._key(f"{link_name}/{purpose}"), node.name, peer, self.session)

            self.links[peer] = _Link(
                peer,
                link_name,
                "alice" if first else "bob",
                channel("postprocessing"),
                channel("kme-request"),
                channel("kme-reply"),
                channel("key-relay"),
                self._key(f"{link_name}/key-relay-reply"),
            )
            self.links[peer].figures = _new_figures(self.links[peer].role)
            config = topology.link_between(node.name, peer)
            if isinstance(config, DecoyBB84LinkConfig):
                self._use_decoy(self.links[peer], config)
        # KME channels with nodes reached by relay only: (request, reply), made when needed.
        self._far_kme_channels: dict[str, tuple[_Channel, _Channel]] = {}
        self._init_metrics()
        self.relay = TrustedNodeRelay(
            node,
            edges=qkd_edges(topology),
            kme_nodes=[name for name, config in topology.nodes.items() if config.saes],
            hops={
                peer: HopChannel(link.relay, link.relay_reply_key)
                for peer, link in self.links.items()
            },
            registry=node.registry,
            watch_pool=self._watch_pool,
        )
        for body in POST_PROCESSING:
            node.handlers[body.msg_type] = self._on_postprocessing
        node.handlers[KmeReserveRequest.msg_type] = self._on_reserve_request
        node.handlers[KmeReserveReply.msg_type] = lambda envelope, origin: None  # too late
        node.handlers[KeyRelayRequest.msg_type] = self.relay.on_request
        node.handlers[KeyRelayReply.msg_type] = lambda envelope, origin: None  # too late
        listeners = getattr(node, "half_measured_listeners", None)
        if listeners is not None:
            listeners.append(self._on_half_measured)
        elif any(link.role == "bob" for link in self.links.values()):
            log.error("%s: NodeService has no half_measured_listeners: BBM92 cannot run", node.name)

    def _use_decoy(self, link: _Link, config: DecoyBB84LinkConfig) -> None:
        link.decoy = config
        link.figures.update(pulses=0, detections=0, single_photon_yield_lower=None,
                            single_photon_error_upper=None)  # fmt: skip
        if link.role == "alice":
            rng = np.random.default_rng(self.node.rng.integers(0, 2**63))
            link.source = DecoyPulseSource(config, self.node.clock, rng)

    def apply_fault(self, kind: str, target: str | None, parameters: dict[str, Any]) -> bool:
        """Intercept-resend on the pulses of a bb84_decoy link this node sends (`eavesdrop`,
        target: the peer); True when the fault was this extension's alone."""
        sources = {peer: link.source for peer, link in self.links.items() if link.source}
        if kind == "clear":
            for source in sources.values():
                source.eavesdrop_fraction = 0.0
            return False  # the node clears its own faults too
        if kind != "eavesdrop":
            return False
        source = sources.get(target or "")
        if source is None:
            raise ValueError(f"{self.node.name} sends no bb84_decoy pulses to {target!r}")
        fraction = float(parameters.get("fraction", 1.0))
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"fraction must be in [0, 1], got {fraction}")
        source.eavesdrop_fraction = fraction
        return True

    def describe_faults(self) -> dict[str, Any]:
        fractions = {
            peer: link.source.eavesdrop_fraction
            for peer, link in self.links.items()
            if link.source is not None and link.source.eavesdrop_fraction
        }
        return {"eavesdrop_fraction": fractions} if fractions else {}

    def _key(self, context: str) -> bytes:
        return derive_key(self.shared, context.encode())

    def _init_metrics(self) -> None:
        registry = self.node.registry
        self.m_qber = Gauge(
            "qnemu_qkd_qber",
            "QBER estimated on the sample of the link's last key block (0 to 1).",
            ["peer", "link"],
            registry=registry,
        )
        self.m_pool = Gauge(
            "qnemu_key_pool_bits",
            "Secret key bits this node holds for a peer, not yet handed to an SAE.",
            ["peer"],
            registry=registry,
        )
        self.m_secret = Counter(
            "qnemu_qkd_secret_key_bits",
            "Secret key bits distilled on the link and stored (both ends count).",
            ["peer"],
            registry=registry,
        )
        self.m_blocks = Counter(
            "qnemu_qkd_blocks",
            "Key blocks post-processed, by result (ok, aborted_qber, failed_verification, ...).",
            ["peer", "result"],
            registry=registry,
        )
        self.m_decoy_yield = Gauge(
            "qnemu_qkd_decoy_single_photon_yield",
            "Decoy-state BB84: lower bound Y1^L on the single-photon yield, last block.",
            ["peer", "link"],
            registry=registry,
        )
        self.m_decoy_error = Gauge(
            "qnemu_qkd_decoy_single_photon_error",
            "Decoy-state BB84: upper bound e1^U on the single-photon error rate, last block.",
            ["peer", "link"],
            registry=registry,
        )
        self.m_kme = _KmeRequestsCollector()
        registry.register(self.m_kme)

    # ---- lifecycle -------------------------------------------------------------------

    async def run(self) -> None:
        if not self.saes or self.run_dir is None:
            return
        assert self.state_dir is not None
        path = key_store_path(self.state_dir, self.node.name)
        self.store = await asyncio.to_thread(KeyStore, path, self.node.name)
        for peer in self.links:
            self._watch_pool(peer)
        self.relay.attach(self.store)
        await self._start_kme()
        async with asyncio.TaskGroup() as tasks:
            for link in self.links.values():
                if link.role == "alice" and link.source is not None:
                    tasks.create_task(self._decoy_blocks(link))
                elif link.role == "alice":
                    tasks.create_task(self._collect_pairs(link))
                    tasks.create_task(self._alice_blocks(link))

    def _watch_pool(self, peer: str) -> None:
        """Export the pool shared with `peer` (a link peer, or a far node after a relay)."""
        store = self.store
        if store is not None:
            self.m_pool.labels(peer=peer).set_function(lambda: store.pool_bits(peer))

    async def stop(self) -> None:
        if self.kme is not None:
            await self.kme.stop()
            self.kme = None

    def stats(self) -> dict[str, Any]:
        links = {}
        for peer, link in self.links.items():
            figures = dict(link.figures)
            samples = figures["sample_bits"]
            figures["qber_mean"] = figures["sample_errors"] / samples if samples else None
            if self.store is not None:
                figures["pool_bits"] = self.store.pool_bits(peer)
                figures["offerable_bits"] = self.store.pool_bits(peer, offerable=True)
                figures["pad_bits"] = self.store.pad_bits(peer)
            links[peer] = figures
        return {"kme_url": self.kme_url, "qkd": links, "key_relay": self.relay.stats()}

    async def _start_kme(self) -> None:
        # Only a node with SAEs serves HTTPS: the others never load aiohttp or cryptography.
        from qnemu.kme import KeyDeliveryApi, create_app, kme_ssl_context, serve_kme
        from qnemu.launch.pki import kme_name, pki_paths

        run_dir, state_dir = self.run_dir, self.state_dir
        assert run_dir is not None and state_dir is not None and self.store is not None
        if self.secrets_dir is not None:  # made by the deployment: nothing to issue here
            paths = pki_paths(run_dir, self.secrets_dir)
        else:
            nodes = [name for name, config in self.topology.nodes.items() if config.saes]
            saes = list(self.sae_nodes)
            paths = await asyncio.to_thread(_ensure_pki_locked, run_dir, nodes, saes)
        me = kme_name(self.node.name)
        context = kme_ssl_context(paths.ca_cert, paths.cert(me), paths.key(me))
        api = KeyDeliveryApi(
            self.node.name,
            set(self.saes),
            self.sae_nodes.get,
            self.store,
            self._reserve_at_peer,
            key_relay=self.relay,
        )
        self.m_kme.api = self.api = api
        info = kme_info_path(state_dir, self.node.name)
        port = self.kme_port or 0
        with contextlib.suppress(OSError, ValueError, KeyError):
            port = int(json.loads(info.read_text())["port"])  # same URL after a restart
        try:
            self.kme = await serve_kme(create_app(api), self.kme_host, port, context)
        except OSError:
            if self.kme_port:  # a fixed port peers are told about: no other will do
                raise
            self.kme = await serve_kme(create_app(api), self.kme_host, 0, context)
        self.kme_url = self.kme.url
        info.parent.mkdir(parents=True, exist_ok=True)
        temporary = info.with_name(f"{info.name}.{os.getpid()}.tmp")
        temporary.write_text(json.dumps({"kme_url": self.kme_url, "port": self.kme.port}))
        temporary.replace(info)
        log.info("%s: KME serving SAEs %s at %s", self.node.name, list(self.saes), self.kme_url)

    # ---- Alice: pairs and blocks ---------------------------------------------------------

    async def _collect_pairs(self, link: _Link) -> None:
        backlog = 4 * self.settings.block_pairs
        while True:
            if len(link.raw) >= backlog:  # post-processing is behind: let it catch up
                await asyncio.sleep(0.1)
                continue
            sink = _PairSink(link)
            request = EntangleRequest(
                remote_node_id=link.peer,
                number=REQUEST_PAIRS,
                max_time_s=REQUEST_MAX_TIME_S,
                type="measure",
                basis="random",
            )
            if self.node.submit(request, sink) is None:
                await asyncio.sleep(1.0)
                continue
            await sink.finished.wait()
            link.figures["raw_pairs"] += sink.delivered
            if sink.error is not None and sink.delivered == 0:
                await asyncio.sleep(0.5)

    async def _alice_blocks(self, link: _Link) -> None:
        size = self.settings.block_pairs
        while True:
            while len(link.raw) < size:
                await asyncio.sleep(0.05)
            taken = np.array(link.raw[:size], dtype=np.int64)
            del link.raw[:size]
            block_id = f"{link.name}/{self.session}/{link.next_block}"
            link.next_block += 1
            block = AliceBlock(
                link.name,
                block_id,
                taken[:, :2],
                taken[:, 2],
                taken[:, 3],
                self.settings,
                self.rng,
            )
            await self._run_alice_block(link, block)

    async def _run_alice_block(self, link: _Link, block: AliceBlock) -> None:
        link.inboxes[block.block] = asyncio.Queue()
        try:
            result = await self._alice_block(link, block)
        except (TimeoutError, _BlockAborted, ValueError) as error:
            log.warning("%s: block %s given up: %r", self.node.name, block.block, error)
            if not isinstance(error, _BlockAborted):
                self._send(link, QkdBlockAbort(link.name, block.block, type(error).__name__))
            result = BlockResult(block.block, "abandoned", int(block.pairs.shape[0]))
        finally:
            del link.inboxes[block.block]
        self._record(link, result)

    async def _decoy_blocks(self, link: _Link) -> None:
        """Alice on a bb84_decoy link: a block of pulses, Bob's record over the fibre,
        then post-processing, up to DECOY_BLOCKS_IN_FLIGHT blocks at once."""
        source, config = link.source, link.decoy
        assert source is not None and config is not None
        settings = dataclasses.replace(self.settings, sample_fraction=DECOY_SAMPLE_FRACTION)
        in_flight = asyncio.Semaphore(DECOY_BLOCKS_IN_FLIGHT)
        async with asyncio.TaskGroup() as tasks:
            while True:
                await in_flight.acquire()
                sampled = await source.next_block()  # one after another: the source's pace
                block_id = f"{link.name}/{self.session}/{link.next_block}"
                link.next_block += 1
                block = DecoyAliceBlock(
                    link.name,
                    block_id,
                    sampled,
                    config.intensities.signal,
                    config.intensities.decoy,
                    settings,
                    self.rng,
                )
                self._send(link, block.quantum_channel())
                tasks.create_task(self._decoy_block(link, block, in_flight))

    async def _decoy_block(
        self, link: _Link, block: DecoyAliceBlock, in_flight: asyncio.Semaphore
    ) -> None:
        try:
            await self._run_alice_block(link, block)
        finally:
            in_flight.release()
        # Counted once the block is over, so pulses and secret bits stay comparable.
        link.figures["pulses"] += block.sampled.n_pulses
        link.figures["detections"] += block.sampled.n_detections

    async def _alice_block(self, link: _Link, block: AliceBlock) -> BlockResult:
        self._send(link, block.sift_request())
        step = block.on_sift_reply(await self._expect(link, block.block, QkdSiftReply))
        if isinstance(step, BlockResult):
            self._send(link, QkdBlockAbort(link.name, block.block, step.result))
            return step
        self._send(link, step)
        reply = await self._expect(link, block.block, QkdEstimateReply)
        ended = block.on_estimate_reply(reply)
        if ended is not None:  # Bob has come to the same end from the same sample
            return ended
        while True:
            message = await self._expect(link, block.block, (QkdParityRequest, QkdVerifyRequest))
            if isinstance(message, QkdParityRequest):
                self._send(link, block.answer(message))
                continue
            verdict, result = block.on_verify_request(message)
            self._send(link, verdict)
            if result.result != "ok":
                return result
            # Bob stores first and says so; then Alice: a key is never offered that the
            # peer does not hold (a reservation racing the ack is retried at the peer).
            await self._expect(link, block.block, QkdKeyStored)
            await asyncio.to_thread(self._store_block, link, result)
            return result

    async def _expect(self, link: _Link, block: str, kinds) -> Any:
        try:
            async with asyncio.timeout(STEP_TIMEOUT_S):
                message = await link.inboxes[block].get()
        except TimeoutError:
            raise TimeoutError(f"no {kinds} from {link.peer} for block {block}") from None
        if isinstance(message, QkdBlockAbort):
            raise _BlockAborted(message.reason)
        if isinstance(message, kinds):
            return message
        raise ValueError(f"unexpected {message.msg_type} in block {block}")

    # ---- Bob: halves and answers ---------------------------------------------------------

    def _on_half_measured(self, request, sequence_number: int, half) -> None:
        link = self.links.get(request.peer)
        if link is None or link.role != "bob" or request.initiator != link.peer:
            return
        if half.basis not in BASIS_CODES or half.outcome is None:
            return
        bit = bob_raw_bit(half.outcome, half.basis, half.bell_state)
        link.halves[(request.create_id, sequence_number)] = (bit, basis_code(half.basis))
        if len(link.halves) > 8 * self.settings.block_pairs:  # halves Alice never used
            del link.halves[next(iter(link.halves))]

    def _bob_step(self, link: _Link, body: Any) -> None:
        if isinstance(body, QkdDecoyPulses):
            if link.decoy is None:
                raise ValueError(f"{link.name} is not a bb84_decoy link")
            link.records[body.block] = body
            while len(link.records) > RECORDS_KEPT:  # records of blocks Alice gave up
                del link.records[next(iter(link.records))]
            link.figures["pulses"] += body.pulses
            link.figures["detections"] += len(body.bits)
            return
        if isinstance(body, QkdDecoySiftRequest):
            record, config = link.records.pop(body.block, None), link.decoy
            if record is None or config is None:
                raise ValueError(f"no detector record for block {body.block}")
            settings = dataclasses.replace(self.settings, sample_fraction=DECOY_SAMPLE_FRACTION)
            decoy_block = DecoyBobBlock(
                link.name,
                body.block,
                record,
                config.intensities.signal,
                config.intensities.decoy,
                settings,
                self.rng,
            )
            self._open_bob_block(link, decoy_block)
            self._send(link, decoy_block.on_sift_request(body))
            return
        if isinstance(body, QkdSiftRequest):
            bbm92_block = BobBlock(link.name, body.block, self.settings, self.rng)
            self._open_bob_block(link, bbm92_block)
            reply = bbm92_block.on_sift_request(
                body, lambda create_id, number: link.halves.pop((create_id, number), None)
            )
            self._send(link, reply)
            return
        block = link.blocks.get(body.block)
        if block is None:
            return  # a block this end has given up already
        if isinstance(body, QkdBlockAbort):
            del link.blocks[block.block]
            self._record(link, BlockResult(block.block, "abandoned", block.pairs))
        elif isinstance(body, QkdEstimateRequest | QkdDecoyEstimateRequest):
            if isinstance(block, DecoyBobBlock) != isinstance(body, QkdDecoyEstimateRequest):
                raise ValueError(f"{body.msg_type} does not fit block {block.block}")
            reply, step = block.on_estimate_request(body)
            self._send(link, reply)
            if isinstance(step, BlockResult):
                del link.blocks[block.block]
                self._record(link, step)
            else:
                self._send(link, step)
        elif isinstance(body, QkdParityReply):
            self._send(link, block.on_parity_reply(body))
        elif isinstance(body, QkdVerifyReply):
            del link.blocks[block.block]
            result = block.on_verify_reply(body)
            if result.result == "ok":
                self.node.spawn(self._bob_store(link, result))
            else:
                self._record(link, result)
        else:
            raise ValueError(f"Bob does not expect {body.msg_type}")

    def _open_bob_block(self, link: _Link, block: BobBlock) -> None:
        link.blocks[block.block] = block
        while len(link.blocks) > BLOCKS_KEPT:  # Alice gave these up and her abort was lost
            stale = link.blocks.pop(next(iter(link.blocks)))
            self._record(link, BlockResult(stale.block, "abandoned", stale.pairs))

    async def _bob_store(self, link: _Link, result: BlockResult) -> None:
        await asyncio.to_thread(self._store_block, link, result)
        self._send(link, QkdKeyStored(link.name, result.block))
        self._record(link, result)

    # ---- both ends -----------------------------------------------------------------------

    def _store_block(self, link: _Link, result: BlockResult) -> None:
        assert self.store is not None and result.key is not None
        self.store.add_block(link.peer, result.block, result.key)

    def _send(self, link: _Link, body: Any) -> None:
        self.node.send(link.peer, link.postprocessing.seal(body))

    def _on_postprocessing(self, envelope: Envelope, origin) -> None:
        link = self.links.get(envelope.header.sender)
        if link is None:
            log.warning("%s: QKD message from %s, not a QKD peer", self.node.name, link)
            return
        try:
            body = link.postprocessing.open(envelope.body)
        except AuthenticationError as error:
            link.figures["authentication_failures"] += 1
            log.warning("%s: unauthenticated %s: %s", self.node.name, envelope.body.msg_type, error)
            return
        if link.role == "alice":
            inbox = link.inboxes.get(body.block)
            if inbox is not None:  # else: left over from a block given up
                inbox.put_nowait(body)
            return
        try:
            self._bob_step(link, body)
        except Exception as error:
            log.exception("%s: block %s failed at Bob", self.node.name, body.block)
            failed = link.blocks.pop(body.block, None)
            if failed is not None:
                self._record(link, BlockResult(failed.block, "abandoned", failed.pairs))
            self._send(link, QkdBlockAbort(link.name, body.block, type(error).__name__))

    def _record(self, link: _Link, result: BlockResult) -> None:
        figures = link.figures
        figures["blocks"][result.result] = figures["blocks"].get(result.result, 0) + 1
        self.m_blocks.labels(peer=link.peer, result=result.result).inc()
        estimate = result.estimate
        if estimate is not None:
            self.m_qber.labels(peer=link.peer, link=link.name).set(estimate.qber)
            figures["qber_last"] = estimate.qber
            figures["qber_upper_last"] = estimate.qber_upper
            figures["sample_errors"] += estimate.errors
            figures["sample_bits"] += estimate.sample_size
        decoy = result.decoy
        if decoy is not None:
            bounds = decoy.bounds
            self.m_decoy_yield.labels(peer=link.peer, link=link.name).set(bounds.yield_lower)
            self.m_decoy_error.labels(peer=link.peer, link=link.name).set(bounds.error_upper)
            figures["single_photon_yield_lower"] = bounds.yield_lower
            figures["single_photon_error_upper"] = bounds.error_upper
        figures["sifted_bits"] += result.sifted_bits
        figures["leaked_bits"] += result.leaked_bits
        if result.result == "ok":
            figures["secret_key_bits"] += result.key_bits
            self.m_secret.labels(peer=link.peer).inc(result.key_bits)
        for listener in self.block_listeners:
            listener(link.peer, link.name, result)

    # ---- KME reservations over the classical channel ------------------------------------

    def _kme_channels(self, peer: str) -> tuple[_Channel, _Channel] | None:
        """(request, reply) channels of the KME reservations with `peer`, if it shares key.

        A link peer uses the link's; a KME reached by relay gets channels keyed by the
        pair's names (the pre-shared secret stands for what a real pair would provision).
        """
        link = self.links.get(peer)
        if link is not None:
            return link.kme_request, link.kme_reply
        if not self.relay.relays_to(peer):
            return None
        if peer not in self._far_kme_channels:
            pair = "~".join(sorted((self.node.name, peer)))
            self._far_kme_channels[peer] = tuple(  # type: ignore[assignment]
                _Channel(self._key(f"{pair}/{purpose}"), self.node.name, peer, self.session)
                for purpose in ("kme-request", "kme-reply")
            )
        return self._far_kme_channels[peer]

    async def _reserve_at_peer(self, peer: str, reservation: Reservation) -> None:
        channels = self._kme_channels(peer)
        if channels is None:
            raise RuntimeError(f"no QKD link or relay path to {peer}")
        request_channel, reply_channel = channels
        body = request_channel.seal(KmeReserveRequest(reservation.to_dict()))
        reply = (await self.node.request(peer, body, timeout_s=5.0)).body
        if isinstance(reply, ErrorReply):
            raise RuntimeError(f"{peer}: {reply.code}: {reply.message}")
        if not isinstance(reply, KmeReserveReply):
            raise RuntimeError(f"{peer} answered {reply.msg_type}")
        reply_channel.open(reply)
        if not reply.ok:
            raise RuntimeError(f"{peer} refused the reservation: {reply.message}")

    async def _on_reserve_request(self, envelope: Envelope, origin) -> None:
        sender = envelope.header.sender
        channels = self._kme_channels(sender)
        ok, message = False, ""
        try:
            if channels is None or self.store is None:
                raise ReservationError(f"{self.node.name} shares no key with {sender}")
            channels[0].open(envelope.body)
            reservation = Reservation.from_dict(envelope.body.reservation)
            for attempt in range(RESERVE_ATTEMPTS):
                try:
                    await asyncio.to_thread(self.store.reserve_for, sender, reservation)
                    ok = True
                    break
                except ReservationError as error:
                    # Units of a block whose ack is still on its way: wait for it.
                    if "unknown key unit" not in str(error) or attempt == RESERVE_ATTEMPTS - 1:
                        raise
                    await asyncio.sleep(RESERVE_RETRY_S)
        except (ReservationError, AuthenticationError) as error:
            message = str(error)
            log.warning("%s: reservation from %s refused: %s", self.node.name, sender, message)
        if channels is None:
            self.node.reply(
                origin, ErrorReply("no_qkd_link", message), parent_id=envelope.header.msg_id
            )
            return
        reply = channels[1].seal(KmeReserveReply(ok, message))
        self.node.reply(origin, reply, parent_id=envelope.header.msg_id)


def _new_figures(role: str) -> dict[str, Any]:
    return {
        "role": role,
        "blocks": {},
        "raw_pairs": 0,
        "sifted_bits": 0,
        "sample_bits": 0,
        "sample_errors": 0,
        "leaked_bits": 0,
        "secret_key_bits": 0,
        "qber_last": None,
        "qber_upper_last": None,
        "authentication_failures": 0,
    }


def _ensure_pki_locked(run_dir: Path, nodes: list[str], saes: list[str]):
    """ensure_pki, one process at a time: every node may start it at once."""
    from qnemu.launch.pki import ensure_pki

    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / ".pki.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            return ensure_pki(run_dir, nodes, saes)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def extension(node, topology, plan):
    """Every node gets one (its metrics exist everywhere); it idles without SAEs."""
    process = plan.process(node.name)
    return QkdExtension(
        node,
        topology,
        run_dir=node.run_dir,
        seed=plan.seed,
        kme_host=process.metrics_bind_host or process.metrics_host,
        kme_port=process.kme_port,
        state_dir=plan.state_path(node.run_dir) if node.run_dir is not None else None,
        secrets_dir=plan.secrets_dir,
    )
