"""Node extension: the northbound MQTT control API (topics and payloads: docs/mqtt-api.md).

With `mqtt: {url: ...}` in the topology, each node connects to that MQTT broker (through
`qnemu.control.session.MqttSession`: back-off, outbox, last will), answers requests
through `qnemu.control.RequestDispatcher` and publishes its events and, every
STATE_INTERVAL_S, its retained state. Besides the requests' own events it watches:

- its links (`qnemu.node.linkwatch`): link_up / link_down, fault_applied / fault_cleared;
- its QKD blocks (the QKD extension's `block_listeners`): qber_alarm;
- its key pools (the key store): key_pool_low, with hysteresis.

A clean stop says `node_stopping` and leaves state "stopped"; a crash leaves the last
will, state "offline".
"""

import asyncio
import logging
from collections.abc import Awaitable
from typing import Any

from prometheus_client import Counter
from pydantic import BaseModel

from qnemu.control import session as mqtt_session
from qnemu.control.alarms import LowWaterAlarm
from qnemu.control.connection import BrokerAddress, ExponentialBackoff, parse_broker_url
from qnemu.control.dispatch import RequestDispatcher
from qnemu.control.payloads import (
    FaultAppliedEvent,
    FaultClearedEvent,
    KeyPoolLowEvent,
    LinkDownEvent,
    LinkUpEvent,
    QberAlarmEvent,
)
from qnemu.control.session import KEEPALIVE_S, MqttSession
from qnemu.node.apps import NodeApps
from qnemu.node.linkwatch import FaultChange, LinkChange, LinkWatch
from qnemu.node.mqtt_services import NodeFaults, NodeKeys
from qnemu.node.qkd import QkdExtension

__all__ = ["KEEPALIVE_S", "POOL_INTERVAL_S", "STATE_INTERVAL_S", "MqttControl", "extension"]

log = logging.getLogger(__name__)
STATE_INTERVAL_S = 1.0  # wall seconds between retained state messages
POOL_INTERVAL_S = 1.0  # wall seconds between looks at the key pools
DEFAULT_KEY_POOL_LOW_BITS = 4096


def extension(node: Any, topology: Any, plan: Any) -> "MqttControl | None":
    """The MQTT control of `node`, when the topology names an MQTT broker."""
    if topology.mqtt is None:
        return None
    if mqtt_session.aiomqtt is None:
        log.error(
            "%s: the topology asks for MQTT at %s but aiomqtt is not installed "
            "(pip install 'aiomqtt>=2.0'); running without MQTT control",
            node.name,
            topology.mqtt.url,
        )
        return None
    extensions = getattr(node, "extensions", ())
    qkd = next((e for e in extensions if isinstance(e, QkdExtension)), None)
    return MqttControl(
        node,
        parse_broker_url(topology.mqtt.url),
        network=topology.name,
        known_nodes=set(topology.nodes),
        keys=NodeKeys(qkd, topology) if qkd is not None and qkd.saes else None,
        faults=NodeFaults(node),
        apps=next((e for e in extensions if isinstance(e, NodeApps)), None),
        link_watch=LinkWatch(node) if getattr(node, "neighbours", None) else None,
        qkd=qkd,
        key_pool_low_bits=topology.mqtt.key_pool_low_bits,
    )


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
        keys: Any = None,
        faults: Any = None,
        apps: Any = None,
        link_watch: LinkWatch | None = None,
        qkd: Any = None,
        key_pool_low_bits: int = DEFAULT_KEY_POOL_LOW_BITS,
    ):
        self.node = node
        self.broker = broker
        self.link_watch = link_watch
        self.qkd = qkd
        self.key_pool_low_bits = key_pool_low_bits
        self.pool_alarms: dict[str, LowWaterAlarm] = {}
        self._running = False
        self._finished = asyncio.Event()
        self.m_requests = Counter(
            "qnemu_mqtt_requests",
            "MQTT requests by kind and result (accepted, done, ok, or an error code).",
            ["kind", "result"],
            registry=node.registry,
        )
        self.dispatcher = RequestDispatcher(
            node,
            self._publish,
            network=network,
            known_nodes=known_nodes,
            count=self._count,
            keys=keys,
            faults=faults,
            apps=apps,
            link_health=link_watch.stats if link_watch is not None else None,
        )
        self.topics = self.dispatcher.topics
        self.session = MqttSession(
            broker,
            name=node.name,
            client_id=f"qnemu-{network}-{node.name}",
            will=(self.topics.state, self.dispatcher.offline_state()),
            subscriptions=(self.topics.requests_filter,),
            on_message=self.dispatcher.handle,
            on_connect=self._connected,
            on_tick=self.dispatcher.publish_state,
            on_goodbye=self._goodbye,
            tick_s=state_interval_s,
            keepalive_s=keepalive_s,
            backoff=backoff,
            registry=node.registry,
        )
        if link_watch is not None:
            link_watch.link_listeners.append(self._on_link_change)
            link_watch.fault_listeners.append(self._on_fault_change)
            fault_listeners = getattr(node, "fault_listeners", None)
            if fault_listeners is not None:
                fault_listeners.append(link_watch.poke)
        if qkd is not None:
            qkd.block_listeners.append(self._on_block)

    @property
    def backoff(self) -> ExponentialBackoff:
        return self.session.backoff

    # ---- lifecycle -------------------------------------------------------------------

    async def run(self) -> None:
        """Stay connected and watch, until cancelled; never raises anything else."""
        self._running = True
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self.session.run())
                if self.link_watch is not None:
                    tasks.create_task(self._guarded("link watch", self.link_watch.run()))
                if self.qkd is not None and self.qkd.saes:
                    tasks.create_task(self._guarded("key pool watch", self._watch_pools()))
        finally:
            self._finished.set()

    async def stop(self) -> None:
        """Wait (briefly) until run() has said goodbye; the node cancels run() first."""
        if not self._running:
            return
        await self.session.stop()
        try:
            async with asyncio.timeout(1.0):
                await self._finished.wait()
        except TimeoutError:
            log.warning("%s: MQTT control did not finish in time", self.node.name)

    def stats(self) -> dict[str, Any]:
        """For `qnemu status`: what the link watch finds, if it runs."""
        if self.link_watch is None:
            return {}
        return {"link_health": self.link_watch.stats()}

    async def _guarded(self, what: str, work: Awaitable[None]) -> None:
        """A watcher's bug must not take the MQTT session down with it."""
        try:
            await work
        except Exception:
            log.exception("%s: MQTT %s failed; it stops", self.node.name, what)

    # ---- events ----------------------------------------------------------------------

    def _event(self, kind: str, model: type[BaseModel], **fields: Any) -> None:
        event = model(**self.dispatcher.event_fields(), **fields)
        self._publish(self.topics.event(kind), event, False)

    def _on_link_change(self, change: LinkChange) -> None:
        where = {"link": change.link, "peer": change.peer, "station": change.station}
        if change.up:
            self._event("link_up", LinkUpEvent, **where)
        else:
            self._event("link_down", LinkDownEvent, **where, reason=change.reason)

    def _on_fault_change(self, change: FaultChange) -> None:
        kind, model = (
            ("fault_applied", FaultAppliedEvent)
            if change.applied
            else ("fault_cleared", FaultClearedEvent)
        )
        self._event(
            kind,
            model,
            fault=change.fault,
            link=change.link,
            process=change.process,
            parameters=dict(change.parameters),
        )

    def _on_block(self, peer: str, link: str, result: Any) -> None:
        estimate = result.estimate
        threshold = self.qkd.settings.qber_threshold
        if estimate is None or estimate.qber <= threshold:
            return
        self._event(
            "qber_alarm",
            QberAlarmEvent,
            link=link,
            peer=peer,
            block=result.block,
            qber=float(estimate.qber),
            qber_upper=float(estimate.qber_upper),
            threshold=float(threshold),
            result=result.result,
        )

    async def _watch_pools(self) -> None:
        while True:
            await asyncio.sleep(POOL_INTERVAL_S)
            store = self.qkd.store
            if store is None:
                continue
            peers = sorted(set(self.qkd.links) | set(await asyncio.to_thread(store.peers)))
            for peer in peers:
                bits = await asyncio.to_thread(store.pool_bits, peer, offerable=True)
                alarm = self.pool_alarms.setdefault(
                    peer, LowWaterAlarm(self.key_pool_low_bits, 2 * self.key_pool_low_bits)
                )
                if alarm.observe(bits):
                    self._event(
                        "key_pool_low",
                        KeyPoolLowEvent,
                        peer=peer,
                        pool_bits=bits,
                        threshold_bits=alarm.threshold,
                        rearm_bits=alarm.rearm,
                    )

    # ---- what the session and dispatcher call ----------------------------------------

    def _connected(self, connection: int) -> None:
        self.dispatcher.publish_started(connection)
        self.dispatcher.publish_state()

    def _goodbye(self) -> None:
        self.dispatcher.publish_stopping()
        self.dispatcher.publish_state("stopped")

    def _publish(self, topic: str, payload: BaseModel, retain: bool) -> None:
        self.session.publish(topic, payload, retain)

    def _count(self, kind: str, result: str) -> None:
        self.m_requests.labels(kind=kind, result=result).inc()
