"""A node's QKD extension runs post-processing and relay only over the links that run QKD."""

from types import SimpleNamespace

import numpy as np
from prometheus_client import CollectorRegistry

from qnemu.node.qkd import QkdExtension
from qnemu.topology import parse_topology


def extension_at(name: str, topology) -> QkdExtension:
    node = SimpleNamespace(
        name=name,
        registry=CollectorRegistry(),
        handlers={},
        half_measured_listeners=[],
        rng=np.random.default_rng(1),
        clock=None,
    )
    return QkdExtension(node, topology, run_dir=None, seed=1)


def test_a_link_with_qkd_none_gets_no_session_and_key_is_relayed_around_it():
    topology = parse_topology(
        {
            "name": "triangle",
            "time_scale": 1.0,
            "nodes": {name: {"saes": [f"{name}_app"]} for name in ("a", "b", "c")},
            "links": [
                {"nodes": ["a", "b"], "model": "perfect", "qkd": "none"},
                {"nodes": ["a", "c"], "model": "perfect"},
                {"nodes": ["b", "c"], "model": "perfect", "qkd": "bbm92"},
            ],
        },
        "test",
    )
    alice = extension_at("a", topology)
    assert list(alice.links) == ["c"] and alice.links["c"].role == "alice"
    # b is a KME one fibre away, but the fibre makes no key: its keys come through c.
    assert alice.relay.relays_to("b") and alice.relay.route_to("b") == ("a", "c", "b")
    assert list(extension_at("b", topology).links) == ["c"]
