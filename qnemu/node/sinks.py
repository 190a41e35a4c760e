"""Where an initiating node reports a request: back to a client, or to a workload."""

import asyncio
from typing import TYPE_CHECKING

from qnemu.runtime import Origin
from qnemu.wire.control import (
    EntangleDone,
    EntangleErr,
    EntangleExpire,
    EntangleOk,
    FreeRequest,
)

if TYPE_CHECKING:
    from qnemu.node.service import NodeService

__all__ = ["ClientSink", "WorkloadSink"]


class ClientSink:
    """Replies to the client that sent the entangle_request, on the socket it came in on."""

    def __init__(self, node: "NodeService", origin: Origin, parent_id: str):
        self.node = node
        self.origin = origin
        self.parent_id = parent_id

    def ok(self, pair: EntangleOk) -> None:
        self.node.reply(self.origin, pair, parent_id=self.parent_id)

    def err(self, error: EntangleErr) -> None:
        self.node.reply(self.origin, error, parent_id=self.parent_id)

    def done(self, done: EntangleDone) -> None:
        self.node.reply(self.origin, done, parent_id=self.parent_id)

    def expire(self, expire: EntangleExpire) -> None:
        # On the request's stream even after entangle_done: the client keeps kept pairs.
        self.node.reply(self.origin, expire, parent_id=self.parent_id)


class WorkloadSink:
    """A background application that counts pairs and, for keep pairs, frees both halves."""

    def __init__(self, node: "NodeService", *, release: bool):
        self.node = node
        self.release = release
        self.delivered = 0
        self.expired = 0
        self.last_error: EntangleErr | None = None
        self.finished = asyncio.Event()

    def ok(self, pair: EntangleOk) -> None:
        self.delivered += 1
        if self.release and pair.qubits is not None:
            own, peer_half = pair.qubits
            self.node.spawn(self.node.release_qubits([own]))
            self.node.send(pair.dst, FreeRequest([peer_half]))

    def err(self, error: EntangleErr) -> None:
        self.last_error = error
        self.finished.set()

    def done(self, done: EntangleDone) -> None:
        self.finished.set()

    def expire(self, expire: EntangleExpire) -> None:
        self.expired += len(expire.sequence_numbers)  # (kept halves are freed at once)
