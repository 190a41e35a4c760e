"""Messages between nodes/stations and the state broker.

One `ops_request` carries a list of operations executed in order and answered once by
an `ops_reply` with one result per executed operation. An operation that fails stops
the batch: the reply's `error` names its index, and that operation changed nothing.
The owner of every qubit touched is the request's sender.
"""

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import Field

from qnemu.wire.registry import message, nested

__all__ = [
    "AllocOp",
    "BellMeasureOp",
    "CreatePairOp",
    "FidelityOp",
    "FreeOp",
    "GateOp",
    "MeasureOp",
    "NoiseOp",
    "Op",
    "OpError",
    "OpsReply",
    "OpsRequest",
    "ReducedStateOp",
]


@nested
@dataclass(frozen=True, slots=True)
class AllocOp:
    """Allocate a qubit in |0>; result: its handle."""

    op: Literal["alloc"] = "alloc"
    t1_s: float | None = None
    t2_s: float | None = None


@nested
@dataclass(frozen=True, slots=True)
class FreeOp:
    qubit: int
    op: Literal["free"] = "free"


@nested
@dataclass(frozen=True, slots=True)
class GateOp:
    """Apply a named gate (X Y Z H S T RX RY RZ CNOT CZ), then its depolarising noise."""

    gate: str
    qubits: list[int]
    op: Literal["gate"] = "gate"
    angle: float | None = None
    depolar_prob: float = 0.0


@nested
@dataclass(frozen=True, slots=True)
class MeasureOp:
    """Measure in basis Z, X or Y; result: the outcome bit as read out."""

    qubit: int
    basis: str = "Z"
    op: Literal["measure"] = "measure"
    readout_error: tuple[float, float] = (0.0, 0.0)
    free: bool = False


@nested
@dataclass(frozen=True, slots=True)
class BellMeasureOp:
    """Bell-state measurement of two qubits; result: the BellState value (x_bit << 1 | z_bit)."""

    qubits: tuple[int, int]
    op: Literal["bell_measure"] = "bell_measure"
    depolar_prob: float = 0.0
    readout_error: tuple[float, float] = (0.0, 0.0)
    free: bool = True


@nested
@dataclass(frozen=True, slots=True)
class CreatePairOp:
    """Create two qubits (owned by `owners`) in a 4x4 density matrix.

    `state` is the matrix row-major as 16 little-endian complex128 (256 bytes): stations
    send hundreds per batch, and bytes cost nothing to validate.
    """

    owners: tuple[str, str]
    state: bytes
    op: Literal["create_pair"] = "create_pair"
    t1_s: tuple[float | None, float | None] = (None, None)
    t2_s: tuple[float | None, float | None] = (None, None)


@nested
@dataclass(frozen=True, slots=True)
class NoiseOp:
    """Apply a named channel: depolarise, dephase or amplitude_damp."""

    channel: str
    qubits: list[int]
    parameter: float
    op: Literal["noise"] = "noise"


@nested
@dataclass(frozen=True, slots=True)
class ReducedStateOp:
    """Oracle: the reduced density matrix of some qubits; result: [real, imag] row-major."""

    qubits: list[int]
    op: Literal["reduced_state"] = "reduced_state"


@nested
@dataclass(frozen=True, slots=True)
class FidelityOp:
    """Oracle: fidelity of some qubits' reduced state with a target vector (row-major)."""

    qubits: list[int]
    target_real: list[float]
    target_imag: list[float]
    op: Literal["fidelity"] = "fidelity"


Op = Annotated[
    AllocOp
    | FreeOp
    | GateOp
    | MeasureOp
    | BellMeasureOp
    | CreatePairOp
    | NoiseOp
    | ReducedStateOp
    | FidelityOp,
    Field(discriminator="op"),
]


@message("ops_request")
@dataclass(frozen=True, slots=True)
class OpsRequest:
    ops: list[Op]


@nested
@dataclass(frozen=True, slots=True)
class OpError:
    index: int
    code: str
    message: str


@message("ops_reply")
@dataclass(frozen=True, slots=True)
class OpsReply:
    results: list[Any]
    error: OpError | None = None
