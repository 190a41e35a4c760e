"""The messaging core every qnemu process runs on.

One ROUTER socket receives everything addressed to the process; one DEALER per peer
sends (its identity is the process name, so the peer's ROUTER knows who is talking).
Incoming messages are decoded and validated, then held until their fibre-delayed due
time (`sent_at + delay(sender)`, emulated) and dispatched through a table from message
type to handler. Bad input is counted, logged once and answered with an error; it never
stops the process.
"""

import asyncio
import contextlib
import heapq
import inspect
import itertools
import logging
import os
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import zmq
import zmq.asyncio
from prometheus_client import CollectorRegistry
from zmq.auth.asyncio import AsyncioAuthenticator

from qnemu.runtime.clock import TIMER_GRANULARITY_S, EmulatedClock
from qnemu.runtime.curve import CurveIdentity
from qnemu.runtime.faults import ChannelFaults
from qnemu.runtime.metrics import CommonMetrics, serve_metrics
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

__all__ = ["Origin", "Service", "ServiceAddress"]

log = logging.getLogger(__name__)

Handler = Callable[[Envelope, "Origin"], Awaitable[None] | None]
HIGH_WATER_MARK = 100_000


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a message came from, so a reply can go back the same way."""

    socket: zmq.Socket
    identity: bytes | None  # routing identity on our ROUTER; None when it came on a DEALER


@dataclass(frozen=True, slots=True)
class ServiceAddress:
    """How to reach a process: its ZeroMQ endpoint and the metrics port it serves."""

    endpoint: str
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = None


class Service:
    """Base of broker, station and node processes: sockets, delays, dispatch, lifecycle."""

    role = "service"

    def __init__(
        self,
        name: str,
        address: ServiceAddress,
        clock: EmulatedClock,
        *,
        network: str = "qnemu",
        peers: dict[str, str] | None = None,
        directory: dict[str, str] | None = None,
        delays_s: dict[str, float] | None = None,
        registry: CollectorRegistry | None = None,
        curve: CurveIdentity | None = None,
    ):
        self.name = name
        self.address = address
        self.clock = clock
        self.network = network
        self.peer_endpoints = dict(peers or {})
        # Processes we may talk to later: connected on first send (a node reaches the far
        # end of a path only when it serves one).
        self.directory = dict(directory or {})
        self.delays_s = dict(delays_s or {})
        self.registry = registry or CollectorRegistry()
        self.metrics = CommonMetrics(self.registry, name=name, role=self.role, network=network)
        self.handlers: dict[str, Handler] = {
            PingRequest.msg_type: self._on_ping,
            StatsRequest.msg_type: self._on_stats,
            ErrorReply.msg_type: self._on_error_reply,
            FaultRequest.msg_type: self._on_fault,
        }
        self.ready = False
        self.curve = curve  # None: plain text (a run started with --insecure)
        self.faults = ChannelFaults()  # emulated faults on classical channels (qnemu fault)
        self._authenticator = None
        self._context = zmq.asyncio.Context()
        # Each socket twice: the asyncio one only to wait for input, a synchronous shadow
        # of the same socket for every send and receive (no Future per message).
        self._router: zmq.asyncio.Socket | None = None
        self._router_io: zmq.Socket | None = None
        self._dealers: dict[str, zmq.asyncio.Socket] = {}
        self._dealers_io: dict[str, zmq.Socket] = {}
        self._io_of: dict[zmq.asyncio.Socket, zmq.Socket] = {}
        self._counted: dict[tuple[str, str], Any] = {}
        self._drain_scheduled = False
        self._pending: dict[str, asyncio.Future] = {}
        self._due: list[tuple[float, int, Envelope, Origin]] = []
        self._due_changed = asyncio.Event()
        self._order = itertools.count()
        self._stopping = asyncio.Event()
        self._tasks: asyncio.TaskGroup | None = None
        self._metrics_server = None
        self._log_budget = 100  # lines about rejected messages, so garbage cannot flood the log

    # ---- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Bind, connect to peers and serve metrics. Subclasses extend and then set ready."""
        if self.curve is not None:  # ZAP checks every client key before a byte gets through
            self._authenticator = AsyncioAuthenticator(self._context)
            self._authenticator.start()
            self._authenticator.configure_curve_callback("*", credentials_provider=self)
        router = self._context.socket(zmq.ROUTER)
        if self.curve is not None:
            self.curve.serve(router)
        router.setsockopt(zmq.LINGER, 0)
        router.setsockopt(zmq.RCVHWM, HIGH_WATER_MARK)
        router.setsockopt(zmq.SNDHWM, HIGH_WATER_MARK)
        router.setsockopt(zmq.ROUTER_HANDOVER, 1)  # a restarted peer takes its identity back
        router.bind(self.address.endpoint)
        self._router = router
        self._router_io = self._io_of[router] = zmq.Socket.shadow(router.underlying)
        for peer, endpoint in self.peer_endpoints.items():
            self.connect(peer, endpoint)
        if self.address.metrics_port is not None:
            self._metrics_server = serve_metrics(
                self.registry, self.address.metrics_host, self.address.metrics_port
            )

    async def main(self) -> None:
        """The process's own work, run beside message handling; default: nothing."""

    async def run(self) -> None:
        """Start, serve until stop() or SIGTERM/SIGINT, then close everything."""
        await self.start()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.stop)
        try:
            async with asyncio.TaskGroup() as tasks:
                self._tasks = tasks
                workers = [
                    tasks.create_task(self._receive_loop()),
                    tasks.create_task(self._delivery_loop()),
                    tasks.create_task(self.main()),
                ]
                await self._stopping.wait()
                for worker in workers:
                    worker.cancel()
                await self.on_stop()
                for task in asyncio.all_tasks():
                    if task is not asyncio.current_task() and not task.done():
                        task.cancel()
        finally:
            self.close()

    def stop(self) -> None:
        self._stopping.set()

    async def on_stop(self) -> None:
        """Hook: last words before sockets close (e.g. tell peers)."""

    def callback(self, domain: str, client_key: bytes) -> bool:
        """ZAP: accept a Curve client only if its public key is one we talk to."""
        accepted = self.curve is not None and self.curve.callback(domain, client_key)
        if not accepted:
            self.metrics.rejected.labels(reason="curve_key_refused").inc()
            if self._log_budget > 0:
                self._log_budget -= 1
                log.warning("%s: refused a connection with an unknown Curve key", self.name)
        return accepted

    def close(self) -> None:
        if self._authenticator is not None:
            self._authenticator.stop()
            self._authenticator = None
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
            self._metrics_server.server_close()
            self._metrics_server = None
        for socket in [self._router, *self._dealers.values()]:
            if socket is not None:
                socket.close(linger=0)
        self._dealers.clear()
        self._dealers_io.clear()
        self._io_of.clear()
        self._context.term()

    def spawn(self, coroutine: Awaitable[Any]) -> asyncio.Task:
        """Run work inside the process's task group (never fire-and-forget)."""
        assert self._tasks is not None, "spawn() before run()"
        return self._tasks.create_task(self._guarded(coroutine))

    async def _guarded(self, coroutine: Awaitable[Any]) -> Any:
        try:
            return await coroutine
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s: background task failed", self.name)

    # ---- sending ---------------------------------------------------------------------

    def connect(self, peer: str, endpoint: str) -> None:
        dealer = self._context.socket(zmq.DEALER)
        dealer.setsockopt(zmq.IDENTITY, self.name.encode())
        dealer.setsockopt(zmq.LINGER, 0)
        dealer.setsockopt(zmq.SNDHWM, HIGH_WATER_MARK)
        dealer.setsockopt(zmq.RCVHWM, HIGH_WATER_MARK)
        dealer.setsockopt(zmq.RECONNECT_IVL, 100)
        dealer.setsockopt(zmq.RECONNECT_IVL_MAX, 2000)
        if self.curve is not None:
            self.curve.connect_to(dealer, peer)
        dealer.connect(endpoint)
        self._dealers[peer] = dealer
        self._dealers_io[peer] = self._io_of[dealer] = zmq.Socket.shadow(dealer.underlying)
        self.peer_endpoints[peer] = endpoint

    def send(
        self,
        peer: str,
        body: Any,
        *,
        parent_id: str | None = None,
        sent_at: float | None = None,
    ) -> str:
        """Send a message to a peer; returns its msg_id. Never blocks: a full queue drops.

        `sent_at` defaults to now; a station stamps a herald with the emulated moment the
        attempt succeeded, so the receiver's fibre delay counts from there.
        """
        msg_id = new_msg_id()
        if self.faults.blocks(peer):  # the fibre to this peer is cut: the message is lost
            self.metrics.rejected.labels(reason="fault_dropped").inc()
            return msg_id
        stamp = self.clock.now() if sent_at is None else sent_at
        data = encode(body, sender=self.name, sent_at=stamp, parent_id=parent_id, msg_id=msg_id)
        if peer not in self._dealers_io and peer in self.directory:
            self.connect(peer, self.directory[peer])
        try:
            dealer = self._dealers_io[peer]
            dealer.send(data, zmq.NOBLOCK)
            self._after_send(dealer)
        except KeyError:
            raise ValueError(f"{self.name}: no connection to {peer!r}") from None
        except zmq.Again:
            self.metrics.rejected.labels(reason="send_queue_full").inc()
            log.warning("%s: queue to %s full, dropped %s", self.name, peer, body.msg_type)
        self._count("out", body.msg_type)
        return msg_id

    def reply(self, origin: Origin, body: Any, *, parent_id: str | None) -> None:
        data = encode(body, sender=self.name, sent_at=self.clock.now(), parent_id=parent_id)
        frames = [data] if origin.identity is None else [origin.identity, data]
        try:
            origin.socket.send_multipart(frames, zmq.NOBLOCK)
            self._after_send(origin.socket)
        except zmq.ZMQError as error:  # peer gone (ROUTER_MANDATORY off) or queue full
            log.debug("%s: reply dropped: %s", self.name, error)
        self._count("out", body.msg_type)

    def _count(self, direction: str, msg_type: str) -> None:
        counter = self._counted.get((direction, msg_type))
        if counter is None:
            counter = self.metrics.messages.labels(direction=direction, msg_type=msg_type)
            self._counted[(direction, msg_type)] = counter
        counter.inc()

    async def request(self, peer: str, body: Any, *, timeout_s: float = 30.0) -> Envelope:
        """Send and wait for the message whose parent_id is ours (wall-clock timeout)."""
        future = asyncio.get_running_loop().create_future()
        msg_id = self.send(peer, body)
        self._pending[msg_id] = future
        try:
            return await asyncio.wait_for(future, timeout_s)
        finally:
            self._pending.pop(msg_id, None)

    # ---- receiving -------------------------------------------------------------------

    async def _receive_loop(self) -> None:
        poller = zmq.asyncio.Poller()
        poller.register(self._router, zmq.POLLIN)
        known = set()
        while True:
            for dealer in self._dealers.values():
                if dealer not in known:
                    poller.register(dealer, zmq.POLLIN)
                    known.add(dealer)
            events = await poller.poll(timeout=200)
            for socket, _ in events:
                await self._drain(self._io_of[socket])

    async def _drain(self, socket: zmq.Socket) -> None:
        self._drain_now(socket)
        await asyncio.sleep(0)  # let other work run between large batches

    def _after_send(self, socket: zmq.Socket) -> None:
        """A send on a socket's synchronous shadow can swallow the edge that would wake
        the poller for messages already waiting on it (ZMQ_FD is edge-triggered): look,
        and drain them soon, or they would wait for the poll timeout (200 ms)."""
        if not self._drain_scheduled and socket.get(zmq.EVENTS) & zmq.POLLIN:
            self._drain_scheduled = True
            asyncio.get_running_loop().call_soon(self._drain_waiting)

    def _drain_waiting(self) -> None:
        self._drain_scheduled = False
        for socket in (self._router_io, *self._dealers_io.values()):
            if socket is None or socket.closed or not socket.get(zmq.EVENTS) & zmq.POLLIN:
                continue
            if not self._drain_now(socket):  # a full batch: come back for the rest
                self._after_send(socket)

    def _drain_now(self, socket: zmq.Socket, batch: int = 1000) -> bool:
        """Receive what is waiting (up to a batch); True if the socket is now empty."""
        for _ in range(batch):
            try:
                frames = socket.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return True
            if socket is self._router_io:
                if len(frames) != 2:  # frames[0] is the sender's identity: answer it
                    error = WireError("malformed", f"expected 1 frame, got {len(frames) - 1}")
                    self._reject(Origin(socket, frames[0]), error)
                    continue
                self._accept(frames[1], Origin(socket, frames[0]))
            else:
                if len(frames) != 1:
                    self._reject(None, WireError("malformed", f"{len(frames)} frames"))
                    continue
                self._accept(frames[0], Origin(socket, None))
        return False

    def _accept(self, data: bytes, origin: Origin) -> None:
        try:
            envelope = decode(data)
        except WireError as error:
            self._reject(origin, error)
            return
        sender = envelope.header.sender
        if origin.identity is not None and origin.identity != sender.encode():
            self._reject(
                origin,
                WireError("sender_mismatch", f"sender {sender!r} is not the connection's identity"),
                envelope.header.msg_id,
            )
            return
        self._count("in", envelope.header.msg_type)
        pending = self._pending.get(envelope.parent_id) if envelope.parent_id else None
        if pending is not None:
            if not pending.done():
                pending.set_result(envelope)
            return
        from_peer = sender in self.delays_s
        # Fault requests are the test's control plane, not traffic on the emulated fibre:
        # a node mending its link must reach the peer and station that cut it off.
        controls = envelope.header.msg_type == FaultRequest.msg_type
        if not controls and self.faults.drops_incoming(sender, from_peer):
            self.metrics.rejected.labels(reason="fault_dropped").inc()
            return
        due_at = envelope.header.sent_at + self.delays_s.get(sender, 0.0)
        if from_peer:
            due_at += self.faults.extra_delay_s
        if due_at <= self.clock.now() and not self._due:
            self._dispatch(envelope, origin, due_at)
        else:
            heapq.heappush(self._due, (due_at, next(self._order), envelope, origin))
            self._due_changed.set()

    async def _delivery_loop(self) -> None:
        """Hand held messages to their handlers at their due time, in due-time order."""
        while True:
            if not self._due:
                self._due_changed.clear()
                await self._due_changed.wait()
                continue
            due_at = self._due[0][0]
            now = self.clock.now()
            if due_at > now:
                wait_s = self.clock.wall_delay_s(due_at - now)
                if wait_s > TIMER_GRANULARITY_S:  # a timer, or an earlier message, wakes us
                    self._due_changed.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(
                            self._due_changed.wait(), wait_s - TIMER_GRANULARITY_S
                        )
                else:  # the last millisecond: a timer would fire late (runtime/clock.py)
                    await asyncio.sleep(0)
                continue
            _, _, envelope, origin = heapq.heappop(self._due)
            self._dispatch(envelope, origin, due_at)
            if len(self._due) % 256 == 0:
                await asyncio.sleep(0)

    def _dispatch(self, envelope: Envelope, origin: Origin, due_at: float) -> None:
        self.metrics.lateness.observe(max(0.0, self.clock.now() - due_at))
        msg_type = envelope.header.msg_type
        handler = self.handlers.get(msg_type)
        if handler is None:
            self._reject(
                origin,
                WireError("unsupported", f"{self.role} {self.name!r} does not handle {msg_type}"),
                envelope.header.msg_id,
            )
            return
        try:
            result = handler(envelope, origin)
        except Exception as error:
            self._handler_failed(envelope, origin, error)
            return
        if inspect.isawaitable(result):
            self.spawn(self._await_handler(result, envelope, origin))

    async def _await_handler(self, result: Awaitable, envelope: Envelope, origin: Origin) -> None:
        try:
            await result
        except asyncio.CancelledError:
            raise
        except Exception as error:
            self._handler_failed(envelope, origin, error)

    def _handler_failed(self, envelope: Envelope, origin: Origin, error: Exception) -> None:
        msg_type = envelope.header.msg_type
        self.metrics.handler_errors.labels(msg_type=msg_type).inc()
        log.exception("%s: handler for %s failed", self.name, msg_type, exc_info=error)
        self.reply(
            origin,
            ErrorReply("internal", f"{msg_type}: {type(error).__name__}: {error}"),
            parent_id=envelope.header.msg_id,
        )

    def _reject(self, origin: Origin | None, error: WireError, msg_id: str | None = None) -> None:
        self.metrics.rejected.labels(reason=error.reason).inc()
        if self._log_budget > 0:
            self._log_budget -= 1
            log.warning("%s: rejected message (%s): %s", self.name, error.reason, error)
        if origin is not None and origin.identity is not None:  # only ROUTER peers hear back
            parent = msg_id or error.header.get("msg_id")
            parent = parent if isinstance(parent, str) else None
            self.reply(origin, ErrorReply(error.reason, str(error)), parent_id=parent)

    # ---- built-in handlers -----------------------------------------------------------

    def _on_ping(self, envelope: Envelope, origin: Origin) -> None:
        reply = PingReply(self.name, self.role, os.getpid(), self.ready, self.clock.now())
        self.reply(origin, reply, parent_id=envelope.header.msg_id)

    def _on_stats(self, envelope: Envelope, origin: Origin) -> None:
        reply = StatsReply(self.name, self.role, self.stats())
        self.reply(origin, reply, parent_id=envelope.header.msg_id)

    def _on_error_reply(self, envelope: Envelope, origin: Origin) -> None:
        """A peer refused something we sent and nobody awaits the answer: say so once."""
        self.metrics.rejected.labels(reason="peer_error").inc()
        if self._log_budget > 0:
            self._log_budget -= 1
            error: ErrorReply = envelope.body
            log.warning(
                "%s: %s answered %s: %s",
                self.name,
                envelope.header.sender,
                error.code,
                error.message,
            )

    def _on_fault(self, envelope: Envelope, origin: Origin) -> None:
        request: FaultRequest = envelope.body
        parent = envelope.header.msg_id
        try:
            self.apply_fault(request.kind, request.target, dict(request.parameters))
        except (ValueError, TypeError, KeyError) as error:
            message = error.args[0] if error.args else str(error)
            self.reply(origin, ErrorReply("bad_fault", str(message)), parent_id=parent)
            return
        log.warning(
            "%s: fault %s %s %s", self.name, request.kind, request.target or "", request.parameters
        )
        self.reply(origin, FaultReply(self.name, self.describe_faults()), parent_id=parent)

    def apply_fault(self, kind: str, target: str | None, parameters: dict[str, Any]) -> None:
        """Classical-channel faults every process knows; subclasses add their own kinds."""
        if kind in ("cut", "restore"):
            if not target:
                raise ValueError(f"{kind} needs the peer whose fibre to {kind}")
            if kind == "cut":
                self.faults.cut_peers.add(target)
            else:
                self.faults.cut_peers.discard(target)
        elif kind == "classical":
            self.faults.set_classical(
                float(parameters.get("drop_fraction", 0.0)),
                float(parameters.get("extra_delay_s", 0.0)),
            )
        elif kind == "clear":
            self.faults.clear()
        else:
            raise ValueError(f"{self.role} {self.name!r} does not know the fault {kind!r}")

    def describe_faults(self) -> dict[str, Any]:
        return self.faults.describe()

    def stats(self) -> dict[str, Any]:
        """Figures for `qnemu status` and the live view; subclasses add theirs."""
        return {"emulated_now_s": self.clock.now()}
