"""One app's connection to its node: a DEALER (identity: the app's client name) and a
reader that hands each reply to the request it answers (by parent id), so many requests
of one app can be in flight at once (`asyncio.gather` over qubits) without polling."""

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import Any

import zmq
import zmq.asyncio

from qnemu.app.api import AppError
from qnemu.runtime import EmulatedClock
from qnemu.runtime.curve import CurveIdentity, apply_client
from qnemu.wire import WireError, decode, encode, new_msg_id
from qnemu.wire.common import ErrorReply

__all__ = ["NodeConnection"]

REQUEST_TIMEOUT_S = 10.0  # wall seconds for a request that needs no other app


class NodeConnection:
    """Requests to one node process; every reply resolves the future of its request."""

    def __init__(
        self,
        endpoint: str,
        node: str,
        name: str,
        clock: EmulatedClock,
        curve: CurveIdentity | None = None,
    ):
        self.node = node
        self.name = name
        self.clock = clock
        self._context = zmq.asyncio.Context()
        self._socket = self._context.socket(zmq.DEALER)
        self._socket.setsockopt(zmq.IDENTITY, name.encode())
        self._socket.setsockopt(zmq.LINGER, 0)
        apply_client(self._socket, curve, node)
        self._socket.connect(endpoint)
        self._pending: dict[str, asyncio.Future] = {}
        self._reader: asyncio.Task | None = None

    async def call(self, body: Any, *, timeout_s: float | None = None) -> Any:
        """Send one request and wait for its reply body; an error_reply raises AppError."""
        return await (await self.submit(body, timeout_s=timeout_s))

    async def submit(self, body: Any, *, timeout_s: float | None = None) -> Awaitable[Any]:
        """Send one request now; what it returns awaits the reply (as `call` does). Requests
        submitted one after another reach the node in that order."""
        if self._reader is None:
            self._reader = asyncio.get_running_loop().create_task(self._read())
        msg_id = new_msg_id()
        future = asyncio.get_running_loop().create_future()
        self._pending[msg_id] = future
        try:
            data = encode(body, sender=self.name, sent_at=self.clock.now(), msg_id=msg_id)
            await self._socket.send(data)
        except BaseException:
            self._pending.pop(msg_id, None)
            raise
        reply = self._reply(msg_id, future, timeout_s or REQUEST_TIMEOUT_S)
        return asyncio.get_running_loop().create_task(reply)

    async def _reply(self, msg_id: str, future: asyncio.Future, timeout_s: float) -> Any:
        try:
            reply = await asyncio.wait_for(future, timeout_s)
        except TimeoutError:
            raise TimeoutError(f"{self.node} did not answer within {timeout_s:g} s") from None
        finally:
            self._pending.pop(msg_id, None)
        if isinstance(reply, ErrorReply):
            raise AppError(reply.code, reply.message)
        return reply

    async def _read(self) -> None:
        while True:
            data = await self._socket.recv()
            try:
                envelope = decode(data)
            except WireError:
                continue  # nothing we asked for; the node never sends garbage
            future = self._pending.get(envelope.parent_id or "")
            if future is not None and not future.done():
                future.set_result(envelope.body)

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
            self._reader = None
        self._socket.close(linger=0)
        self._context.term()
