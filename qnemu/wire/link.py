"""Link-layer messages between two nodes and between a node and its heralding station.

Names follow the QuTech link layer (Dahlberg et al., SIGCOMM 2019): a CREATE is agreed
between the two nodes, served by the station, and each pair is reported with its
`create_id`, `sequence_number` and `bell_state`.
"""

from dataclasses import dataclass

from qnemu.wire.registry import message, nested

__all__ = [
    "CreateAccept",
    "CreateReject",
    "CreateRequest",
    "GenerateCancel",
    "GenerateCredit",
    "Herald",
    "HeraldedPair",
    "PairReport",
    "ReportedHalf",
    "RequestEnd",
]


@message("create_request")
@dataclass(frozen=True, slots=True)
class CreateRequest:
    """Initiator → peer: please take part in generating `number` pairs with me."""

    create_id: int
    remote_node_id: str
    number: int
    minimum_fidelity: float
    max_time_s: float
    type: str  # "keep" | "measure"
    basis: str  # measure basis: Z, X, Y or random


@message("create_accept")
@dataclass(frozen=True, slots=True)
class CreateAccept:
    create_id: int


@message("create_reject")
@dataclass(frozen=True, slots=True)
class CreateReject:
    create_id: int
    error_code: str
    message: str


@message("request_end")
@dataclass(frozen=True, slots=True)
class RequestEnd:
    """Initiator → peer: the request is over (done, timed out or cancelled); release it."""

    create_id: int
    reason: str


@nested
@dataclass(frozen=True, slots=True)
class ReportedHalf:
    """The peer's half of one pair, as delivered at its end."""

    sequence_number: int
    delivered_at: float
    qubit: int | None = None
    outcome: int | None = None
    basis: str | None = None


@message("pair_report")
@dataclass(frozen=True, slots=True)
class PairReport:
    """Peer → initiator: my halves of the pairs of one herald."""

    create_id: int
    halves: list[ReportedHalf]


@message("generate_credit")
@dataclass(frozen=True, slots=True)
class GenerateCredit:
    """Node → station: I have `credits` more memory slots for this request."""

    initiator: str
    create_id: int
    peer: str
    credits: int


@message("generate_cancel")
@dataclass(frozen=True, slots=True)
class GenerateCancel:
    initiator: str
    create_id: int


@nested
@dataclass(frozen=True, slots=True)
class HeraldedPair:
    sequence_number: int
    qubit: int  # the receiving node's half
    peer_qubit: int
    bell_state: int
    created_at: float
    attempts: int
    fidelity: float  # of the state as created, to bell_state


@message("herald")
@dataclass(frozen=True, slots=True)
class Herald:
    """Station → node: these attempts succeeded (sent after the fibre delay to the node)."""

    initiator: str
    create_id: int
    pairs: list[HeraldedPair]
