"""Link-layer messages between two nodes and between a node and its heralding station.

Names follow the QuTech link layer (Dahlberg et al., SIGCOMM 2019): a CREATE is agreed
between the two nodes, served by the station, and each pair is reported with its
`create_id`, `sequence_number` and `bell_state`.
"""

from dataclasses import dataclass

from qnemu.wire.registry import Bool, Float, Int, Str, message, nested

__all__ = [
    "CreateAccept",
    "CreateReject",
    "CreateRequest",
    "GenerateCancel",
    "GenerateCredit",
    "Herald",
    "HeraldedPair",
    "PairExpire",
    "PairReport",
    "ReportedHalf",
    "RequestEnd",
]


@message("create_request")
@dataclass(frozen=True, slots=True)
class CreateRequest:
    """Initiator → peer: please take part in generating `number` pairs with me."""

    create_id: Int
    remote_node_id: Str
    number: Int
    minimum_fidelity: Float
    max_time_s: Float
    type: Str  # "keep" | "measure"
    basis: Str  # measure basis: Z, X, Y or random
    purpose: Str | None = None  # "<src>:<request_id>" of the end-to-end request it serves


@message("create_accept")
@dataclass(frozen=True, slots=True)
class CreateAccept:
    create_id: Int


@message("create_reject")
@dataclass(frozen=True, slots=True)
class CreateReject:
    create_id: Int
    error_code: Str
    message: Str


@message("request_end")
@dataclass(frozen=True, slots=True)
class RequestEnd:
    """Initiator → peer: the request is over (done, timed out or cancelled); release it."""

    create_id: Int
    reason: Str


@nested
@dataclass(frozen=True, slots=True)
class ReportedHalf:
    """The peer's half of one pair, as delivered at its end."""

    sequence_number: Int
    delivered_at: Float
    qubit: Int | None = None
    outcome: Int | None = None
    basis: Str | None = None


@message("pair_report")
@dataclass(frozen=True, slots=True)
class PairReport:
    """Peer → initiator: my halves of the pairs of one herald."""

    create_id: Int
    halves: list[ReportedHalf]


@message("pair_expire")
@dataclass(frozen=True, slots=True)
class PairExpire:
    """Either end → the other: these pairs of request (initiator, create_id) are lost at
    my end (cut fibre, cutoff); free your halves, named by their handles at your end."""

    initiator: Str
    create_id: Int
    sequence_numbers: list[Int]
    qubits: list[Int]
    reason: Str
    # Of these pairs, how many the initiator lost before their OK and makes again (it
    # counts delivered pairs): the peer takes part in as many more.
    remake: Int = 0
    # An end-to-end pair through repeaters (create_id: the source's request id), between
    # its two end nodes: only the named halves are freed, no link request is involved.
    path: Bool = False


@message("generate_credit")
@dataclass(frozen=True, slots=True)
class GenerateCredit:
    """Node → station: I have `credits` more memory slots for this request."""

    initiator: Str
    create_id: Int
    peer: Str
    credits: Int


@message("generate_cancel")
@dataclass(frozen=True, slots=True)
class GenerateCancel:
    initiator: Str
    create_id: Int


@nested
@dataclass(frozen=True, slots=True)
class HeraldedPair:
    sequence_number: Int
    qubit: Int  # the receiving node's half
    peer_qubit: Int
    bell_state: Int
    created_at: Float
    attempts: Int
    fidelity: Float  # of the state as created, to bell_state


@message("herald")
@dataclass(frozen=True, slots=True)
class Herald:
    """Station → node: these attempts succeeded (sent after the fibre delay to the node)."""

    initiator: Str
    create_id: Int
    pairs: list[HeraldedPair]
