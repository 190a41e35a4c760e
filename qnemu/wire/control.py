"""Control messages between a client (CLI, Python client, launcher) and a node."""

from dataclasses import dataclass

from qnemu.wire.registry import Float, Int, Str, message

__all__ = [
    "EntangleDone",
    "EntangleErr",
    "EntangleExpire",
    "EntangleOk",
    "EntangleRequest",
    "FreeReply",
    "FreeRequest",
    "MeasureReply",
    "MeasureRequest",
]


@message("entangle_request")
@dataclass(frozen=True, slots=True)
class EntangleRequest:
    """A link-layer CREATE asked of the node that receives it (the initiator)."""

    remote_node_id: Str
    number: Int = 1
    minimum_fidelity: Float = 0.0
    max_time_s: Float = 10.0
    type: Str = "keep"  # keep | measure
    basis: Str = "random"  # for measure: Z, X, Y or random
    # Above what the links give: purify link pairs with dejmps or bbpssw, or none (refuse).
    purify: Str = "dejmps"


@message("entangle_ok")
@dataclass(frozen=True, slots=True)
class EntangleOk:
    """One delivered pair (the link layer's OK)."""

    create_id: Int
    sequence_number: Int
    src: Str
    dst: Str
    bell_state: Str
    fidelity: Float  # oracle fidelity to bell_state when delivered at the initiator
    created_at: Float
    delivered_at: Float
    attempts: Int
    qubits: tuple[Int, Int] | None = None  # keep: (src half, dst half)
    outcomes: tuple[Int, Int] | None = None  # measure: (src, dst)
    bases: tuple[Str, Str] | None = None
    path: list[Str] | None = None  # end-to-end pairs: the nodes they were swapped through


@message("entangle_err")
@dataclass(frozen=True, slots=True)
class EntangleErr:
    """The link layer's ERR: UNSUPP, NOTIME, NORES, TIMEOUT, EXPIRE, DENIED, ..."""

    create_id: Int
    error_code: Str
    message: Str
    delivered: Int = 0


@message("entangle_expire")
@dataclass(frozen=True, slots=True)
class EntangleExpire:
    """The link layer's EXPIRE: pairs of request `create_id` that are no longer valid.

    Sent on the request's stream, during it or after its entangle_done, for pairs already
    given in an OK (their qubits are gone) and for pairs heralded but lost before their
    OK (sequence numbers the client will never see). Both ends have freed their halves.
    """

    create_id: Int
    sequence_numbers: list[Int]
    qubits: list[Int]  # keep: the freed handles of those pairs at this (initiating) node
    reason: Str  # cut, cutoff, peer_cutoff, peer_cut
    message: Str


@message("entangle_done")
@dataclass(frozen=True, slots=True)
class EntangleDone:
    create_id: Int
    delivered: Int


@message("measure_request")
@dataclass(frozen=True, slots=True)
class MeasureRequest:
    """Measure a qubit this node holds (e.g. a kept pair half)."""

    qubit: Int
    basis: Str = "Z"


@message("measure_reply")
@dataclass(frozen=True, slots=True)
class MeasureReply:
    qubit: Int
    outcome: Int


@message("free_request")
@dataclass(frozen=True, slots=True)
class FreeRequest:
    qubits: list[Int]


@message("free_reply")
@dataclass(frozen=True, slots=True)
class FreeReply:
    freed: Int
