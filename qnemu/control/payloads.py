"""JSON payloads of the MQTT API, one pydantic model each (their schemas are the docs).

Requests come from a control program on `.../request/<kind>`; every other payload is
published by a node. Times named `*_time_s` are Unix wall-clock seconds; `created_at`,
`delivered_at` and `emulated_time_s` are the run's emulated seconds.
"""

import math
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from qnemu.wire.control import EntangleOk

__all__ = [
    "CORRELATION_ID_PATTERN",
    "DoneResponse",
    "EntangleRequestPayload",
    "ErrorResponse",
    "FreeRequestPayload",
    "FreedResponse",
    "LinkState",
    "MemoryState",
    "NodeStartedEvent",
    "NodeState",
    "NodeStoppingEvent",
    "PairDeliveredEvent",
    "PairPayload",
    "PairResponse",
    "RequestFailedEvent",
    "RequestRejectedEvent",
    "json_safe",
    "pair_payload",
]

# Safe as one topic level: no '/', '+', '#' and no spaces.
CORRELATION_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"
CorrelationId = Annotated[str, StringConstraints(pattern=CORRELATION_ID_PATTERN)]
StrictInt = Annotated[int, Field(strict=True)]
Fidelity = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]
MAX_FREE_QUBITS = 4096


class _Payload(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ---- requests (control program → node) -------------------------------------------------


class EntangleRequestPayload(_Payload):
    """A link-layer CREATE: pairs between this node and `remote_node_id` (a neighbour, or
    any node reached through repeaters)."""

    correlation_id: CorrelationId
    remote_node_id: Annotated[str, StringConstraints(min_length=1, max_length=63)]
    number: Annotated[int, Field(strict=True, ge=0)] = 1
    minimum_fidelity: Fidelity = 0.0
    max_time_s: Annotated[float, Field(ge=0.0, allow_inf_nan=False)] = 10.0
    type: Literal["keep", "measure"] = "keep"
    basis: Literal["Z", "X", "Y", "random"] = "random"
    purify: Literal["dejmps", "bbpssw", "none"] = "dejmps"


class FreeRequestPayload(_Payload):
    """Release qubits this node holds (its halves of keep-mode pairs)."""

    correlation_id: CorrelationId
    qubits: Annotated[
        list[Annotated[int, Field(strict=True, ge=0)]],
        Field(min_length=1, max_length=MAX_FREE_QUBITS),
    ]


# ---- responses (node → control program, on .../response/<correlation_id>) --------------


class PairPayload(_Payload):
    """One delivered pair, in the link layer's OK words."""

    create_id: StrictInt
    sequence_number: StrictInt
    src: str
    dst: str
    bell_state: str
    fidelity: float | None  # oracle fidelity at delivery (keep), the estimate (measure)
    created_at: float
    delivered_at: float
    attempts: StrictInt
    qubits: tuple[int, int] | None = None  # keep: (src half, dst half), held until freed
    outcomes: tuple[int, int] | None = None  # measure: (src, dst)
    bases: tuple[str, str] | None = None
    path: list[str] | None = None  # through repeaters: every node from src to dst


class PairResponse(_Payload):
    """One pair of an entangle request; more messages follow (final is false)."""

    kind: Literal["pair"] = "pair"
    correlation_id: str
    final: Literal[False] = False
    pair: PairPayload


class DoneResponse(_Payload):
    """An entangle request delivered all its pairs (the last message for it)."""

    kind: Literal["done"] = "done"
    correlation_id: str
    final: Literal[True] = True
    create_id: StrictInt
    delivered: StrictInt


class ErrorResponse(_Payload):
    """A request failed or was refused (the last message for it). `error_code` is the
    link layer's (UNSUPP, NOTIME, NORES, TIMEOUT, EXPIRE, ...) or the API's own
    (bad_json, bad_request, unknown_kind, unknown_node, duplicate_correlation_id,
    too_large, internal)."""

    kind: Literal["error"] = "error"
    correlation_id: str
    final: Literal[True] = True
    request_kind: str
    error_code: str
    message: str
    create_id: StrictInt | None = None
    delivered: StrictInt = 0


class FreedResponse(_Payload):
    """The answer to a free request: how many qubits were released, which were not held."""

    kind: Literal["freed"] = "freed"
    correlation_id: str
    final: Literal[True] = True
    freed: StrictInt
    not_held: list[int]


# ---- events (node → anyone, on .../event/<kind>) ----------------------------------------


class _Event(_Payload):
    network: str
    node: str
    wall_time_s: float
    emulated_time_s: float


class NodeStartedEvent(_Event):
    """The node connected to the MQTT broker; `connection` > 1 means it reconnected."""

    kind: Literal["node_started"] = "node_started"
    connection: StrictInt


class NodeStoppingEvent(_Event):
    """The node is shutting down cleanly (its state turns "stopped")."""

    kind: Literal["node_stopping"] = "node_stopping"


class PairDeliveredEvent(_Event):
    """A pair delivered for an MQTT request of this node (workload pairs are not told)."""

    kind: Literal["pair_delivered"] = "pair_delivered"
    correlation_id: str
    pair: PairPayload


class RequestFailedEvent(_Event):
    """An accepted-looking MQTT request ended with the link layer's error."""

    kind: Literal["request_failed"] = "request_failed"
    correlation_id: str
    error_code: str
    message: str
    delivered: StrictInt


class RequestRejectedEvent(_Event):
    """A malformed request (bad JSON, bad fields, unknown kind or node)."""

    kind: Literal["request_rejected"] = "request_rejected"
    correlation_id: str | None
    request_kind: str | None
    error_code: str
    message: str


# ---- retained state (node → anyone, on .../state) ---------------------------------------


class MemoryState(_Payload):
    capacity: StrictInt
    in_use: StrictInt  # holding a qubit or reserved for a pair to come
    reserved: StrictInt
    held: list[int]


class LinkState(_Payload):
    delivered: StrictInt
    heralded: StrictInt
    mean_fidelity: float | None


class NodeState(_Payload):
    """A node's retained state: "running" (refreshed every second or so), "stopped"
    after a clean stop, "offline" (the MQTT last will: the node vanished)."""

    status: Literal["running", "stopped", "offline"]
    network: str
    node: str
    wall_time_s: float | None = None
    emulated_time_s: float | None = None
    memory: MemoryState | None = None
    links: dict[str, LinkState] | None = None
    active_requests: StrictInt | None = None
    open_mqtt_requests: StrictInt | None = None
    end_to_end: dict[str, Any] | None = None


def pair_payload(pair: EntangleOk) -> PairPayload:
    fidelity = pair.fidelity if math.isfinite(pair.fidelity) else None
    return PairPayload(
        create_id=pair.create_id,
        sequence_number=pair.sequence_number,
        src=pair.src,
        dst=pair.dst,
        bell_state=pair.bell_state,
        fidelity=fidelity,
        created_at=pair.created_at,
        delivered_at=pair.delivered_at,
        attempts=pair.attempts,
        qubits=None if pair.qubits is None else tuple(pair.qubits),
        outcomes=None if pair.outcomes is None else tuple(pair.outcomes),
        bases=None if pair.bases is None else tuple(pair.bases),
        path=None if pair.path is None else list(pair.path),
    )


def json_safe(value: Any) -> Any:
    """`value` with NaN and infinities as None and tuples as lists (JSON has neither)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [json_safe(item) for item in value]
    if value is None or isinstance(value, bool | int | str):
        return value
    return str(value)
