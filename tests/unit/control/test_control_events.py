"""The plain state machines behind the new events, and the new requests' validation."""

import json
import random
from types import SimpleNamespace

import pytest
from pydantic import ValidationError

from qnemu.control.alarms import LowWaterAlarm
from qnemu.control.dispatch import RequestDispatcher, RequestFailed
from qnemu.control.payloads import FaultRequestPayload, KeyRequestPayload, KeysResponse
from qnemu.launch.mqtt import process_changes
from qnemu.node.linkwatch import LinkHealth, fault_changes, fault_items


def test_a_link_goes_down_on_a_cut_at_once_and_on_silence_after_two_misses():
    health = LinkHealth("a-b", "b", "s", misses_for_down=2)
    assert health.observe(cut=False, peer_answered=False, station_answered=True) is None
    down = health.observe(cut=False, peer_answered=False, station_answered=True)
    assert (down.up, down.reason) == (False, "peer_unreachable")
    assert health.observe(cut=False, peer_answered=False, station_answered=True) is None
    up = health.observe(cut=False, peer_answered=True, station_answered=True)
    assert up.up and up.reason is None
    cut = health.observe(cut=True, peer_answered=False, station_answered=False)
    assert cut.reason == "fibre_cut"
    # Not up while the station is still silent, even once the cut is mended.
    assert health.observe(cut=False, peer_answered=True, station_answered=False) is None
    assert health.observe(cut=False, peer_answered=True, station_answered=True).up


def test_faults_of_a_node_and_its_stations_are_diffed_into_applied_and_cleared():
    neighbours = {"b": SimpleNamespace(link_name="a-b", station="s")}
    quiet = {"cut_peers": [], "drop_fraction": 0.0, "extra_delay_s": 0.0}
    before = fault_items("a", quiet, neighbours, {"s": {"link_cut": False}})
    assert before == {}
    after = fault_items(
        "a",
        {**quiet, "cut_peers": ["s"], "drop_fraction": 0.5},
        neighbours,
        {"s": {"eavesdrop_fraction": 0.25, "link_changed": {"length_km": 3.0}}},
    )
    changes = {(c.applied, c.fault, c.link, c.process) for c in fault_changes(before, after)}
    assert changes == {
        (True, "cut", "a-b", "a"),
        (True, "classical", None, "a"),
        (True, "eavesdrop", "a-b", "s"),
        (True, "set_link", "a-b", "s"),
    }
    assert {c.fault for c in fault_changes(after, before)} == {"cut", "classical", "eavesdrop",
                                                               "set_link"}  # fmt: skip
    assert all(not c.applied for c in fault_changes(after, before))
    # A station that did not answer keeps its last known faults out of the diff.
    assert fault_changes(after, after) == []


def test_the_key_pool_alarm_needs_a_full_pool_first_and_does_not_flap():
    alarm = LowWaterAlarm(threshold=100, rearm=200)
    assert [alarm.observe(level) for level in (0, 50, 150)] == [False] * 3  # filling up
    assert [alarm.observe(level) for level in (250, 99, 50, 120, 90)] == [
        False, True, False, False, False,
    ]  # fmt: skip
    assert [alarm.observe(level) for level in (200, 10)] == [False, True]
    with pytest.raises(ValueError):
        LowWaterAlarm(threshold=0, rearm=1)


def test_process_changes_tell_exits_restarts_pauses_and_resumes():
    before = {"a": ("node", 10, "running"), "b": ("node", 11, "running"),
              "broker": ("broker", 12, "running")}  # fmt: skip
    after = {"a": ("node", 20, "running"), "b": ("node", 11, "exited"),
             "broker": ("broker", 12, "paused")}  # fmt: skip
    assert process_changes(before, after) == [
        ("process_exited", "a"),
        ("process_started", "a"),
        ("process_exited", "b"),
        ("process_paused", "broker"),
    ]
    assert process_changes(after, before)[-1] == ("process_resumed", "broker")
    assert process_changes({}, after) == []  # the first look is told by the state


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({}, "slave_sae_id or remote_node_id"),
        ({"slave_sae_id": "x", "remote_node_id": "b"}, "one"),
        ({"key_ids": ["k"], "slave_sae_id": "x"}, "no slave_sae_id"),
        ({"key_ids": ["k"]}, "master_sae_id or remote_node_id"),
        ({"remote_node_id": "b", "master_sae_id": "m"}, "master_sae_id goes with key_ids"),
        ({"remote_node_id": "b", "number": 0}, "number"),
    ],
)
def test_a_key_request_names_one_other_end(fields, named):
    with pytest.raises(ValidationError, match=named):
        KeyRequestPayload(correlation_id="c", **fields)


def test_a_fault_request_takes_only_its_own_fields():
    FaultRequestPayload(correlation_id="c", fault="clear")
    FaultRequestPayload(correlation_id="c", fault="eavesdrop", remote_node_id="b", fraction=0.3)
    for fields, named in (
        ({"fault": "cut"}, "remote_node_id"),
        ({"fault": "classical", "remote_node_id": "b"}, "does not take remote_node_id"),
        ({"fault": "set_link", "remote_node_id": "b"}, "link fields"),
        ({"fault": "classical", "drop_fraction": 2.0}, "drop_fraction"),
    ):
        with pytest.raises(ValidationError, match=named):
            FaultRequestPayload(correlation_id="c", **fields)


class _Node:
    name = "alice"

    def __init__(self):
        self.neighbours = {"bob": object()}
        self.memory = SimpleNamespace(held={})
        self.clock = SimpleNamespace(now=lambda: 1.0)

    def stats(self):
        return {}


class _Keys:
    async def keys(self, request):
        if request.key_ids:
            raise RequestFailed("bad_request", "key k was delivered already")
        return KeysResponse(correlation_id=request.correlation_id, master_sae_id="a",
                            slave_sae_id="b", keys=[])  # fmt: skip


class _Faults:
    async def apply(self, request):
        return {"alice": {"cut_peers": [request.remote_node_id]}}


async def test_key_and_fault_requests_are_answered_once_and_failures_told():
    sent = []
    dispatcher = RequestDispatcher(
        _Node(),
        lambda topic, payload, retain: sent.append((topic, json.loads(payload.model_dump_json()))),
        network="lab",
        keys=_Keys(),
        faults=_Faults(),
    )

    async def ask(target, kind: str, **fields) -> None:
        body = json.dumps(fields).encode()
        await target.handle(f"qnemu/lab/alice/request/{kind}", body)

    await ask(dispatcher, "key", correlation_id="k1", remote_node_id="bob")
    await ask(dispatcher, "key", correlation_id="k2", remote_node_id="bob", key_ids=["k"])
    await ask(dispatcher, "fault", correlation_id="f1", fault="cut", remote_node_id="bob")
    await ask(dispatcher, "fault", correlation_id="f2", fault="cut", remote_node_id="zoe")
    answers = {topic.rsplit("/", 1)[1]: body for topic, body in sent if "/response/" in topic}
    assert answers["k1"]["kind"] == "keys"
    assert answers["k2"]["error_code"] == "bad_request"
    assert answers["f1"]["kind"] == "fault"
    assert answers["f1"]["processes"] == {"alice": {"cut_peers": ["bob"]}}
    assert answers["f2"]["error_code"] == "unknown_node"
    failed = [body for topic, body in sent if topic.endswith("/event/request_failed")]
    assert [event["correlation_id"] for event in failed] == ["k2"]
    assert dispatcher.open == {}
    no_kme = RequestDispatcher(_Node(), lambda *a: sent.append(a), network="lab")
    await ask(no_kme, "key", correlation_id="k3", remote_node_id="bob")
    assert "no_kme" in sent[-1][1].model_dump_json()


class _Apps:
    def describe(self):
        return {"attached": False, "app": None, "qubits": []}

    async def force_detach(self):
        return 0


async def test_random_key_fault_and_app_requests_get_exactly_one_final_answer():
    """Fuzz: whatever the fields, each request with a usable correlation id is answered
    once, finally, and nothing raises out of the dispatcher."""
    rng = random.Random(5)
    values = [None, True, -1, 0, 1, 2.5, float("inf"), "", "bob", "zoe", "x" * 200, [], ["k"],
              {}, {"length_km": 1}, [1, "a"], "cut", "status", "detach", "classical"]  # fmt: skip
    names = ["remote_node_id", "fault", "action", "number", "size", "key_ids", "sae_id",
             "master_sae_id", "slave_sae_id", "link", "fraction", "drop_fraction",
             "extra_delay_s", "qubits", "colour"]  # fmt: skip
    sent = []
    node = _Node()

    async def release_qubits(qubits):
        return None

    node.release_qubits = release_qubits
    dispatcher = RequestDispatcher(
        node,
        lambda topic, payload, retain: sent.append((topic, json.loads(payload.model_dump_json()))),
        network="lab",
        keys=_Keys(),
        faults=_Faults(),
        apps=_Apps(),
    )
    for number in range(400):
        kind = rng.choice(["key", "fault", "app", "free", "teleport"])
        fields = {name: rng.choice(values) for name in rng.sample(names, rng.randint(0, 5))}
        body = json.dumps({"correlation_id": f"r{number}", **fields}).encode()
        await dispatcher.handle(f"qnemu/lab/alice/request/{kind}", body)
    answers: dict[str, list[dict]] = {}
    for topic, body in sent:
        if "/response/" in topic:
            answers.setdefault(topic.rsplit("/", 1)[1], []).append(body)
    assert set(answers) == {f"r{number}" for number in range(400)}
    assert all(len(bodies) == 1 and bodies[0]["final"] for bodies in answers.values())
    assert dispatcher.open == {}
