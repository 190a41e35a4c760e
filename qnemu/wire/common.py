"""Messages every qnemu process understands: errors, liveness, statistics."""

from dataclasses import dataclass, field
from typing import Any

from qnemu.wire.registry import Bool, Float, Int, Str, message

__all__ = [
    "ErrorReply",
    "FaultReply",
    "FaultRequest",
    "PingReply",
    "PingRequest",
    "StatsReply",
    "StatsRequest",
]


@message("error_reply")
@dataclass(frozen=True, slots=True)
class ErrorReply:
    """A request could not be served; `code` is machine-readable, `message` for people."""

    code: Str
    message: Str


@message("ping_request")
@dataclass(frozen=True, slots=True)
class PingRequest:
    pass


@message("ping_reply")
@dataclass(frozen=True, slots=True)
class PingReply:
    name: Str
    role: Str
    pid: Int
    ready: Bool
    emulated_now_s: Float


@message("stats_request")
@dataclass(frozen=True, slots=True)
class StatsRequest:
    pass


@message("stats_reply")
@dataclass(frozen=True, slots=True)
class StatsReply:
    name: Str
    role: Str
    stats: dict[str, Any] = field(default_factory=dict)


@message("fault_request")
@dataclass(frozen=True, slots=True)
class FaultRequest:
    """Emulate a fault (for tests): cut / restore a peer's fibre, drop or delay classical
    messages, change a link, add an eavesdropper, or clear them all."""

    kind: Str
    target: Str | None = None  # a peer (cut, restore) or nothing
    parameters: dict[str, Any] = field(default_factory=dict)


@message("fault_reply")
@dataclass(frozen=True, slots=True)
class FaultReply:
    name: Str
    faults: dict[str, Any]
