"""What an application sees of its node, in the netqasm vocabulary.

    async def main(node):
        epr = node.epr_socket("bob")
        q = await node.qubit()
        await q.H()
        (e,) = await epr.create_keep(1)

Handles, never amplitudes, except through the emulator-only oracle `state()`.

As with netqasm's subroutines, local operations are not sent one by one: gates and
frees are collected and go to the node as one `app_subroutine_request` (one broker
batch) with the next measurement, or just before the next request of any other kind
(pipelined, without waiting for its reply). `await q.H()` therefore returns at once;
a gate the node refuses raises at the app's next request that waits for a reply, or at
`await node.flush()`, which the runner also does when `main` returns.
"""

import asyncio
import json
import math
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from qnemu.wire.app import (
    AppAllocRequest,
    AppEprCreateRequest,
    AppEprRecvRequest,
    AppOp,
    AppPair,
    AppRecvRequest,
    AppSendRequest,
    AppStateRequest,
    AppSubroutineRequest,
)

__all__ = [
    "AppError",
    "EPRSocket",
    "EprMeasureResult",
    "NodeHandle",
    "PairInfo",
    "Qubit",
    "Socket",
    "Transport",
]

# A receive waits for the other app: as long as the run lets it (the runner's timeout).
WAIT_FOREVER_S = 1e9


class AppError(Exception):
    """The node refused an operation (`code` is machine-readable: NORES, unknown_qubit, ...)."""

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class Transport(Protocol):
    """Requests to the app's node (an error reply raises AppError)."""

    async def call(self, body: Any, *, timeout_s: float | None = None) -> Any:
        """Send one request and wait for its reply body."""

    async def submit(self, body: Any, *, timeout_s: float | None = None) -> Awaitable[Any]:
        """Send one request now; the reply body (or AppError) when the result is awaited."""


@dataclass(frozen=True, slots=True)
class PairInfo:
    """Where an entangled qubit came from: the pair as the link or network layer made it."""

    remote_node_id: str
    create_id: int
    sequence_number: int
    bell_state: str  # as heralded; the app's qubits are in Φ+ after the frame correction
    fidelity: float | None  # the initiator's oracle fidelity at delivery
    path: tuple[str, ...] | None


@dataclass(frozen=True, slots=True)
class EprMeasureResult:
    """One measured pair (create_measure / recv_measure): this app's outcome, frame applied."""

    outcome: int
    basis: str
    pair: PairInfo


def _info(remote: str, pair: AppPair) -> PairInfo:
    path = tuple(pair.path) if pair.path is not None else None
    return PairInfo(
        remote, pair.create_id, pair.sequence_number, pair.bell_state, pair.fidelity, path
    )


def _angle(angle: float | None, n: int, d: int) -> float:
    """netqasm's angles: `angle` in radians, or n·π/2^d."""
    return float(angle) if angle is not None else n * math.pi / 2**d


class NodeHandle:
    """An app's view of its node: fresh qubits, sockets to other nodes' apps, the oracle."""

    def __init__(self, name: str, transport: Transport, *, memory_qubits: int | None = None):
        self.name = name
        self.memory_qubits = memory_qubits
        self._transport = transport
        self._deferred: list[AppOp] = []  # gates and frees not sent yet
        self._in_flight: list[Awaitable[Any]] = []  # subroutines sent, replies not read

    def _defer(self, op: AppOp) -> None:
        self._deferred.append(op)

    async def _send_deferred(self, last: AppOp | None = None) -> Awaitable[Any] | None:
        """Send the deferred ops (and `last`) as one subroutine, not waiting for the reply."""
        ops = [*self._deferred, *([last] if last is not None else [])]
        self._deferred = []
        if not ops:
            return None
        reply = await self._transport.submit(AppSubroutineRequest(ops))
        self._in_flight.append(reply)
        return reply

    async def _settle(self) -> None:
        """Read the replies of the subroutines sent so far: the first refusal raises."""
        in_flight, self._in_flight = self._in_flight, []
        errors = []
        for reply in in_flight:
            try:
                await reply
            except AppError as error:
                errors.append(error)
        if errors:
            raise errors[0]

    async def flush(self) -> None:
        """Run every deferred operation now and raise if the node refused one."""
        await self._send_deferred()
        await self._settle()

    async def _call(self, body: Any, *, timeout_s: float | None = None) -> Any:
        """One request after the deferred ops, which go first (pipelined: same order at
        the node, one round trip)."""
        await self._send_deferred()
        reply = await self._transport.submit(body, timeout_s=timeout_s)
        try:
            await self._settle()
        except AppError:
            _abandon(reply)  # it ran, but the refusal before it is what the app hears of
            raise
        return await reply

    async def _run(self, op: AppOp) -> Any:
        """The deferred ops and `op` as one subroutine; its reply."""
        reply = await self._send_deferred(op)
        assert reply is not None
        self._in_flight.remove(reply)
        try:
            await self._settle()
        except AppError:
            _abandon(reply)
            raise
        return await reply

    async def qubit(self) -> "Qubit":
        """A fresh qubit in |0⟩ in this node's memory (NORES when the memory is full)."""
        reply = await self._call(AppAllocRequest())
        return Qubit(self, reply.qubit)

    def epr_socket(self, remote_node_id: str) -> "EPRSocket":
        return EPRSocket(self, remote_node_id)

    def socket(self, remote_node_id: str) -> "Socket":
        return Socket(self, remote_node_id)

    async def state(self, *qubits: "Qubit | int") -> np.ndarray:
        """Emulator only: the joint reduced density matrix of qubits (any node's handles),
        first qubit the most significant."""
        handles = [q.handle if isinstance(q, Qubit) else int(q) for q in qubits]
        reply = await self._call(AppStateRequest(handles))
        size = 2 ** len(handles)
        rho = np.asarray(reply.real) + 1j * np.asarray(reply.imag)
        return rho.reshape(size, size)


class Qubit:
    """A qubit this app holds in its node's memory (by handle)."""

    def __init__(self, node: NodeHandle, handle: int, pair: PairInfo | None = None):
        self.node = node
        self.handle = handle
        self.pair = pair  # set for a half of an entangled pair
        self.active = True

    def __repr__(self) -> str:
        state = "" if self.active else ", released"
        return f"Qubit({self.node.name}:{self.handle}{state})"

    def _check(self, *others: "Qubit") -> None:
        for qubit in (self, *others):
            if not qubit.active:
                raise AppError("released", f"{qubit!r} was measured or freed")
            if qubit.node is not self.node:
                raise AppError("remote_qubit", f"{qubit!r} is not on {self.node.name}")

    async def _gate(self, gate: str, *others: "Qubit", angle: float | None = None) -> None:
        self._check(*others)
        handles = [self.handle, *(q.handle for q in others)]
        self.node._defer(AppOp("gate", handles, gate=gate, angle=angle))

    async def X(self) -> None:
        await self._gate("X")

    async def Y(self) -> None:
        await self._gate("Y")

    async def Z(self) -> None:
        await self._gate("Z")

    async def H(self) -> None:
        await self._gate("H")

    async def S(self) -> None:
        await self._gate("S")

    async def T(self) -> None:
        await self._gate("T")

    async def rot_x(self, angle: float | None = None, *, n: int = 0, d: int = 0) -> None:
        """exp(−iθX/2), θ = `angle` radians or n·π/2^d (netqasm's form)."""
        await self._gate("RX", angle=_angle(angle, n, d))

    async def rot_y(self, angle: float | None = None, *, n: int = 0, d: int = 0) -> None:
        await self._gate("RY", angle=_angle(angle, n, d))

    async def rot_z(self, angle: float | None = None, *, n: int = 0, d: int = 0) -> None:
        await self._gate("RZ", angle=_angle(angle, n, d))

    async def cnot(self, target: "Qubit") -> None:
        """CNOT with this qubit as control."""
        await self._gate("CNOT", target)

    async def cphase(self, target: "Qubit") -> None:
        """Controlled-Z."""
        await self._gate("CZ", target)

    async def measure(self, basis: str = "Z", *, inplace: bool = False) -> int:
        """Measure in Z, X or Y (0: the +1 eigenstate), with the node's readout error;
        the qubit is freed unless `inplace`."""
        self._check()
        if not inplace:
            self.active = False
        reply = await self.node._run(AppOp("measure", [self.handle], basis=basis, inplace=inplace))
        return reply.outcomes[-1]

    async def free(self) -> None:
        self._check()
        self.active = False
        self.node._defer(AppOp("free", [self.handle]))

    async def state(self) -> np.ndarray:
        """Emulator only: this qubit's reduced density matrix (2×2)."""
        self._check()
        return await self.node.state(self)


class EPRSocket:
    """Entangled pairs with the app on `remote_node_id`, delivered as Φ+."""

    def __init__(self, node: NodeHandle, remote_node_id: str):
        self.node = node
        self.remote_node_id = remote_node_id

    async def _create(self, number: int, type: str, basis: str, fidelity: float, time_s: float):
        request = AppEprCreateRequest(self.remote_node_id, number, type, basis, fidelity, time_s)
        # The node enforces the emulated deadline; the wall-clock guard covers a dead node.
        reply = await self.node._call(request, timeout_s=WAIT_FOREVER_S)
        return reply.pairs

    async def _recv(self, number: int, type: str) -> list[AppPair]:
        request = AppEprRecvRequest(self.remote_node_id, number, type)
        reply = await self.node._call(request, timeout_s=WAIT_FOREVER_S)
        return reply.pairs

    def _qubits(self, pairs: list[AppPair]) -> list[Qubit]:
        return [Qubit(self.node, p.qubit, _info(self.remote_node_id, p)) for p in pairs]

    def _results(self, pairs: list[AppPair]) -> list[EprMeasureResult]:
        return [EprMeasureResult(p.outcome, p.basis, _info(self.remote_node_id, p)) for p in pairs]

    async def create_keep(
        self, number: int = 1, *, minimum_fidelity: float = 0.0, max_time_s: float = 10.0
    ) -> list[Qubit]:
        """`number` pairs kept in memory; this app gets its halves (the other app: recv_keep)."""
        pairs = await self._create(number, "keep", "Z", minimum_fidelity, max_time_s)
        return self._qubits(pairs)

    async def recv_keep(self, number: int = 1) -> list[Qubit]:
        """The halves of the next `number` pairs the other app creates with create_keep."""
        return self._qubits(await self._recv(number, "keep"))

    async def create_measure(
        self,
        number: int = 1,
        *,
        basis: str = "Z",
        minimum_fidelity: float = 0.0,
        max_time_s: float = 10.0,
    ) -> list[EprMeasureResult]:
        """`number` pairs measured at once at both ends in `basis` (Z, X, Y, or random:
        each end picks Z or X independently)."""
        pairs = await self._create(number, "measure", basis, minimum_fidelity, max_time_s)
        return self._results(pairs)

    async def recv_measure(self, number: int = 1) -> list[EprMeasureResult]:
        return self._results(await self._recv(number, "measure"))


class Socket:
    """A classical channel to the app on `remote_node_id`, through the nodes (fibre-delayed).

    Values are sent as JSON: strings, numbers, booleans, lists and dicts of them.
    """

    def __init__(self, node: NodeHandle, remote_node_id: str):
        self.node = node
        self.remote_node_id = remote_node_id

    async def send(self, value: Any) -> None:
        payload = json.dumps(value, default=_plain)
        await self.node._call(AppSendRequest(self.remote_node_id, payload))

    async def recv(self, *, timeout_s: float | None = None) -> Any:
        """The next value the other app sent (waits for it; `timeout_s` in wall seconds)."""
        request = AppRecvRequest(self.remote_node_id)
        reply = await self.node._call(request, timeout_s=timeout_s or WAIT_FOREVER_S)
        return json.loads(reply.payload)


def _abandon(reply: Awaitable[Any]) -> None:
    """Stop waiting for a reply nobody will read."""
    if isinstance(reply, asyncio.Future):
        reply.cancel()


def _plain(value: Any) -> Any:
    """numpy values as plain JSON values."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} cannot be sent over a socket (JSON values only)")
