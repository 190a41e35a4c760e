"""Network-layer messages: end-to-end pairs over a path of repeaters (swap as soon as possible).

The source node sends `path_request` to every node of the path; each pair of adjacent
nodes then runs a link-layer request for that path; when the plan purifies a link, its
two ends run purification rounds on its pairs first (`purify_*`, left end driving);
every repeater swaps a pair from its left link with one from its right link as soon as
it holds both, and reports the swap to both end nodes, which track the Pauli frame and
deliver the end-to-end pair.
"""

from dataclasses import dataclass, field

from qnemu.wire.registry import Bool, Float, Int, Str, message, nested

__all__ = [
    "EndHalf",
    "LinkPairRef",
    "PathEnd",
    "PathFailed",
    "PathRequest",
    "PurifyOutcome",
    "PurifyResult",
    "PurifyStep",
    "SegmentBroken",
    "SwapReport",
]


@message("path_request")
@dataclass(frozen=True, slots=True)
class PathRequest:
    """Source → every node of the path: serve end-to-end request `request_id` of `src`."""

    src: Str
    request_id: Int
    path: list[Str]
    type: Str  # keep | measure (at the end nodes; links always keep)
    basis: Str
    purify_rounds: list[Int] = field(default_factory=list)  # per link ([]: none)
    purify: Str = "dejmps"  # the protocol of those rounds: dejmps | bbpssw


@message("path_end")
@dataclass(frozen=True, slots=True)
class PathEnd:
    """Source → every node of the path: the request is over; release everything."""

    src: Str
    request_id: Int
    reason: Str
    delivered: list[Str] = field(default_factory=list)  # first pair ids given to the client


@message("path_failed")
@dataclass(frozen=True, slots=True)
class PathFailed:
    """Node of the path → source: my link for this request failed; end it."""

    src: Str
    request_id: Int
    error_code: Str
    message: Str


@nested
@dataclass(frozen=True, slots=True)
class LinkPairRef:
    """One link-level pair: `pair_id` is `<initiator>:<create_id>:<sequence_number>`."""

    pair_id: Str
    link_index: Int  # 0 for the path's first link
    bell_state: Int
    qubits: tuple[Int, Int]  # (left node's half, right node's half)
    attempts: Int


@message("swap_report")
@dataclass(frozen=True, slots=True)
class SwapReport:
    """Repeater → both ends: I joined `left` and `right` with this Bell-state outcome."""

    src: Str
    request_id: Int
    left: LinkPairRef
    right: LinkPairRef
    outcome: Int


@message("segment_broken")
@dataclass(frozen=True, slots=True)
class SegmentBroken:
    """Node → both ends: these link pairs were discarded (cutoff); drop what they joined."""

    src: Str
    request_id: Int
    pair_ids: list[Str]
    reason: Str


@message("end_half")
@dataclass(frozen=True, slots=True)
class EndHalf:
    """Destination → source: my half of the end-to-end pair that starts with `first_pair_id`."""

    src: Str
    request_id: Int
    first_pair_id: Str
    delivered_at: Float
    qubit: Int | None = None
    outcome: Int | None = None
    basis: Str | None = None


@message("purify_step")
@dataclass(frozen=True, slots=True)
class PurifyStep:
    """Left end of a link → right end: one round on these two link pairs (keep, sacrifice).

    BBPSSW: `twirls` are the twirl elements (keep's, sacrifice's) the left end chose for
    the two pairs before the round; both ends apply them, then forget them."""

    src: Str
    request_id: Int
    keep_id: Str
    sacrifice_id: Str
    link_index: Int = 0
    twirls: list[Int] = field(default_factory=list)


@message("purify_outcome")
@dataclass(frozen=True, slots=True)
class PurifyOutcome:
    """Right end of a link → left end: my outcome on the sacrificed half of that round."""

    src: Str
    request_id: Int
    keep_id: Str
    outcome: Int  # 0 or 1; -1: a pair of the round was lost here (cutoff): it fails
    link_index: Int = 0


@message("purify_result")
@dataclass(frozen=True, slots=True)
class PurifyResult:
    """Left end → right end: the kept pair survived (and is done), or is discarded.

    A final pair carries the raw attempts it took (all its rounds) and, for BBPSSW, the
    twirl element both ends apply to it before it is swapped or delivered."""

    src: Str
    request_id: Int
    keep_id: Str
    success: Bool
    final: Bool
    link_index: Int = 0
    attempts: Int = 0
    twirl: Int | None = None
