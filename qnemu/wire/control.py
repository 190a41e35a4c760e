"""Control messages between a client (CLI, Python client, launcher) and a node."""

from dataclasses import dataclass

from qnemu.wire.registry import message

__all__ = [
    "EntangleDone",
    "EntangleErr",
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

    remote_node_id: str
    number: int = 1
    minimum_fidelity: float = 0.0
    max_time_s: float = 10.0
    type: str = "keep"  # keep | measure
    basis: str = "random"  # for measure: Z, X, Y or random


@message("entangle_ok")
@dataclass(frozen=True, slots=True)
class EntangleOk:
    """One delivered pair (the link layer's OK)."""

    create_id: int
    sequence_number: int
    src: str
    dst: str
    bell_state: str
    fidelity: float  # oracle fidelity to bell_state when delivered at the initiator
    created_at: float
    delivered_at: float
    attempts: int
    qubits: tuple[int, int] | None = None  # keep: (src half, dst half)
    outcomes: tuple[int, int] | None = None  # measure: (src, dst)
    bases: tuple[str, str] | None = None


@message("entangle_err")
@dataclass(frozen=True, slots=True)
class EntangleErr:
    """The link layer's ERR: UNSUPP, NOTIME, NORES, TIMEOUT, EXPIRE, DENIED, ..."""

    create_id: int
    error_code: str
    message: str
    delivered: int = 0


@message("entangle_done")
@dataclass(frozen=True, slots=True)
class EntangleDone:
    create_id: int
    delivered: int


@message("measure_request")
@dataclass(frozen=True, slots=True)
class MeasureRequest:
    """Measure a qubit this node holds (e.g. a kept pair half)."""

    qubit: int
    basis: str = "Z"


@message("measure_reply")
@dataclass(frozen=True, slots=True)
class MeasureReply:
    qubit: int
    outcome: int


@message("free_request")
@dataclass(frozen=True, slots=True)
class FreeRequest:
    qubits: list[int]


@message("free_reply")
@dataclass(frozen=True, slots=True)
class FreeReply:
    freed: int
