"""Async Python client for a running qnemu network (what the CLI uses, too).

async with QnemuClient(run_dir) as client:
    async for pair in client.entangle("delft", "hague", pairs=10, measure="random"):
        print(pair.outcomes, pair.fidelity)

Pairs can be lost after their herald (a cut fibre) or, kept, after their OK (a cutoff):
the node then sends the link layer's EXPIRE on the request's stream, also after
entangle_done. The iterator does not raise for it (the request goes on); each EXPIRE goes
to `entangle(on_expire=...)` and is kept until `await client.expirations(node)` takes it.
One that comes after the stream ended is read with the next reply from that node, or by
`expirations(node, wait_s=...)`.
"""

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import zmq
import zmq.asyncio

from qnemu.launch.plan import RunPlan
from qnemu.runtime import EmulatedClock
from qnemu.runtime.curve import apply_client, client_identity
from qnemu.wire import Envelope, WireError, decode, encode, new_msg_id
from qnemu.wire.common import (
    ErrorReply,
    FaultReply,
    FaultRequest,
    PingReply,
    PingRequest,
    StatsReply,
    StatsRequest,
)
from qnemu.wire.control import (
    EntangleDone,
    EntangleErr,
    EntangleExpire,
    EntangleOk,
    EntangleRequest,
    FreeReply,
    FreeRequest,
    MeasureReply,
    MeasureRequest,
)

__all__ = ["EntangleError", "QnemuClient", "RequestError"]


class RequestError(Exception):
    """A process answered with an error."""

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class EntangleError(RequestError):
    """The link layer's ERR (UNSUPP, NOTIME, NORES, TIMEOUT, ...) after `delivered` pairs."""

    def __init__(self, code: str, message: str, delivered: int = 0):
        super().__init__(code, message)
        self.delivered = delivered


class QnemuClient:
    """Talks to the processes of one run, identified by a client name of its own."""

    def __init__(self, run_dir: str | Path, *, name: str | None = None):
        self.plan = RunPlan.read(Path(run_dir))
        self.clock = EmulatedClock(self.plan.epoch_wall_s, self.plan.time_scale)
        self.name = name or f"client-{os.getpid()}-{os.urandom(3).hex()}"
        self._context = zmq.asyncio.Context()
        self._sockets: dict[str, zmq.asyncio.Socket] = {}
        names = [process.name for process in self.plan.processes]
        # None: an insecure run
        self._curve = client_identity(Path(run_dir), names, self.plan.public_keys)
        self._inboxes: dict[str, asyncio.Queue[Envelope]] = {}
        self._readers: dict[str, asyncio.Lock] = {}
        # Entangle requests whose EXPIREs we listen for: msg_id → (node, callback).
        self._watched: dict[str, tuple[str, Callable[[EntangleExpire], None] | None]] = {}
        self._expired: dict[str, list[EntangleExpire]] = {}  # by node, until taken

    async def __aenter__(self) -> "QnemuClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for socket in self._sockets.values():
            socket.close(linger=0)
        self._sockets.clear()
        self._context.term()

    @property
    def network(self) -> str:
        return self.plan.network

    def _socket(self, process: str) -> zmq.asyncio.Socket:
        if process not in self._sockets:
            endpoint = self.plan.process(process).endpoint  # KeyError names the known ones
            socket = self._context.socket(zmq.DEALER)
            socket.setsockopt(zmq.IDENTITY, self.name.encode())
            socket.setsockopt(zmq.LINGER, 0)
            apply_client(socket, self._curve, process)
            socket.connect(endpoint)
            self._sockets[process] = socket
        return self._sockets[process]

    async def _send(self, process: str, body: Any) -> str:
        msg_id = new_msg_id()
        self._inboxes[msg_id] = asyncio.Queue()
        data = encode(body, sender=self.name, sent_at=self.clock.now(), msg_id=msg_id)
        await self._socket(process).send(data)
        return msg_id

    async def _receive(self, process: str, msg_id: str, timeout_s: float) -> Envelope:
        """The next message answering `msg_id`. One reader at a time per socket sorts
        what arrives into per-request inboxes, so concurrent requests never steal
        each other's replies."""
        inbox = self._inboxes[msg_id]
        socket = self._socket(process)
        lock = self._readers.setdefault(process, asyncio.Lock())
        deadline = asyncio.get_running_loop().time() + timeout_s
        while inbox.empty():
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise TimeoutError(f"{process} did not answer within {timeout_s} s")
            if lock.locked():  # another request is reading: it will fill our inbox
                with contextlib.suppress(TimeoutError):
                    return await asyncio.wait_for(inbox.get(), min(remaining, 0.05))
                continue
            async with lock:
                if not await socket.poll(timeout=int(min(remaining, 0.05) * 1000)):
                    continue
                await self._read_one(socket)
        return inbox.get_nowait()

    async def _read_one(self, socket: zmq.asyncio.Socket) -> None:
        """Sort one arrived message: an EXPIRE to its request's watch, else to its inbox."""
        try:
            envelope = decode(await socket.recv())
        except WireError:
            return
        parent = envelope.parent_id or ""
        if isinstance(envelope.body, EntangleExpire) and parent in self._watched:
            node, on_expire = self._watched[parent]
            self._expired.setdefault(node, []).append(envelope.body)
            if on_expire is not None:
                on_expire(envelope.body)
            return
        target = self._inboxes.get(parent)
        if target is not None:
            target.put_nowait(envelope)

    async def expirations(self, node: str, *, wait_s: float = 0.0) -> list[EntangleExpire]:
        """The EXPIREs `node` sent for this client's entangle requests, listening
        `wait_s` wall seconds more first; each is returned once."""
        socket = self._socket(node)
        lock = self._readers.setdefault(node, asyncio.Lock())
        deadline = asyncio.get_running_loop().time() + wait_s
        while True:
            async with lock:
                while await socket.poll(timeout=0):
                    await self._read_one(socket)
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                return self._expired.pop(node, [])
            await asyncio.sleep(min(remaining, 0.05))

    def _done(self, msg_id: str) -> None:
        self._inboxes.pop(msg_id, None)

    async def call(self, process: str, body: Any, *, timeout_s: float = 5.0) -> Any:
        """One request, one reply body; an error_reply raises RequestError."""
        msg_id = await self._send(process, body)
        try:
            reply = (await self._receive(process, msg_id, timeout_s)).body
        finally:
            self._done(msg_id)
        if isinstance(reply, ErrorReply):
            raise RequestError(reply.code, reply.message)
        return reply

    async def ping(self, process: str, *, timeout_s: float = 1.0) -> PingReply:
        return await self.call(process, PingRequest(), timeout_s=timeout_s)

    async def stats(self, process: str, *, timeout_s: float = 2.0) -> dict[str, Any]:
        reply: StatsReply = await self.call(process, StatsRequest(), timeout_s=timeout_s)
        return reply.stats

    async def entangle(
        self,
        src: str,
        dst: str,
        *,
        pairs: int = 1,
        minimum_fidelity: float = 0.0,
        measure: str | None = None,
        timeout_s: float = 10.0,
        purify: str = "dejmps",
        on_expire: Callable[[EntangleExpire], None] | None = None,
    ) -> AsyncIterator[EntangleOk]:
        """Yield each delivered pair; raise EntangleError on the link layer's ERR.

        An EXPIRE (pairs lost, yielded or not yet: sequence numbers never yielded are
        made again) does not end the iteration; it calls `on_expire` and waits for
        `expirations(src)`, also when it comes after the last pair.

        `measure` None keeps the pairs in memory (free or measure them afterwards);
        Z, X, Y or random measures both halves at once in that basis. `purify`: how
        the nodes lift pairs above what the links give when `minimum_fidelity` asks
        for it (dejmps, bbpssw), or none to be refused instead.
        """
        request = EntangleRequest(
            remote_node_id=dst,
            number=pairs,
            minimum_fidelity=minimum_fidelity,
            max_time_s=timeout_s,
            type="keep" if measure is None else "measure",
            basis=measure or "random",
            purify=purify,
        )
        msg_id = await self._send(src, request)
        self._watched[msg_id] = (src, on_expire)
        # The node enforces the emulated deadline; the wall-clock guard covers a dead node.
        guard_s = self.clock.wall_delay_s(timeout_s) + 5.0
        try:
            while True:
                body = (await self._receive(src, msg_id, guard_s)).body
                if isinstance(body, EntangleOk):
                    yield body
                elif isinstance(body, EntangleDone):
                    return
                elif isinstance(body, EntangleErr):
                    raise EntangleError(body.error_code, body.message, body.delivered)
                elif isinstance(body, ErrorReply):
                    raise RequestError(body.code, body.message)
        finally:
            self._done(msg_id)

    async def fault(
        self,
        process: str,
        kind: str,
        target: str | None = None,
        parameters: dict[str, Any] | None = None,
        *,
        timeout_s: float = 5.0,
    ) -> dict[str, Any]:
        """Emulate a fault at one process (see `qnemu fault`); returns its active faults."""
        request = FaultRequest(kind, target, dict(parameters or {}))
        reply: FaultReply = await self.call(process, request, timeout_s=timeout_s)
        return reply.faults

    async def measure(self, node: str, qubit: int, basis: str = "Z") -> int:
        reply: MeasureReply = await self.call(node, MeasureRequest(qubit, basis))
        return reply.outcome

    async def free(self, node: str, qubits: list[int]) -> int:
        reply: FreeReply = await self.call(node, FreeRequest(list(qubits)))
        return reply.freed
