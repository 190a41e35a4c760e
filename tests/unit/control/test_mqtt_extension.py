"""The node extension around the dispatcher: when it is built, its outbox, its lifecycle."""

import asyncio
import logging
import math
from types import SimpleNamespace

import pytest
from prometheus_client import CollectorRegistry

from qnemu.control import session
from qnemu.control.connection import BrokerAddress, ExponentialBackoff
from qnemu.control.payloads import NodeStoppingEvent
from qnemu.node import mqtt
from qnemu.topology import parse_topology

SPEC = {
    "name": "lab",
    "time_scale": 1.0,
    "nodes": {"alice": {}, "bob": {}},
    "links": [{"nodes": ["alice", "bob"], "model": "perfect"}],
}


class FakeNode:
    name = "alice"

    def __init__(self):
        self.registry = CollectorRegistry()
        self.memory = SimpleNamespace(held={})
        self.clock = SimpleNamespace(now=lambda: 0.0)

    def submit(self, request, sink):
        return None

    async def release_qubits(self, qubits):
        return None

    def stats(self):
        return {"memory": {"capacity": 2, "in_use": 0, "reserved": 0, "held": []},
                "links": {"bob": {"delivered": 0, "heralded": 0, "mean_fidelity": math.nan}},
                "active_requests": 0, "end_to_end": {}}  # fmt: skip


def control(**options) -> mqtt.MqttControl:
    return mqtt.MqttControl(FakeNode(), BrokerAddress("127.0.0.1", 1), network="lab", **options)


def test_no_mqtt_section_no_extension():
    assert mqtt.extension(FakeNode(), parse_topology(SPEC, origin="test"), None) is None


def test_an_mqtt_section_builds_the_control_of_that_node():
    topology = parse_topology(SPEC | {"mqtt": {"url": "mqtt://10.1.2.3:1999"}}, origin="test")
    if session.aiomqtt is None:
        pytest.skip("aiomqtt not installed")
    built = mqtt.extension(FakeNode(), topology, None)
    assert isinstance(built, mqtt.MqttControl)
    assert built.broker == BrokerAddress("10.1.2.3", 1999)
    assert built.topics.state == "qnemu/lab/alice/state"
    assert built.dispatcher.known_nodes == {"alice", "bob"}


def test_without_aiomqtt_the_node_runs_without_mqtt_and_says_why(monkeypatch, caplog):
    monkeypatch.setattr(session, "aiomqtt", None)
    topology = parse_topology(SPEC | {"mqtt": {"url": "mqtt://localhost"}}, origin="test")
    with caplog.at_level(logging.ERROR):
        assert mqtt.extension(FakeNode(), topology, None) is None
    assert "aiomqtt is not installed" in caplog.text


def test_the_outbox_is_bounded_and_counts_what_it_drops(monkeypatch):
    monkeypatch.setattr(session, "OUTBOX_LIMIT", 3)
    link = control()
    event = NodeStoppingEvent(network="lab", node="alice", wall_time_s=0, emulated_time_s=0)
    for _ in range(5):
        link._publish("t", event, False)
    assert len(link.session._outbox) == 3 and link.session.dropped == 2
    assert link.node.registry.get_sample_value("qnemu_mqtt_messages_dropped_total") == 2


async def test_stop_without_run_returns_at_once():
    await asyncio.wait_for(control().stop(), timeout=0.5)


class _Unreachable:
    """An aiomqtt stand-in whose broker never answers."""

    class MqttError(Exception):
        pass

    class Will:
        def __init__(self, *args, **kwargs):
            pass

    def __init__(self):
        self.attempts = 0
        outer = self

        class Client:
            def __init__(self, *args, **kwargs):
                pass

            async def __aenter__(self):
                outer.attempts += 1
                raise outer.MqttError("Connection refused")

            async def __aexit__(self, *exc):
                return False

        self.Client = Client


async def test_an_unreachable_broker_is_retried_with_back_off_until_cancelled(monkeypatch):
    fake = _Unreachable()
    monkeypatch.setattr(session, "aiomqtt", fake)
    link = control(backoff=ExponentialBackoff(0.01, 0.02, jitter=0.0))
    task = asyncio.create_task(link.run())
    await asyncio.sleep(0.2)
    assert not task.done()  # failures never end run()
    assert fake.attempts >= 5 and link.backoff.failures == fake.attempts
    task.cancel()
    await link.stop()
    assert task.cancelled()
    assert link.node.registry.get_sample_value("qnemu_mqtt_connected") == 0
