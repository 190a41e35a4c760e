"""Link-layer requests as seen by one node: credits, delivered halves, pair assembly.

Pure state (no I/O). A request lives at both ends of a link: the initiator (who was
asked by an application) and the peer. Each end grants the station credits (memory
slots ready for a pair) and records its half of every heralded pair; the initiator
joins its half with the peer's report into one OK.
"""

import math
from dataclasses import dataclass, field
from typing import Protocol

from qnemu.physics.bell import BellState
from qnemu.wire.control import EntangleDone, EntangleErr, EntangleOk
from qnemu.wire.link import ReportedHalf

__all__ = [
    "BASES",
    "PURIFY",
    "REQUEST_TYPES",
    "LinkRequest",
    "LocalHalf",
    "RequestSink",
    "deadline_at",
    "request_problem",
    "validate_request",
]

REQUEST_TYPES = ("keep", "measure")
PURIFY = ("dejmps", "bbpssw", "none")  # how to lift pairs above the links' fidelity
BASES = ("Z", "X", "Y", "random")
MEASURE_WINDOW = 256  # credits a measure-mode request keeps outstanding at the station


class RequestSink(Protocol):
    """Where the initiator reports a request's progress (a client, or a workload)."""

    def ok(self, pair: EntangleOk) -> None: ...
    def err(self, error: EntangleErr) -> None: ...
    def done(self, done: EntangleDone) -> None: ...

    # Optional: `expire(EntangleExpire)` for pairs lost after or instead of their OK.


@dataclass(frozen=True, slots=True)
class LocalHalf:
    """This node's half of one heralded pair."""

    delivered_at: float
    bell_state: int
    created_at: float
    attempts: int
    fidelity: float
    qubit: int | None = None
    peer_qubit: int | None = None
    outcome: int | None = None
    basis: str | None = None


def validate_request(
    *,
    number: int,
    minimum_fidelity: float,
    max_time_s: float,
    type: str,
    basis: str,
    purify: str = "dejmps",
) -> str | None:
    """A problem with a request's parameters, or None."""
    if purify not in PURIFY:
        return f"purify must be one of {', '.join(PURIFY)}, got {purify!r}"
    if type not in REQUEST_TYPES:
        return f"type must be one of {', '.join(REQUEST_TYPES)}, got {type!r}"
    if basis not in BASES:
        return f"basis must be one of {', '.join(BASES)}, got {basis!r}"
    if number < 0:
        return f"number must be >= 0 (0: until cancelled), got {number}"
    if not 0.0 <= minimum_fidelity <= 1.0:
        return f"minimum_fidelity must be in [0, 1], got {minimum_fidelity}"
    if not (max_time_s >= 0.0 and math.isfinite(max_time_s)):
        return f"max_time_s must be >= 0 (0: no deadline), got {max_time_s}"
    return None


def deadline_at(started_at: float, max_time_s: float) -> float:
    """When a request started at `started_at` times out; max_time_s 0 means never."""
    return started_at + max_time_s if max_time_s > 0 else math.inf


def request_problem(request) -> str | None:
    """`validate_request` for anything carrying the CREATE fields (an entangle or
    create request; a link-layer create has no `purify`: its pairs are raw)."""
    return validate_request(
        number=request.number,
        minimum_fidelity=request.minimum_fidelity,
        max_time_s=request.max_time_s,
        type=request.type,
        basis=request.basis,
        purify=getattr(request, "purify", "dejmps"),
    )


@dataclass
class LinkRequest:
    """One CREATE at one end of a link."""

    create_id: int
    initiator: str
    peer: str  # the node at the other end, from this node's point of view
    number: int  # 0: until cancelled
    minimum_fidelity: float
    max_time_s: float
    type: str
    basis: str
    started_at: float
    sink: RequestSink | None = None  # initiator only
    accepted: bool = False
    finished: bool = False
    granted: int = 0  # credits given to the station and not yet used
    heralded: int = 0  # pairs heralded at this end
    delivered: int = 0  # OKs given (initiator)
    purpose: tuple[str, int] | None = None  # the end-to-end request this link serves
    max_window: int | None = None  # keep-mode slots this request may hold at once
    local: dict[int, LocalHalf] = field(default_factory=dict)
    remote: dict[int, ReportedHalf] = field(default_factory=dict)
    # Sequence numbers given up (EXPIRE), with why: at the initiator a late report for
    # one is not an OK; at the peer a late herald for one is freed at once.
    expired: dict[int, str] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, int]:
        return (self.initiator, self.create_id)

    @property
    def deadline(self) -> float:
        return deadline_at(self.started_at, self.max_time_s)

    def credits_wanted(self, memory_free: int, holding: int = 0) -> int:
        """How many more credits to grant now (bounded by what the request still needs).

        `holding`: qubits this request's pairs still occupy; with `max_window` they count
        against it, so one link of a repeater can never take the other link's slots.
        """
        if self.finished or not self.accepted:
            return 0
        window = MEASURE_WINDOW if self.type == "measure" else memory_free + self.granted
        if self.max_window is not None:
            window = min(window, self.max_window - holding)
        wanted = window - self.granted
        if self.number > 0:
            wanted = min(wanted, self.number - self.heralded - self.granted)
        return max(0, wanted)

    def assemble(self, sequence_number: int, src: str, dst: str) -> EntangleOk | None:
        """The OK for a pair once both halves are known (initiator), else None."""
        half = self.local.get(sequence_number)
        report = self.remote.get(sequence_number)
        if half is None or report is None:
            return None
        del self.local[sequence_number], self.remote[sequence_number]
        keep = self.type == "keep"
        return EntangleOk(
            create_id=self.create_id,
            sequence_number=sequence_number,
            src=src,
            dst=dst,
            bell_state=BellState(half.bell_state).label,
            fidelity=half.fidelity,
            created_at=half.created_at,
            delivered_at=half.delivered_at,
            attempts=half.attempts,
            qubits=(half.qubit, report.qubit) if keep else None,
            outcomes=None if keep else (half.outcome, report.outcome),
            bases=None if keep else (half.basis, report.basis),
        )

    def expire_waiting(self, reason: str = "cut") -> dict[int, LocalHalf]:
        """Initiator: give up every half still waiting for the peer's report (the fibre
        is cut: the report will not come). Returns them by sequence number."""
        waiting = dict(self.local)
        self.local.clear()
        self.expired.update(dict.fromkeys(waiting, reason))
        self.heralded -= len(waiting)  # never delivered: made again
        return waiting

    def expire(self, sequence_number: int, reason: str) -> LocalHalf | None:
        """Give up one pair before its OK; the initiator's half, if it was waiting."""
        self.expired[sequence_number] = reason
        self.remote.pop(sequence_number, None)
        half = self.local.pop(sequence_number, None)
        if half is not None:
            self.heralded -= 1  # never delivered: made again
        return half

    @property
    def complete(self) -> bool:
        return self.number > 0 and self.delivered >= self.number
