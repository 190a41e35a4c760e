"""One MQTT client that stays connected: the I/O shared by a node and the launcher.

It connects (with a last will), subscribes, hands every incoming message to a callback,
publishes what it is given through a bounded outbox, calls a tick callback at a fixed
interval while connected, and reconnects with exponential back-off when the broker goes
away. At a clean stop it says goodbye (a callback queues last words) and flushes. What
to say, and what a message means, is the caller's business (`qnemu.node.mqtt`,
`qnemu.launch.mqtt`); this is the only module of qnemu that imports aiomqtt.
"""

import asyncio
import logging
import ssl
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge
from pydantic import BaseModel

from qnemu.control.connection import BrokerAddress, ExponentialBackoff

try:
    import aiomqtt
except ImportError:  # an optional dependency: only topologies with `mqtt:` need it
    aiomqtt = None

__all__ = ["KEEPALIVE_S", "OUTBOX_LIMIT", "MqttSession", "aiomqtt"]

log = logging.getLogger(__name__)
KEEPALIVE_S = 5  # the broker publishes the last will about 1.5 × this after a crash
CONNECT_TIMEOUT_S = 10.0
GOODBYE_TIMEOUT_S = 2.0  # at a clean stop, to flush the outbox
OUTBOX_LIMIT = 10_000  # messages kept while the broker is away; more are dropped, counted


@dataclass(frozen=True, slots=True)
class _Outgoing:
    topic: str
    payload: bytes
    retain: bool


class MqttSession:
    """A client's connection to the MQTT broker, kept up until cancelled.

    Args:
        name: for log lines (the node's or the launcher's name).
        client_id: the MQTT client identifier.
        will: (topic, payload) the broker publishes, retained, if this client vanishes.
        subscriptions: topic filters subscribed at every (re)connection.
        on_message: awaited per incoming message with (topic, payload bytes); it must
            not raise (it runs in the session's task group).
        on_connect: called with the connection count after each (re)connection.
        on_tick: called every `tick_s` while connected (e.g. to refresh a state).
        on_goodbye: called at a clean stop, before the final flush.
    """

    def __init__(
        self,
        broker: BrokerAddress,
        *,
        name: str,
        client_id: str,
        will: tuple[str, BaseModel] | None = None,
        subscriptions: tuple[str, ...] = (),
        on_message: Callable[[str, bytes], Awaitable[None]] | None = None,
        on_connect: Callable[[int], None] | None = None,
        on_tick: Callable[[], None] | None = None,
        on_goodbye: Callable[[], None] | None = None,
        tick_s: float = 1.0,
        keepalive_s: int = KEEPALIVE_S,
        backoff: ExponentialBackoff | None = None,
        registry: CollectorRegistry | None = None,
    ):
        self.broker = broker
        self.name = name
        self.client_id = client_id
        self.will = will
        self.subscriptions = subscriptions
        self.on_message = on_message
        self.on_connect = on_connect or (lambda connection: None)
        self.on_tick = on_tick or (lambda: None)
        self.on_goodbye = on_goodbye or (lambda: None)
        self.tick_s = tick_s
        self.keepalive_s = keepalive_s
        self.backoff = backoff or ExponentialBackoff()
        self.connections = 0
        self.dropped = 0
        self._outbox: deque[_Outgoing] = deque()
        self._wakeup = asyncio.Event()
        self._started = False
        self._finished = asyncio.Event()
        self._init_metrics(registry or CollectorRegistry())

    def _init_metrics(self, registry: CollectorRegistry) -> None:
        self.m_connected = Gauge(
            "qnemu_mqtt_connected", "1 while connected to the MQTT broker.", registry=registry
        )
        self.m_connections = Counter(
            "qnemu_mqtt_connections",
            "Successful connections to the MQTT broker (more than one: reconnections).",
            registry=registry,
        )
        self.m_dropped = Counter(
            "qnemu_mqtt_messages_dropped",
            "Messages not published because the outbox was full while the broker was away.",
            registry=registry,
        )

    # ---- what callers use ------------------------------------------------------------

    def publish(self, topic: str, payload: BaseModel, retain: bool = False) -> None:
        """Queue a message; it goes out now, or after the next (re)connection."""
        if len(self._outbox) >= OUTBOX_LIMIT:
            if self.dropped == 0:
                log.warning("%s: MQTT outbox full; dropping messages", self.name)
            self.dropped += 1
            self.m_dropped.inc()
            return
        self._outbox.append(_Outgoing(topic, payload.model_dump_json().encode(), retain))
        self._wakeup.set()

    async def run(self) -> None:
        """Stay connected until cancelled; never raises anything else."""
        self._started = True
        try:
            while True:
                try:
                    await self._session()
                except* aiomqtt.MqttError as group:
                    error = group.exceptions[0]
                    log.warning("%s: MQTT broker %s: %s", self.name, self.broker.url, error)
                except* Exception:
                    log.exception("%s: MQTT session failed", self.name)
                delay_s = self.backoff.next_delay_s()
                log.info("%s: reconnecting to MQTT in %.2f s", self.name, delay_s)
                await asyncio.sleep(delay_s)
        finally:
            self._finished.set()

    async def stop(self) -> None:
        """Wait (briefly) until run() has said goodbye; the owner cancels run() first."""
        if not self._started:
            return
        try:
            async with asyncio.timeout(GOODBYE_TIMEOUT_S + 1.0):
                await self._finished.wait()
        except TimeoutError:
            log.warning("%s: MQTT session did not finish in time", self.name)

    # ---- one connection --------------------------------------------------------------

    async def _session(self) -> None:
        will = None
        if self.will is not None:
            topic, payload = self.will
            will = aiomqtt.Will(topic, payload.model_dump_json(), qos=1, retain=True)
        client = aiomqtt.Client(
            self.broker.host,
            self.broker.port,
            identifier=self.client_id,
            will=will,
            keepalive=self.keepalive_s,
            timeout=CONNECT_TIMEOUT_S,
            tls_context=ssl.create_default_context() if self.broker.tls else None,
        )
        async with client:
            self.backoff.reset()
            self.connections += 1
            self.m_connections.inc()
            self.m_connected.set(1)
            log.info("%s: connected to MQTT broker %s", self.name, self.broker.url)
            try:
                for topic_filter in self.subscriptions:
                    await client.subscribe(topic_filter, qos=1)
                self.on_connect(self.connections)
                async with asyncio.TaskGroup() as tasks:
                    tasks.create_task(self._publish_loop(client))
                    tasks.create_task(self._tick_loop())
                    async for message in client.messages:
                        if self.on_message is not None:
                            topic, payload = message.topic.value, _bytes(message.payload)
                            tasks.create_task(self.on_message(topic, payload))
            except asyncio.CancelledError:
                await self._goodbye(client)
                raise
            finally:
                self.m_connected.set(0)

    async def _publish_loop(self, client: Any) -> None:
        while True:
            while self._outbox:
                item = self._outbox[0]  # removed only once published: a lost one is retried
                await client.publish(item.topic, item.payload, qos=1, retain=item.retain)
                self._outbox.popleft()
            self._wakeup.clear()
            await self._wakeup.wait()

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(self.tick_s)
            self.on_tick()

    async def _goodbye(self, client: Any) -> None:
        """A clean stop: queue the last words, flush what is queued."""
        self.on_goodbye()
        try:
            async with asyncio.timeout(GOODBYE_TIMEOUT_S):
                while self._outbox:
                    item = self._outbox[0]
                    await client.publish(item.topic, item.payload, qos=1, retain=item.retain)
                    self._outbox.popleft()
        except (TimeoutError, aiomqtt.MqttError) as error:
            log.warning("%s: MQTT goodbye incomplete: %r", self.name, error)


def _bytes(payload: Any) -> bytes:
    if isinstance(payload, bytes | bytearray):
        return bytes(payload)
    if payload is None:
        return b""
    return str(payload).encode()
