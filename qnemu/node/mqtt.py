"""Node extension: the northbound MQTT control API (topics and payloads: docs/mqtt-api.md).

With `mqtt: {url: ...}` in the topology, each node connects to that MQTT broker, answers
requests through `qnemu.control.RequestDispatcher`, publishes its events and, every
STATE_INTERVAL_S, its retained state; when the broker goes away it reconnects with
exponential back-off, keeping what it had to say in a bounded outbox meanwhile. A clean
stop says `node_stopping` and leaves state "stopped"; a crash leaves the last will,
state "offline".
"""

import asyncio
import logging
import ssl
from collections import deque
from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter, Gauge
from pydantic import BaseModel

from qnemu.control.connection import BrokerAddress, ExponentialBackoff, parse_broker_url
from qnemu.control.dispatch import RequestDispatcher

try:
    import aiomqtt
except ImportError:  # an optional dependency: only topologies with `mqtt:` need it
    aiomqtt = None

__all__ = ["KEEPALIVE_S", "STATE_INTERVAL_S", "MqttControl", "extension"]

log = logging.getLogger(__name__)
STATE_INTERVAL_S = 1.0  # wall seconds between retained state messages
KEEPALIVE_S = 5  # the broker publishes the last will about 1.5 × this after a crash
CONNECT_TIMEOUT_S = 10.0
GOODBYE_TIMEOUT_S = 2.0  # at a clean stop, to flush the outbox and say "stopped"
OUTBOX_LIMIT = 10_000  # messages kept while the broker is away; more are dropped, counted


def extension(node: Any, topology: Any, plan: Any) -> "MqttControl | None":
    """The MQTT control of `node`, when the topology names an MQTT broker."""
    if topology.mqtt is None:
        return None
    if aiomqtt is None:
        log.error(
            "%s: the topology asks for MQTT at %s but aiomqtt is not installed "
            "(pip install 'aiomqtt>=2.0'); running without MQTT control",
            node.name,
            topology.mqtt.url,
        )
        return None
    return MqttControl(
        node,
        parse_broker_url(topology.mqtt.url),
        network=topology.name,
        known_nodes=set(topology.nodes),
    )


@dataclass(frozen=True, slots=True)
class _Outgoing:
    topic: str
    payload: bytes
    retain: bool


class MqttControl:
    """A node's link to the MQTT broker: requests in; responses, events and state out."""

    def __init__(
        self,
        node: Any,
        broker: BrokerAddress,
        *,
        network: str,
        known_nodes: set[str] | None = None,
        state_interval_s: float = STATE_INTERVAL_S,
        keepalive_s: int = KEEPALIVE_S,
        backoff: ExponentialBackoff | None = None,
    ):
        self.node = node
        self.broker = broker
        self.state_interval_s = state_interval_s
        self.keepalive_s = keepalive_s
        self.backoff = backoff or ExponentialBackoff()
        self.dispatcher = RequestDispatcher(
            node, self._enqueue, network=network, known_nodes=known_nodes, count=self._count
        )
        self.topics = self.dispatcher.topics
        self.connections = 0
        self.dropped = 0
        self._outbox: deque[_Outgoing] = deque()
        self._wakeup = asyncio.Event()
        self._started = False
        self._finished = asyncio.Event()
        self._init_metrics(node.registry)

    def _init_metrics(self, registry: Any) -> None:
        self.m_connected = Gauge(
            "qnemu_mqtt_connected",
            "1 while the node is connected to the MQTT broker.",
            registry=registry,
        )
        self.m_connections = Counter(
            "qnemu_mqtt_connections",
            "Successful connections to the MQTT broker (more than one: reconnections).",
            registry=registry,
        )
        self.m_requests = Counter(
            "qnemu_mqtt_requests",
            "MQTT requests by kind and result (accepted, done, ok, or an error code).",
            ["kind", "result"],
            registry=registry,
        )
        self.m_dropped = Counter(
            "qnemu_mqtt_messages_dropped",
            "Messages not published because the outbox was full while the broker was away.",
            registry=registry,
        )

    # ---- lifecycle -------------------------------------------------------------------

    async def run(self) -> None:
        """Stay connected until cancelled; never raises anything else."""
        self._started = True
        try:
            while True:
                try:
                    await self._session()
                except* aiomqtt.MqttError as group:
                    error = group.exceptions[0]
                    log.warning("%s: MQTT broker %s: %s", self.node.name, self.broker.url, error)
                except* Exception:
                    log.exception("%s: MQTT control failed", self.node.name)
                delay_s = self.backoff.next_delay_s()
                log.info("%s: reconnecting to MQTT in %.2f s", self.node.name, delay_s)
                await asyncio.sleep(delay_s)
        finally:
            self._finished.set()

    async def stop(self) -> None:
        """Wait (briefly) until run() has said goodbye; the node cancels run() first."""
        if not self._started:
            return
        try:
            async with asyncio.timeout(GOODBYE_TIMEOUT_S + 1.0):
                await self._finished.wait()
        except TimeoutError:
            log.warning("%s: MQTT control did not finish in time", self.node.name)

    # ---- one connection --------------------------------------------------------------

    async def _session(self) -> None:
        will = aiomqtt.Will(
            self.topics.state,
            self.dispatcher.offline_state().model_dump_json(),
            qos=1,
            retain=True,
        )
        client = aiomqtt.Client(
            self.broker.host,
            self.broker.port,
            identifier=f"qnemu-{self.dispatcher.network}-{self.node.name}",
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
            log.info("%s: connected to MQTT broker %s", self.node.name, self.broker.url)
            try:
                await client.subscribe(self.topics.requests_filter, qos=1)
                self.dispatcher.publish_started(self.connections)
                self.dispatcher.publish_state()
                async with asyncio.TaskGroup() as tasks:
                    tasks.create_task(self._publish_loop(client))
                    tasks.create_task(self._state_loop())
                    async for message in client.messages:
                        tasks.create_task(
                            self.dispatcher.handle(message.topic.value, _bytes(message.payload))
                        )
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

    async def _state_loop(self) -> None:
        while True:
            await asyncio.sleep(self.state_interval_s)
            self.dispatcher.publish_state()

    async def _goodbye(self, client: Any) -> None:
        """A clean stop: flush what is queued, say node_stopping, leave state "stopped"."""
        self.dispatcher.publish_stopping()
        self.dispatcher.publish_state("stopped")
        try:
            async with asyncio.timeout(GOODBYE_TIMEOUT_S):
                while self._outbox:
                    item = self._outbox[0]
                    await client.publish(item.topic, item.payload, qos=1, retain=item.retain)
                    self._outbox.popleft()
        except (TimeoutError, aiomqtt.MqttError) as error:
            log.warning("%s: MQTT goodbye incomplete: %r", self.node.name, error)

    # ---- what the dispatcher calls ---------------------------------------------------

    def _enqueue(self, topic: str, payload: BaseModel, retain: bool) -> None:
        if len(self._outbox) >= OUTBOX_LIMIT:
            if self.dropped == 0:
                log.warning("%s: MQTT outbox full; dropping messages", self.node.name)
            self.dropped += 1
            self.m_dropped.inc()
            return
        self._outbox.append(_Outgoing(topic, payload.model_dump_json().encode(), retain))
        self._wakeup.set()

    def _count(self, kind: str, result: str) -> None:
        self.m_requests.labels(kind=kind, result=result).inc()


def _bytes(payload: Any) -> bytes:
    if isinstance(payload, bytes | bytearray):
        return bytes(payload)
    if payload is None:
        return b""
    return str(payload).encode()
