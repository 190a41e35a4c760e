"""Messages between nodes/stations and the state broker.

One `ops_request` carries a list of operations executed in order and answered once by
an `ops_reply` with one result per executed operation. An operation that fails stops
the batch: the reply's `error` names its index, and that operation changed nothing.
The owner of every qubit touched is the request's sender.
"""

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import Field

from qnemu.wire.registry import Bool, Bytes, Float, Int, Str, message, nested

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
    t1_s: Float | None = None
    t2_s: Float | None = None


@nested
@dataclass(frozen=True, slots=True)
class FreeOp:
    qubit: Int
    op: Literal["free"] = "free"


@nested
@dataclass(frozen=True, slots=True)
class GateOp:
    """Apply a named gate (X Y Z H S T RX RY RZ CNOT CZ), then its depolarising noise."""

    gate: Str
    qubits: list[Int]
    op: Literal["gate"] = "gate"
    angle: Float | None = None
    depolar_prob: Float = 0.0


@nested
@dataclass(frozen=True, slots=True)
class MeasureOp:
    """Measure in basis Z, X or Y; result: the outcome bit as read out."""

    qubit: Int
    basis: Str = "Z"
    op: Literal["measure"] = "measure"
    readout_error: tuple[Float, Float] = (0.0, 0.0)
    free: Bool = False


@nested
@dataclass(frozen=True, slots=True)
class BellMeasureOp:
    """Bell-state measurement of two qubits; result: the BellState value (x_bit << 1 | z_bit)."""

    qubits: tuple[Int, Int]
    op: Literal["bell_measure"] = "bell_measure"
    depolar_prob: Float = 0.0
    readout_error: tuple[Float, Float] = (0.0, 0.0)
    free: Bool = True


@nested
@dataclass(frozen=True, slots=True)
class CreatePairOp:
    """Create two qubits (owned by `owners`) in a 4x4 density matrix.

    `state` is the matrix row-major as 16 little-endian complex128 (256 bytes): stations
    send hundreds per batch, and bytes cost nothing to validate.
    """

    owners: tuple[Str, Str]
    state: Bytes
    op: Literal["create_pair"] = "create_pair"
    created_at: Float | None = None  # emulated s the pair came into being; default: the request's
    t1_s: tuple[Float | None, Float | None] = (None, None)
    t2_s: tuple[Float | None, Float | None] = (None, None)


@nested
@dataclass(frozen=True, slots=True)
class NoiseOp:
    """Apply a named channel: depolarise, dephase or amplitude_damp."""

    channel: Str
    qubits: list[Int]
    parameter: Float
    op: Literal["noise"] = "noise"


@nested
@dataclass(frozen=True, slots=True)
class ReducedStateOp:
    """Oracle: the reduced density matrix of some qubits; result: [real, imag] row-major."""

    qubits: list[Int]
    op: Literal["reduced_state"] = "reduced_state"


@nested
@dataclass(frozen=True, slots=True)
class FidelityOp:
    """Oracle: fidelity of some qubits' reduced state with a target vector (row-major)."""

    qubits: list[Int]
    target_real: list[Float]
    target_imag: list[Float]
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
    index: Int
    code: Str
    message: Str


@message("ops_reply")
@dataclass(frozen=True, slots=True)
class OpsReply:
    results: list[Any]
    error: OpError | None = None
