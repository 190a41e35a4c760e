"""The ETSI GS QKD 014 V1.1.1 key-delivery REST API of one KME, over HTTPS with mutual TLS.

`KeyDeliveryApi` is the KME's logic (who may ask for what, the limits, the two-step hand-
out with the peer KME); `create_app` puts it behind aiohttp routes; `serve_kme` listens.
The SAE is whoever the client certificate's CN names. A master SAE's keys come from the
pool shared with the slave SAE's KME and go out only after that KME has committed them
(`reserve_at_peer`), so the slave SAE can always fetch them — once. A slave SAE on a
node with no QKD link to this one is served from key relayed through trusted nodes
(`key_relay`), which is established on demand when the pool lacks bits.
"""

import asyncio
import base64
import logging
import ssl
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from aiohttp import web
from pydantic import BaseModel, ValidationError

from qnemu.keys.relay import shortfall_bits
from qnemu.keys.store import (
    InsufficientKeyMaterial,
    KeyLookupError,
    KeyStore,
    Reservation,
)
from qnemu.kme.models import ErrorBody, Key, KeyContainer, KeyIDsRequest, KeyRequest, Status

__all__ = [
    "API_PREFIX",
    "ApiError",
    "KeyDeliveryApi",
    "KeyRelay",
    "KmeLimits",
    "KmeServer",
    "ReserveAtPeer",
    "SaeIdentity",
    "SaeResolver",
    "create_app",
    "kme_ssl_context",
    "sae_from_certificate",
    "serve_kme",
]

log = logging.getLogger(__name__)

API_PREFIX = "/api/v1/keys"
BITS_PER_BYTE = 8

# (peer KME ID, reservation) -> returns once the peer's store has committed it, else raises.
ReserveAtPeer = Callable[[str, Reservation], Awaitable[None]]
# SAE_ID -> the KME (node) it is attached to, or None if no such SAE.
SaeResolver = Callable[[str], str | None]
# HTTP request -> the calling SAE_ID, or None if the client is not identified.
SaeIdentity = Callable[[web.Request], str | None]


class KeyRelay(Protocol):
    """The node's trusted-node relay, as the KME sees it (see `qnemu.node.relay`)."""

    def relays_to(self, peer: str) -> bool:
        """True if key with `peer` comes by relay (no QKD link, but a path of them)."""
        ...

    def relayable_bits(self, peer: str) -> int:
        """At most this many more bits could be relayed to `peer` now (an upper bound)."""
        ...

    async def relay(self, peer: str, bits: int) -> None:
        """Add `bits` offerable end-to-end bits with `peer` to the store, or raise."""
        ...


@dataclass(frozen=True)
class KmeLimits:
    """What a KME offers per request, reported in Status (sizes in bits)."""

    key_size_bits: int = 256
    min_key_size_bits: int = 64
    max_key_size_bits: int = 8192
    max_key_per_request: int = 128
    max_key_count: int = 100_000
    reserve_timeout_s: float = 5.0

    def __post_init__(self) -> None:
        sizes = (self.min_key_size_bits, self.key_size_bits, self.max_key_size_bits)
        if any(size <= 0 or size % BITS_PER_BYTE for size in sizes):
            raise ValueError("key sizes are positive multiples of 8 bits")
        if not sizes[0] <= sizes[1] <= sizes[2]:
            raise ValueError("need min_key_size_bits <= key_size_bits <= max_key_size_bits")


class ApiError(Exception):
    """A refused request: its HTTP status and the spec's error body."""

    def __init__(
        self, status: int, message: str, details: list[dict[str, Any]] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = ErrorBody(message=message, details=details)


@dataclass
class KeyDeliveryApi:
    """One node's KME: ETSI 014 key delivery to the SAEs attached to it.

    Args:
        kme_id: this KME's ID (the node name).
        saes: SAE_IDs attached to this KME (the only clients it serves).
        resolve_kme: SAE_ID -> KME ID for every SAE of the network.
        store: this node's key store.
        reserve_at_peer: hands a reservation to the peer KME and returns once committed.
        limits: sizes and counts offered.
        key_relay: relays key to KMEs this node shares no QKD link with (None: 503).
    """

    kme_id: str
    saes: Collection[str]
    resolve_kme: SaeResolver
    store: KeyStore
    reserve_at_peer: ReserveAtPeer
    limits: KmeLimits = field(default_factory=KmeLimits)
    # (endpoint, HTTP status) -> count: requests served and refused, for metrics.
    stats: Counter[tuple[str, int]] = field(default_factory=Counter)
    key_relay: KeyRelay | None = None
    # One relay at a time per far KME, so concurrent requests do not each relay a share.
    _relay_locks: dict[str, asyncio.Lock] = field(default_factory=dict, init=False, repr=False)

    def _caller(self, sae_id: str | None) -> str:
        if sae_id is None:
            raise ApiError(401, "a client certificate naming an SAE is required")
        if sae_id not in self.saes:
            raise ApiError(401, f"SAE {sae_id} is not registered at KME {self.kme_id}")
        return sae_id

    def _peer_kme(self, other_sae_id: str, role: str) -> str:
        peer = self.resolve_kme(other_sae_id)
        if peer is None:
            raise ApiError(400, f"unknown {role}_SAE_ID {other_sae_id}")
        if peer == self.kme_id:
            raise ApiError(
                400,
                f"{role} SAE {other_sae_id} is attached to this KME; keys are shared"
                " between two KMEs",
            )
        return peer

    async def status(self, caller: str | None, slave_sae_id: str) -> Status:
        """Get status: what `caller` (master) can get for `slave_sae_id`."""
        master_sae_id = self._caller(caller)
        peer = self._peer_kme(slave_sae_id, "slave")
        pool_bits = await asyncio.to_thread(self.store.pool_bits, peer, offerable=True)
        if self.key_relay is not None and self.key_relay.relays_to(peer):
            pool_bits += await asyncio.to_thread(self.key_relay.relayable_bits, peer)
        limits = self.limits
        return Status(
            source_KME_ID=self.kme_id,
            target_KME_ID=peer,
            master_SAE_ID=master_sae_id,
            slave_SAE_ID=slave_sae_id,
            key_size=limits.key_size_bits,
            stored_key_count=pool_bits // limits.key_size_bits,
            max_key_count=limits.max_key_count,
            max_key_per_request=limits.max_key_per_request,
            max_key_size=limits.max_key_size_bits,
            min_key_size=limits.min_key_size_bits,
            max_SAE_ID_count=0,
        )

    async def enc_keys(
        self, caller: str | None, slave_sae_id: str, request: KeyRequest
    ) -> KeyContainer:
        """Get key: new keys for master `caller`, shared with `slave_sae_id`."""
        master_sae_id = self._caller(caller)
        peer = self._peer_kme(slave_sae_id, "slave")
        limits = self.limits
        number = 1 if request.number is None else request.number
        size = limits.key_size_bits if request.size is None else request.size
        if not 1 <= number <= limits.max_key_per_request:
            raise ApiError(400, f"number must be 1 to {limits.max_key_per_request}")
        if not limits.min_key_size_bits <= size <= limits.max_key_size_bits:
            raise ApiError(
                400,
                f"size must be {limits.min_key_size_bits} to {limits.max_key_size_bits} bits",
            )
        if size % BITS_PER_BYTE:
            raise ApiError(400, "size must be a multiple of 8 bits")
        if request.additional_slave_SAE_IDs:
            raise ApiError(400, "key multicast is not supported (max_SAE_ID_count is 0)")
        if request.extension_mandatory:
            names = _extension_names(request.extension_mandatory)
            raise ApiError(
                400,
                "not all extension_mandatory parameters are supported",
                [{"extension_mandatory_unsupported": names}],
            )
        reservation, keys = await self._allocate(peer, master_sae_id, slave_sae_id, number, size)
        key_ids = reservation.key_ids()
        try:
            async with asyncio.timeout(limits.reserve_timeout_s):
                await self.reserve_at_peer(peer, reservation)
        except Exception as error:
            # The peer may or may not hold these keys: their bits are never offered again.
            await asyncio.to_thread(self.store.discard, key_ids)
            log.warning("KME %s did not commit %d keys: %r", peer, len(key_ids), error)
            raise ApiError(503, f"KME {peer} did not confirm the keys") from None
        await asyncio.to_thread(self.store.confirm_delivery, key_ids)
        return _container(keys)

    async def _allocate(
        self, peer: str, master_sae_id: str, slave_sae_id: str, number: int, size: int
    ) -> tuple[Reservation, list[tuple[str, bytes]]]:
        """Cut the keys from the pool shared with `peer`; relay the shortfall if `peer` is far."""

        def allocate() -> tuple[Reservation, list[tuple[str, bytes]]]:
            return self.store.allocate(peer, master_sae_id, slave_sae_id, number, size)

        relay = self.key_relay
        try:
            return await asyncio.to_thread(allocate)
        except InsufficientKeyMaterial as error:
            if relay is None or not relay.relays_to(peer):
                message = f"insufficient key material shared with {peer}: {error}"
                raise ApiError(503, message) from None
        lock = self._relay_locks.setdefault(peer, asyncio.Lock())
        async with lock:
            offerable = await asyncio.to_thread(self.store.pool_bits, peer, offerable=True)
            missing = shortfall_bits(number * size, offerable)
            if missing:
                try:
                    await relay.relay(peer, missing)
                except Exception as error:
                    log.warning(
                        "KME %s: relay of %d bits to %s failed: %r",
                        self.kme_id,
                        missing,
                        peer,
                        error,
                    )
                    raise ApiError(503, f"no key relayed to KME {peer}: {error}") from None
            try:
                return await asyncio.to_thread(allocate)
            except InsufficientKeyMaterial as error:
                message = f"insufficient key material relayed to {peer}: {error}"
                raise ApiError(503, message) from None

    async def dec_keys(
        self, caller: str | None, master_sae_id: str, key_ids: list[str]
    ) -> KeyContainer:
        """Get key with key IDs: the keys master `master_sae_id` got for slave `caller`."""
        slave_sae_id = self._caller(caller)
        self._peer_kme(master_sae_id, "master")
        if not key_ids:
            raise ApiError(400, "no key_ID given")
        if len(key_ids) > self.limits.max_key_per_request:
            raise ApiError(400, f"at most {self.limits.max_key_per_request} key_IDs per request")
        for key_id in key_ids:
            try:
                uuid.UUID(key_id)
            except ValueError:
                raise ApiError(400, f"key_ID {key_id!r} is not a UUID") from None
        try:
            keys = await asyncio.to_thread(
                self.store.take_reserved, master_sae_id, slave_sae_id, key_ids
            )
        except KeyLookupError as error:
            status = 401 if error.reason == "not_addressed" else 400
            raise ApiError(status, str(error), [{"key_ID": error.key_id}]) from None
        return _container(keys)


def _extension_names(extensions: list[dict[str, Any]] | dict[str, Any]) -> list[str]:
    items = extensions if isinstance(extensions, list) else [extensions]
    return sorted({name for item in items for name in item})


def _container(keys: list[tuple[str, bytes]]) -> KeyContainer:
    return KeyContainer(
        keys=[
            Key(key_ID=key_id, key=base64.b64encode(material).decode("ascii"))
            for key_id, material in keys
        ]
    )


# -- HTTP ---------------------------------------------------------------------------------

API_KEY = web.AppKey("kme_api", KeyDeliveryApi)
IDENTITY_KEY = web.AppKey("kme_identity", SaeIdentity)


def sae_from_certificate(request: web.Request) -> str | None:
    """The CN of the verified client certificate (the TLS context requires one)."""
    transport = request.transport
    peer_cert = transport.get_extra_info("peercert") if transport is not None else None
    if not peer_cert:
        return None
    for relative_name in peer_cert.get("subject", ()):
        for attribute, value in relative_name:
            if attribute == "commonName":
                return str(value)
    return None


def _json(model: BaseModel, status: int = 200) -> web.Response:
    return web.json_response(model.model_dump(mode="json", exclude_none=True), status=status)


async def _parse_body(request: web.Request, model: type[BaseModel]) -> Any:
    try:
        data = await request.json()
    except ValueError:
        raise ApiError(400, "request body is not JSON") from None
    try:
        return model.model_validate(data)
    except ValidationError as error:
        details = [
            {"field": ".".join(str(p) for p in item["loc"]), "error": item["msg"]}
            for item in error.errors()
        ]
        raise ApiError(400, f"bad {model.__name__}", details) from None


def _query_int(query: Mapping[str, str], name: str) -> int | None:
    if name not in query:
        return None
    try:
        return int(query[name])
    except ValueError:
        raise ApiError(400, f"query parameter {name} must be an integer") from None


async def _status(request: web.Request) -> web.Response:
    api, caller = request.app[API_KEY], request.app[IDENTITY_KEY](request)
    return _json(await api.status(caller, request.match_info["slave_SAE_ID"]))


async def _enc_keys(request: web.Request) -> web.Response:
    api, caller = request.app[API_KEY], request.app[IDENTITY_KEY](request)
    if request.method == "POST":
        key_request = await _parse_body(request, KeyRequest)
    else:
        query = request.query
        key_request = KeyRequest(number=_query_int(query, "number"), size=_query_int(query, "size"))
    slave_sae_id = request.match_info["slave_SAE_ID"]
    return _json(await api.enc_keys(caller, slave_sae_id, key_request))


async def _dec_keys(request: web.Request) -> web.Response:
    api, caller = request.app[API_KEY], request.app[IDENTITY_KEY](request)
    if request.method == "POST":
        body: KeyIDsRequest = await _parse_body(request, KeyIDsRequest)
        key_ids = [entry.key_ID for entry in body.key_IDs]
    else:
        key_ids = request.query.getall("key_ID", [])
    return _json(await api.dec_keys(caller, request.match_info["master_SAE_ID"], key_ids))


@web.middleware
async def _errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Every refusal gets the spec's error body; nothing crashes the KME."""
    endpoint = request.path.rsplit("/", 1)[-1]
    stats = request.app[API_KEY].stats
    try:
        response = await handler(request)
    except ApiError as error:
        response = _json(error.body, error.status)
    except web.HTTPException as error:
        response = _json(ErrorBody(message=error.reason), error.status)
    except Exception:
        log.exception("KME request %s %s failed", request.method, request.path)
        response = _json(ErrorBody(message="internal error of the KME"), 503)
    stats[(endpoint, response.status)] += 1
    return response


def create_app(
    api: KeyDeliveryApi, *, identify: SaeIdentity = sae_from_certificate
) -> web.Application:
    """The ETSI 014 routes of `api`; `identify` names the calling SAE (default: its TLS cert)."""
    app = web.Application(middlewares=[_errors])
    app[API_KEY] = api
    app[IDENTITY_KEY] = identify
    app.router.add_get(API_PREFIX + "/{slave_SAE_ID}/status", _status)
    for method in ("GET", "POST"):
        app.router.add_route(method, API_PREFIX + "/{slave_SAE_ID}/enc_keys", _enc_keys)
        app.router.add_route(method, API_PREFIX + "/{master_SAE_ID}/dec_keys", _dec_keys)
    return app


def kme_ssl_context(ca_cert: Path, cert: Path, key: Path) -> ssl.SSLContext:
    """Server side of mutual TLS: our KME certificate; clients must show one from our CA."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(ca_cert))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_cert_chain(str(cert), str(key))
    return context


@dataclass
class KmeServer:
    """A listening KME: its URL, and `stop()`."""

    runner: web.AppRunner
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}"

    async def stop(self) -> None:
        await self.runner.cleanup()


async def serve_kme(
    app: web.Application, host: str, port: int, ssl_context: ssl.SSLContext
) -> KmeServer:
    """Start listening (port 0: any free port) and return at once; `stop()` ends it."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=ssl_context)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    bound_port = runner.addresses[0][1] if port == 0 else port
    return KmeServer(runner, host, bound_port)
