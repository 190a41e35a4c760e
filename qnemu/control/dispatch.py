"""A node's MQTT request handling without the I/O: topic and bytes in, payloads out.

Every request gets an answer on `.../response/<correlation_id>`: for entangle, one
`pair` message per delivered pair and then one final `done` or `error`; for free, one
final `freed` or `error`. A request that cannot be answered (no usable correlation_id)
is told as a `request_rejected` event; every rejection is also told that way, so a
monitoring program sees them all. Nothing a client sends raises out of `handle()`.
"""

import json
import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from pydantic import BaseModel, ValidationError

from qnemu.control.payloads import (
    CORRELATION_ID_PATTERN,
    AppRequestPayload,
    AppResponse,
    DoneResponse,
    EntangleRequestPayload,
    ErrorResponse,
    FaultRequestPayload,
    FaultResponse,
    FreedResponse,
    FreeRequestPayload,
    KeyRequestPayload,
    KeysResponse,
    LinkState,
    MemoryState,
    NodeStartedEvent,
    NodeState,
    NodeStoppingEvent,
    PairDeliveredEvent,
    PairResponse,
    RequestFailedEvent,
    RequestRejectedEvent,
    json_safe,
    pair_payload,
)
from qnemu.control.topics import REQUEST_KINDS, NodeTopics, parse_topic
from qnemu.wire.control import (
    EntangleDone,
    EntangleErr,
    EntangleExpire,
    EntangleOk,
    EntangleRequest,
)

__all__ = [
    "MAX_REQUEST_BYTES",
    "AppService",
    "ControlledNode",
    "FaultService",
    "KeyService",
    "Publish",
    "RequestDispatcher",
    "RequestFailed",
    "RequestRejected",
    "correlation_id_of",
    "decode_request",
    "validate_request",
]

log = logging.getLogger(__name__)
MAX_REQUEST_BYTES = 64 * 1024
_CORRELATION_ID_HELP = "1 to 128 characters from A-Z a-z 0-9 . _ : -"

# (topic, payload, retain): hands a payload to whatever publishes it.
Publish = Callable[[str, BaseModel, bool], None]


class ControlledNode(Protocol):
    """What the dispatcher needs of a node (NodeService has it all)."""

    name: str
    memory: Any  # .held: the qubits the node holds
    clock: Any  # .now(): emulated seconds

    def submit(self, request: EntangleRequest, sink: Any) -> Any: ...
    def release_qubits(self, qubits: list[int]) -> Awaitable[None]: ...
    def stats(self) -> dict[str, Any]: ...


class RequestRejected(Exception):
    """A request refused before it reached the node (or launcher): its code and message."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


class RequestFailed(Exception):
    """A well-formed request the node could not carry out (no key, a process not
    reached...): answered as an error and told as `request_failed`."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


class KeyService(Protocol):
    """The node's key manager as the `key` request sees it (qnemu.node.mqtt_services)."""

    async def keys(self, request: KeyRequestPayload) -> KeysResponse: ...


class AppService(Protocol):
    """The node's application session (qnemu.node.apps.NodeApps)."""

    def describe(self) -> dict[str, Any]: ...
    async def force_detach(self) -> int: ...


class FaultService(Protocol):
    """The faults a node and its links can take (qnemu.node.mqtt_services)."""

    async def apply(self, request: FaultRequestPayload) -> dict[str, Any]: ...


class RequestDispatcher:
    """Answers one node's MQTT requests and builds its events and retained state."""

    def __init__(
        self,
        node: ControlledNode,
        publish: Publish,
        *,
        network: str,
        known_nodes: set[str] | None = None,
        wall_clock: Callable[[], float] = time.time,
        count: Callable[[str, str], None] | None = None,
        keys: KeyService | None = None,
        faults: FaultService | None = None,
        apps: AppService | None = None,
        link_health: Callable[[], dict[str, dict[str, Any]]] | None = None,
    ):
        """
        Args:
            network: the network's name (the topology's `name`), the topics' second level.
            known_nodes: every node of the network; an entangle request for another
                name is refused as unknown_node (None: leave it to the node).
            count: called with (request kind, result) once per request, for metrics.
            keys: serves `key` requests (None: refused as `no_kme`).
            faults: serves `fault` requests (None: refused as `unsupported`).
            apps: serves `app` requests (None: refused as `unsupported`).
            link_health: peer -> {"up", "reason"} for the retained state.
        """
        self.node = node
        self.network = network
        self.topics = NodeTopics(network, node.name)
        self.publish = publish
        self.known_nodes = known_nodes
        self.wall_clock = wall_clock
        self.count = count or (lambda kind, result: None)
        self.keys = keys
        self.faults = faults
        self.apps = apps
        self.link_health = link_health or dict
        self.open: dict[str, _EntangleSink | None] = {}  # correlation id → request in progress
        self.handlers: dict[str, Callable[[str, dict], Awaitable[None]]] = {
            "entangle": self._on_entangle,
            "free": self._on_free,
            "key": self._on_key,
            "fault": self._on_fault,
            "app": self._on_app,
        }
        assert set(self.handlers) == set(REQUEST_KINDS)

    # ---- requests --------------------------------------------------------------------

    async def handle(self, topic: str, payload: bytes) -> None:
        """Answer one message received on this node's request topics; never raises."""
        kind: str | None = None
        correlation_id: str | None = None
        try:
            parsed = parse_topic(topic)
            if (
                parsed is None
                or parsed.section != "request"
                or topic != self.topics.request(parsed.leaf or "")
            ):
                log.warning("%s: ignoring a message on %s", self.node.name, topic)
                return
            kind = parsed.leaf
            document = decode_request(payload)
            correlation_id = correlation_id_of(document)
            handler = self.handlers.get(kind or "")
            if handler is None:
                known = ", ".join(REQUEST_KINDS)
                raise RequestRejected(
                    "unknown_kind", f"unknown request kind {kind!r} (known: {known})"
                )
            if correlation_id is None:
                raise RequestRejected(
                    "bad_request",
                    "correlation_id missing or invalid: it must be a string of "
                    + _CORRELATION_ID_HELP,
                )
            if correlation_id in self.open:
                raise RequestRejected(
                    "duplicate_correlation_id",
                    f"a request with correlation_id {correlation_id!r} is still open",
                )
            await handler(correlation_id, document)
        except RequestRejected as rejected:
            self._reject(kind, correlation_id, rejected.code, rejected.message)
        except Exception as error:  # a bug here must not take the node down
            log.exception("%s: MQTT request on %s failed", self.node.name, topic)
            self._reject(kind, correlation_id, "internal", f"{type(error).__name__}: {error}")

    async def _on_entangle(self, correlation_id: str, document: dict) -> None:
        request = validate_request(EntangleRequestPayload, document)
        if self.known_nodes is not None and request.remote_node_id not in self.known_nodes:
            known = ", ".join(sorted(self.known_nodes))
            raise RequestRejected(
                "unknown_node",
                f"remote_node_id {request.remote_node_id!r} is not a node of network "
                f"{self.network!r} (nodes: {known})",
            )
        if request.number == 0 and request.max_time_s == 0:
            raise RequestRejected(
                "bad_request",
                "number 0 (pairs until cancelled) needs max_time_s > 0: "
                "the MQTT API has no cancel request yet",
            )
        sink = _EntangleSink(self, correlation_id)
        self.open[correlation_id] = sink
        self.count("entangle", "accepted")
        self.node.submit(
            EntangleRequest(
                remote_node_id=request.remote_node_id,
                number=request.number,
                minimum_fidelity=request.minimum_fidelity,
                max_time_s=request.max_time_s,
                type=request.type,
                basis=request.basis,
                purify=request.purify,
            ),
            sink,
        )

    async def _on_free(self, correlation_id: str, document: dict) -> None:
        request = validate_request(FreeRequestPayload, document)
        wanted = list(dict.fromkeys(request.qubits))
        held = [qubit for qubit in wanted if qubit in self.node.memory.held]
        not_held = [qubit for qubit in wanted if qubit not in self.node.memory.held]
        self.open[correlation_id] = None  # busy until the broker has freed them
        try:
            await self.node.release_qubits(held)
        finally:
            self.open.pop(correlation_id, None)
        self.count("free", "ok")
        self._respond(
            correlation_id,
            FreedResponse(correlation_id=correlation_id, freed=len(held), not_held=not_held),
        )

    async def _on_key(self, correlation_id: str, document: dict) -> None:
        request = validate_request(KeyRequestPayload, document)
        if self.keys is None:
            raise RequestRejected("no_kme", f"{self.node.name} runs no KME (it declares no SAE)")
        await self._serve("key", correlation_id, self.keys.keys(request))

    async def _on_fault(self, correlation_id: str, document: dict) -> None:
        request = validate_request(FaultRequestPayload, document)
        if self.faults is None:
            raise RequestRejected("unsupported", f"{self.node.name} takes no faults over MQTT")
        if request.remote_node_id is not None and request.remote_node_id not in self.neighbours:
            known = ", ".join(sorted(self.neighbours)) or "none"
            raise RequestRejected(
                "unknown_node",
                f"remote_node_id {request.remote_node_id!r} is not a neighbour of "
                f"{self.node.name} (neighbours: {known})",
            )

        async def apply() -> FaultResponse:
            processes = await self.faults.apply(request)
            return FaultResponse(
                correlation_id=correlation_id, fault=request.fault, processes=json_safe(processes)
            )

        await self._serve("fault", correlation_id, apply())

    async def _on_app(self, correlation_id: str, document: dict) -> None:
        request = validate_request(AppRequestPayload, document)
        if self.apps is None:
            raise RequestRejected("unsupported", f"{self.node.name} runs no applications")
        apps = self.apps

        async def act() -> AppResponse:
            before = apps.describe()
            freed = await apps.force_detach() if request.action == "detach" else 0
            return AppResponse(
                correlation_id=correlation_id, action=request.action, freed=freed, **before
            )

        await self._serve("app", correlation_id, act())

    @property
    def neighbours(self) -> set[str]:
        return set(getattr(self.node, "neighbours", ()))

    async def _serve(self, kind: str, correlation_id: str, answer: Awaitable[BaseModel]) -> None:
        """Run a request that ends with one answer; a RequestFailed is its error."""
        self.open[correlation_id] = None  # busy until answered
        try:
            response = await answer
        except RequestFailed as failed:
            self.count(kind, failed.code)
            self._respond(
                correlation_id,
                ErrorResponse(
                    correlation_id=correlation_id,
                    request_kind=kind,
                    error_code=failed.code,
                    message=failed.message,
                ),
            )
            event = RequestFailedEvent(
                **self.event_fields(),
                correlation_id=correlation_id,
                error_code=failed.code,
                message=failed.message,
                delivered=0,
            )
            self.publish(self.topics.event("request_failed"), event, False)
            return
        finally:
            self.open.pop(correlation_id, None)
        self.count(kind, "ok")
        self._respond(correlation_id, response)

    def _reject(self, kind: str | None, correlation_id: str | None, code: str, message: str):
        self.count(kind if kind in REQUEST_KINDS else "unknown", code)
        if correlation_id is not None:
            response = ErrorResponse(
                correlation_id=correlation_id,
                request_kind=kind or "",
                error_code=code,
                message=message,
            )
            self._respond(correlation_id, response)
        event = RequestRejectedEvent(
            **self.event_fields(),
            correlation_id=correlation_id,
            request_kind=kind,
            error_code=code,
            message=message,
        )
        self.publish(self.topics.event("request_rejected"), event, False)

    def _respond(self, correlation_id: str, response: BaseModel) -> None:
        self.publish(self.topics.response(correlation_id), response, False)

    # ---- events and state ------------------------------------------------------------

    def event_fields(self) -> dict[str, Any]:
        """The fields every event of this node starts with."""
        return {
            "network": self.network,
            "node": self.node.name,
            "wall_time_s": self.wall_clock(),
            "emulated_time_s": self.node.clock.now(),
        }

    def publish_started(self, connection: int) -> None:
        event = NodeStartedEvent(**self.event_fields(), connection=connection)
        self.publish(self.topics.event("node_started"), event, False)

    def publish_stopping(self) -> None:
        event = NodeStoppingEvent(**self.event_fields())
        self.publish(self.topics.event("node_stopping"), event, False)

    def publish_state(self, status: str = "running") -> None:
        self.publish(self.topics.state, self.state(status), True)

    def state(self, status: str = "running") -> NodeState:
        """The node's retained state, from its stats()."""
        stats = self.node.stats()
        memory = stats.get("memory", {})
        health = self.link_health()
        return NodeState(
            status=status,
            **self.event_fields(),
            memory=MemoryState(
                capacity=memory.get("capacity", 0),
                in_use=memory.get("in_use", 0),
                reserved=memory.get("reserved", 0),
                held=list(memory.get("held", [])),
            ),
            links={
                peer: LinkState(
                    delivered=figures["delivered"],
                    heralded=figures["heralded"],
                    mean_fidelity=json_safe(figures["mean_fidelity"]),
                    up=health.get(peer, {}).get("up"),
                    down_reason=health.get(peer, {}).get("reason"),
                )
                for peer, figures in stats.get("links", {}).items()
            },
            active_requests=stats.get("active_requests", 0),
            open_mqtt_requests=len(self.open),
            end_to_end=json_safe(stats.get("end_to_end", {})),
        )

    def offline_state(self) -> NodeState:
        """The last will: what the broker tells everyone when this node vanishes."""
        return NodeState(status="offline", network=self.network, node=self.node.name)


class _EntangleSink:
    """Where the node reports one MQTT entangle request: responses plus events."""

    def __init__(self, dispatcher: RequestDispatcher, correlation_id: str):
        self.dispatcher = dispatcher
        self.correlation_id = correlation_id
        self.finished = False
        self.delivered = 0

    def ok(self, pair: EntangleOk) -> None:
        if self.finished:
            return
        self.delivered += 1
        payload = pair_payload(pair)
        dispatcher = self.dispatcher
        dispatcher._respond(
            self.correlation_id, PairResponse(correlation_id=self.correlation_id, pair=payload)
        )
        event = PairDeliveredEvent(
            **dispatcher.event_fields(), correlation_id=self.correlation_id, pair=payload
        )
        dispatcher.publish(dispatcher.topics.event("pair_delivered"), event, False)

    def err(self, error: EntangleErr) -> None:
        if not self._finish(error.error_code):
            return
        dispatcher = self.dispatcher
        response = ErrorResponse(
            correlation_id=self.correlation_id,
            request_kind="entangle",
            error_code=error.error_code,
            message=error.message,
            create_id=error.create_id,
            delivered=error.delivered,
        )
        dispatcher._respond(self.correlation_id, response)
        event = RequestFailedEvent(
            **dispatcher.event_fields(),
            correlation_id=self.correlation_id,
            error_code=error.error_code,
            message=error.message,
            delivered=error.delivered,
        )
        dispatcher.publish(dispatcher.topics.event("request_failed"), event, False)

    def expire(self, expire: EntangleExpire) -> None:
        """Pairs of this request lost after (or instead of) their OK: told as a
        request_failed event with EXPIRE (the request itself may go on)."""
        dispatcher = self.dispatcher
        event = RequestFailedEvent(
            **dispatcher.event_fields(),
            correlation_id=self.correlation_id,
            error_code="EXPIRE",
            message=expire.message,
            delivered=self.delivered,
        )
        dispatcher.publish(dispatcher.topics.event("request_failed"), event, False)

    def done(self, done: EntangleDone) -> None:
        if not self._finish("done"):
            return
        response = DoneResponse(
            correlation_id=self.correlation_id, create_id=done.create_id, delivered=done.delivered
        )
        self.dispatcher._respond(self.correlation_id, response)

    def _finish(self, result: str) -> bool:
        if self.finished:
            return False
        self.finished = True
        if self.dispatcher.open.get(self.correlation_id) is self:
            del self.dispatcher.open[self.correlation_id]
        self.dispatcher.count("entangle", result)
        return True


def decode_request(payload: bytes) -> dict:
    if len(payload) > MAX_REQUEST_BYTES:
        raise RequestRejected("too_large", f"payload of {len(payload)} bytes > {MAX_REQUEST_BYTES}")
    try:
        document = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as error:
        raise RequestRejected("bad_json", f"payload is not JSON: {error}") from None
    if not isinstance(document, dict):
        raise RequestRejected(
            "bad_request", f"payload must be a JSON object, got {_json_type(document)}"
        )
    return document


def correlation_id_of(document: dict) -> str | None:
    value = document.get("correlation_id")
    if isinstance(value, str) and re.fullmatch(CORRELATION_ID_PATTERN, value):
        return value
    return None


def validate_request(model: type[BaseModel], document: dict) -> Any:
    try:
        return model.model_validate(document)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in item['loc']) or 'payload'}: {item['msg']}"
            for item in error.errors(include_url=False)
        )
        raise RequestRejected("bad_request", problems) from None


def _json_type(value: Any) -> str:
    names = {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number")
