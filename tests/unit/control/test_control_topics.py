"""Topic names of the MQTT API and the broker URL and back-off of its connection."""

import random

import pytest

from qnemu.control.connection import BrokerAddress, ExponentialBackoff, parse_broker_url
from qnemu.control.topics import (
    NodeTopics,
    ParsedTopic,
    network_events_filter,
    network_states_filter,
    parse_topic,
)


def test_node_topics():
    topics = NodeTopics("metro", "alice")
    assert topics.request("entangle") == "qnemu/metro/alice/request/entangle"
    assert topics.requests_filter == "qnemu/metro/alice/request/+"
    assert topics.response("c-1") == "qnemu/metro/alice/response/c-1"
    assert topics.event("pair_delivered") == "qnemu/metro/alice/event/pair_delivered"
    assert topics.state == "qnemu/metro/alice/state"
    assert network_events_filter("metro") == "qnemu/metro/+/event/+"
    assert network_states_filter("metro") == "qnemu/metro/+/state"


@pytest.mark.parametrize(
    ("topic", "parsed"),
    [
        ("qnemu/m/a/request/free", ParsedTopic("m", "a", "request", "free")),
        ("qnemu/m/a/response/x.1", ParsedTopic("m", "a", "response", "x.1")),
        ("qnemu/m/a/state", ParsedTopic("m", "a", "state", None)),
        ("qnemu/m/a/state/extra", None),
        ("qnemu/m/a/request/", None),
        ("qnemu/m/a/request/free/more", None),
        ("qnemu/m/a/metrics/x", None),
        ("other/m/a/request/free", None),
        ("qnemu/m", None),
    ],
)
def test_parse_topic(topic, parsed):
    assert parse_topic(topic) == parsed


@pytest.mark.parametrize(
    ("url", "address"),
    [
        ("mqtt://localhost", BrokerAddress("localhost", 1883)),
        ("mqtt://10.0.0.2:11883/", BrokerAddress("10.0.0.2", 11883)),
        ("mqtts://broker.example", BrokerAddress("broker.example", 8883, tls=True)),
    ],
)
def test_parse_broker_url(url, address):
    assert parse_broker_url(url) == address
    assert parse_broker_url(address.url) == address


@pytest.mark.parametrize(
    "url", ["http://host:1883", "mqtt://", "mqtt://host:99999", "mqtt://host/topic", "host"]
)
def test_parse_broker_url_refuses(url):
    with pytest.raises(ValueError, match="MQTT URL"):
        parse_broker_url(url)


def test_backoff_doubles_up_to_the_cap_and_resets():
    backoff = ExponentialBackoff(0.25, 2.0, jitter=0.0)
    assert [backoff.next_delay_s() for _ in range(6)] == [0.25, 0.5, 1.0, 2.0, 2.0, 2.0]
    backoff.reset()
    assert backoff.next_delay_s() == 0.25


def test_backoff_jitter_only_shortens_within_its_fraction():
    backoff = ExponentialBackoff(1.0, 1.0, jitter=0.2, rng=random.Random(3))
    delays = [backoff.next_delay_s() for _ in range(200)]
    assert all(0.8 <= d <= 1.0 for d in delays)
    assert max(delays) - min(delays) > 0.1  # it does spread the nodes out


@pytest.mark.parametrize(("initial_s", "max_s", "jitter"), [(0, 1, 0), (2, 1, 0), (1, 2, 1.0)])
def test_backoff_refuses_nonsense(initial_s, max_s, jitter):
    with pytest.raises(ValueError):
        ExponentialBackoff(initial_s, max_s, jitter=jitter)
