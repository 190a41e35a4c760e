"""Application messages: an app (in the `qnemu app` process) ↔ its node, and node ↔ node.

An app attaches to one node and then works on the qubits the node holds for it: allocate,
gates, measure, free, the oracle state; classical messages to another node's app; and
entangled pairs through the link and network layers (`app_epr_create_request` at the
initiator, `app_epr_recv_request` at the other end). Every request is answered once; a
receive is answered when something arrives. Node to node, `app_message` carries a
classical payload and `app_epr_half` tells the other end which half of a pair is its app's.
"""

from dataclasses import dataclass

from qnemu.wire.registry import Bool, Float, Int, Str, message, nested

__all__ = [
    "AppAllocReply",
    "AppAllocRequest",
    "AppAttachReply",
    "AppAttachRequest",
    "AppDetachReply",
    "AppDetachRequest",
    "AppDoneReply",
    "AppEprCreateRequest",
    "AppEprHalf",
    "AppEprRecvRequest",
    "AppEprReply",
    "AppFreeRequest",
    "AppGateRequest",
    "AppMeasureReply",
    "AppMeasureRequest",
    "AppMessage",
    "AppOp",
    "AppPair",
    "AppRecvReply",
    "AppRecvRequest",
    "AppSendRequest",
    "AppStateReply",
    "AppStateRequest",
    "AppSubroutineReply",
    "AppSubroutineRequest",
]


@message("app_attach_request")
@dataclass(frozen=True, slots=True)
class AppAttachRequest:
    """Start an app session on this node; ends (and frees) any earlier session."""

    app: Str


@message("app_attach_reply")
@dataclass(frozen=True, slots=True)
class AppAttachReply:
    node: Str
    qubits: Int  # memory capacity
    emulated_now_s: Float


@message("app_detach_request")
@dataclass(frozen=True, slots=True)
class AppDetachRequest:
    """End the session: free every qubit the app holds and drop what waits for it."""


@message("app_detach_reply")
@dataclass(frozen=True, slots=True)
class AppDetachReply:
    freed: Int


@message("app_done_reply")
@dataclass(frozen=True, slots=True)
class AppDoneReply:
    """A request with nothing to return was carried out."""


@message("app_alloc_request")
@dataclass(frozen=True, slots=True)
class AppAllocRequest:
    """A fresh qubit in |0⟩ (counts against the node's memory)."""


@message("app_alloc_reply")
@dataclass(frozen=True, slots=True)
class AppAllocReply:
    qubit: Int


@message("app_gate_request")
@dataclass(frozen=True, slots=True)
class AppGateRequest:
    """X Y Z H S T, RX RY RZ (with `angle` in radians), CNOT CZ (control first)."""

    gate: Str
    qubits: list[Int]
    angle: Float | None = None


@message("app_measure_request")
@dataclass(frozen=True, slots=True)
class AppMeasureRequest:
    qubit: Int
    basis: Str = "Z"
    inplace: Bool = False  # keep the (collapsed) qubit instead of freeing it


@message("app_measure_reply")
@dataclass(frozen=True, slots=True)
class AppMeasureReply:
    outcome: Int


@message("app_free_request")
@dataclass(frozen=True, slots=True)
class AppFreeRequest:
    qubits: list[Int]


@nested
@dataclass(frozen=True, slots=True)
class AppOp:
    """One operation of a subroutine: `gate` (gate, qubits, angle as in app_gate_request),
    `measure` (qubits = [qubit], basis, inplace) or `free` (qubits)."""

    kind: Str
    qubits: list[Int]
    gate: Str | None = None
    angle: Float | None = None
    basis: Str | None = None
    inplace: Bool = False


@message("app_subroutine_request")
@dataclass(frozen=True, slots=True)
class AppSubroutineRequest:
    """Local operations run in order as one broker batch (netqasm's subroutine): the app
    defers gates and frees and sends them with the next measurement, or before anything
    else it asks. Checked whole before any runs: one bad op refuses them all."""

    ops: list[AppOp]


@message("app_subroutine_reply")
@dataclass(frozen=True, slots=True)
class AppSubroutineReply:
    outcomes: list[Int]  # one per measure op, in order


@message("app_state_request")
@dataclass(frozen=True, slots=True)
class AppStateRequest:
    """Oracle (emulator only): the reduced density matrix of these qubits, any node's."""

    qubits: list[Int]


@message("app_state_reply")
@dataclass(frozen=True, slots=True)
class AppStateReply:
    real: list[Float]  # row-major
    imag: list[Float]


@message("app_send_request")
@dataclass(frozen=True, slots=True)
class AppSendRequest:
    """A classical message for the app on `remote_node_id` (JSON text)."""

    remote_node_id: Str
    payload: Str


@message("app_recv_request")
@dataclass(frozen=True, slots=True)
class AppRecvRequest:
    """The next classical message from the app on `remote_node_id` (answered on arrival)."""

    remote_node_id: Str


@message("app_recv_reply")
@dataclass(frozen=True, slots=True)
class AppRecvReply:
    payload: Str


@message("app_epr_create_request")
@dataclass(frozen=True, slots=True)
class AppEprCreateRequest:
    """Entangled pairs with the app on `remote_node_id` (adjacent or through repeaters)."""

    remote_node_id: Str
    number: Int = 1
    type: Str = "keep"  # keep | measure
    basis: Str = "Z"  # measure: Z, X, Y or random
    minimum_fidelity: Float = 0.0
    max_time_s: Float = 10.0


@message("app_epr_recv_request")
@dataclass(frozen=True, slots=True)
class AppEprRecvRequest:
    """The other end: the next `number` pairs the app on `remote_node_id` created with us."""

    remote_node_id: Str
    number: Int = 1
    type: Str = "keep"


@nested
@dataclass(frozen=True, slots=True)
class AppPair:
    """This app's half of one pair, Pauli frame already applied (both ends see Φ+)."""

    create_id: Int
    sequence_number: Int
    bell_state: Str  # as heralded, before the frame correction at the receiving end
    qubit: Int | None = None  # keep
    outcome: Int | None = None  # measure
    basis: Str | None = None
    fidelity: Float | None = None  # initiator: oracle fidelity when delivered
    path: list[Str] | None = None


@message("app_epr_reply")
@dataclass(frozen=True, slots=True)
class AppEprReply:
    pairs: list[AppPair]


@message("app_message")
@dataclass(frozen=True, slots=True)
class AppMessage:
    """Node → node: a classical message from the sender node's app to ours."""

    payload: Str


@message("app_epr_half")
@dataclass(frozen=True, slots=True)
class AppEprHalf:
    """Initiator node → other end: this half of a pair delivered to my app is your app's."""

    type: Str  # keep | measure
    pair: AppPair  # qubit, or outcome and basis, as the receiving node holds it
