"""JSON payloads of the MQTT API, one pydantic model each (their schemas are the docs).

Requests come from a control program on `.../request/<kind>`; every other payload is
published by a node. Times named `*_time_s` are Unix wall-clock seconds; `created_at`,
`delivered_at` and `emulated_time_s` are the run's emulated seconds.
"""

import math
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from qnemu.wire.control import EntangleOk

__all__ = [
    "CORRELATION_ID_PATTERN",
    "AppRequestPayload",
    "AppResponse",
    "DoneResponse",
    "EntangleRequestPayload",
    "ErrorResponse",
    "FaultAppliedEvent",
    "FaultClearedEvent",
    "FaultRequestPayload",
    "FaultResponse",
    "FreeRequestPayload",
    "FreedResponse",
    "KeyPayload",
    "KeyPoolLowEvent",
    "KeyRequestPayload",
    "KeysResponse",
    "LinkDownEvent",
    "LinkState",
    "LinkUpEvent",
    "MemoryState",
    "NodeStartedEvent",
    "NodeState",
    "NodeStoppingEvent",
    "PairDeliveredEvent",
    "PairPayload",
    "PairResponse",
    "QberAlarmEvent",
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
MAX_KEYS = 128  # per key request, as the KME's max_key_per_request
Name = Annotated[str, StringConstraints(min_length=1, max_length=63)]
Fraction = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]


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


class KeyRequestPayload(_Payload):
    """Keys from this node's KME under the ETSI GS QKD 014 rules. Without `key_ids`: new
    keys for master SAE `sae_id` shared with `slave_sae_id` (or `remote_node_id`'s first
    SAE). With `key_ids`: at the other end, the keys master SAE `master_sae_id` (or
    `remote_node_id`'s first SAE) got for slave `sae_id`: each handed out once only."""

    correlation_id: CorrelationId
    sae_id: Name | None = None  # an SAE of this node; default: its first
    remote_node_id: Name | None = None
    slave_sae_id: Name | None = None
    number: Annotated[int, Field(strict=True, ge=1, le=MAX_KEYS)] = 1
    size: Annotated[int, Field(strict=True, ge=8)] | None = None  # bits; default the KME's
    master_sae_id: Name | None = None
    key_ids: Annotated[list[Name], Field(min_length=1, max_length=MAX_KEYS)] | None = None

    @model_validator(mode="after")
    def _one_way(self) -> "KeyRequestPayload":
        given = self.model_fields_set
        if self.key_ids is None:
            if "master_sae_id" in given:
                raise ValueError("master_sae_id goes with key_ids (fetching keys by ID)")
            if (self.slave_sae_id is None) == (self.remote_node_id is None):
                raise ValueError("name the other end: slave_sae_id or remote_node_id (one)")
        else:
            if given & {"slave_sae_id", "number", "size"}:
                raise ValueError("key_ids fetches existing keys: no slave_sae_id, number, size")
            if (self.master_sae_id is None) == (self.remote_node_id is None):
                raise ValueError("name the other end: master_sae_id or remote_node_id (one)")
        return self


class AppRequestPayload(_Payload):
    """The application attached to this node (`qnemu app`): `status` tells which app and
    the qubits it owns; `detach` ends its session (its qubits freed, its waiting
    receives answered with an error). Starting an app is not offered: an app is Python
    code run by `qnemu app` as a client process, never code sent to a node."""

    correlation_id: CorrelationId
    action: Literal["status", "detach"] = "status"


FAULT_FIELDS = {  # fault -> the fields it takes besides correlation_id and fault
    "cut": {"remote_node_id"},
    "restore": {"remote_node_id"},
    "set_link": {"remote_node_id", "link"},
    "eavesdrop": {"remote_node_id", "fraction"},
    "classical": {"drop_fraction", "extra_delay_s"},
    "clear": set(),
}


class FaultRequestPayload(_Payload):
    """Break this node or one of its links on purpose, or mend it (docs/faults.md): cut or
    restore the fibre to `remote_node_id` (both nodes and the station), change the link
    (`link`: topology link fields), add an eavesdropper, drop or delay a fraction of the
    classical messages this node receives, or clear the faults of the node and its links."""

    correlation_id: CorrelationId
    fault: Literal["cut", "restore", "set_link", "eavesdrop", "classical", "clear"]
    remote_node_id: Name | None = None
    link: dict[str, float | int | str | bool | None] | None = None
    fraction: Fraction = 1.0
    drop_fraction: Fraction = 0.0
    extra_delay_s: Annotated[float, Field(ge=0.0, allow_inf_nan=False)] = 0.0

    @model_validator(mode="after")
    def _fields_of_the_fault(self) -> "FaultRequestPayload":
        allowed = FAULT_FIELDS[self.fault]
        extra = sorted(self.model_fields_set - allowed - {"correlation_id", "fault"})
        if extra:
            raise ValueError(f"fault {self.fault} does not take {', '.join(extra)}")
        if "remote_node_id" in allowed and self.remote_node_id is None:
            raise ValueError(f"fault {self.fault} needs remote_node_id (the link's other node)")
        if self.fault == "set_link" and not self.link:
            raise ValueError("set_link needs link: the link fields to change")
        return self


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


class KeyPayload(_Payload):
    """One key: its UUID and its bytes in Base64 (the ETSI 014 key container's words)."""

    key_ID: str
    key: str


class KeysResponse(_Payload):
    """The answer to a key request: the keys, and which SAEs share them."""

    kind: Literal["keys"] = "keys"
    correlation_id: str
    final: Literal[True] = True
    master_sae_id: str
    slave_sae_id: str
    keys: list[KeyPayload]


class AppResponse(_Payload):
    """The answer to an app request: the app attached before it (None: no app)."""

    kind: Literal["app"] = "app"
    correlation_id: str
    final: Literal[True] = True
    action: str
    attached: bool
    app: str | None
    qubits: list[int]
    freed: StrictInt = 0  # detach: the qubits released


class FaultResponse(_Payload):
    """The answer to a fault request: each process involved, with its faults now (or why
    it was not reached)."""

    kind: Literal["fault"] = "fault"
    correlation_id: str
    final: Literal[True] = True
    fault: str
    processes: dict[str, Any]


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


class LinkUpEvent(_Event):
    """A link of this node works again: no cut fibre, the peer and the station answer."""

    kind: Literal["link_up"] = "link_up"
    link: str
    peer: str
    station: str


class LinkDownEvent(_Event):
    """A link of this node stopped working: `fibre_cut` (this node's fibre to the peer or
    station is cut), `peer_unreachable` or `station_unreachable` (probes unanswered)."""

    kind: Literal["link_down"] = "link_down"
    link: str
    peer: str
    station: str
    reason: Literal["fibre_cut", "peer_unreachable", "station_unreachable"]


class QberAlarmEvent(_Event):
    """A QKD key block's sample QBER was above the abort threshold: the block is discarded
    (an eavesdropper, a noisy fibre)."""

    kind: Literal["qber_alarm"] = "qber_alarm"
    link: str
    peer: str
    block: str
    qber: float
    qber_upper: float | None
    threshold: float
    result: str


class KeyPoolLowEvent(_Event):
    """The key this node shares with `peer` fell below `threshold_bits` (told again only
    after it has been back at `rearm_bits` or more)."""

    kind: Literal["key_pool_low"] = "key_pool_low"
    peer: str
    pool_bits: StrictInt
    threshold_bits: StrictInt
    rearm_bits: StrictInt


class FaultAppliedEvent(_Event):
    """A fault appeared (or changed) on this node or on one of its links, whoever set it.
    `process` is where it acts (this node or the link's station); `link` is None for a
    fault of the whole node."""

    kind: Literal["fault_applied"] = "fault_applied"
    fault: str
    link: str | None
    process: str
    parameters: dict[str, Any]


class FaultClearedEvent(_Event):
    """A fault went away from this node or one of its links (`parameters`: what it was)."""

    kind: Literal["fault_cleared"] = "fault_cleared"
    fault: str
    link: str | None
    process: str
    parameters: dict[str, Any]


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
    up: bool | None = None  # what the node's link watch found (None: not watched)
    down_reason: str | None = None


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
