"""Northbound control over MQTT: what a control program and a node say to each other.

- `topics`:     topic names under `qnemu/<network>/<node>/...` (requests, responses,
                events, retained state), built and parsed in one place.
- `payloads`:   one pydantic model per JSON payload; their JSON Schemas are the API's
                documentation (`schema` renders them into docs/mqtt-api.md).
- `dispatch`:   the sans-IO request handler a node runs: topic and bytes in, payloads out
                (through a `publish` callback). It never touches a socket.
- `launcher_payloads`: the launcher's payloads (`qnemu/<network>/launcher/...`).
- `alarms`:     thresholds with hysteresis (key_pool_low).
- `connection`: the broker URL and the reconnect back-off.
- `session`:    the MQTT client itself (aiomqtt, the reconnect loop, the outbox), shared
                by the node extension (`qnemu.node.mqtt`) and the launcher
                (`qnemu.launch.mqtt`); the only module that imports aiomqtt.
"""

from qnemu.control.connection import BrokerAddress, ExponentialBackoff, parse_broker_url
from qnemu.control.dispatch import RequestDispatcher
from qnemu.control.topics import EVENT_KINDS, REQUEST_KINDS, NodeTopics

__all__ = [
    "EVENT_KINDS",
    "REQUEST_KINDS",
    "BrokerAddress",
    "ExponentialBackoff",
    "NodeTopics",
    "RequestDispatcher",
    "parse_broker_url",
]
