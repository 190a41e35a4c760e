"""The sans-IO MQTT request handler, driven with a fake node: every request is answered."""

import json
import math
from types import SimpleNamespace

import pytest

from qnemu.control.dispatch import MAX_REQUEST_BYTES, RequestDispatcher
from qnemu.wire.control import EntangleDone, EntangleErr, EntangleOk, EntangleRequest

BASE = "qnemu/lab/alice"


class FakeNode:
    """What the dispatcher uses of a NodeService, recorded."""

    name = "alice"

    def __init__(self, held=(0, 2, 4)):
        self.memory = SimpleNamespace(held=dict.fromkeys(held))
        self.clock = SimpleNamespace(now=lambda: 2.5)
        self.submitted: list[tuple[EntangleRequest, object]] = []
        self.released: list[list[int]] = []
        self.fail_submit = False

    def submit(self, request, sink):
        if self.fail_submit:
            raise RuntimeError("boom")
        self.submitted.append((request, sink))
        return object()

    async def release_qubits(self, qubits):
        self.released.append(list(qubits))
        for qubit in qubits:
            del self.memory.held[qubit]

    def stats(self):
        return {
            "memory": {"capacity": 8, "in_use": 3, "reserved": 0, "held": [0, 2, 4]},
            "links": {"bob": {"delivered": 0, "heralded": 0, "mean_fidelity": math.nan}},
            "active_requests": 1,
            "end_to_end": {"ratio": math.inf, "paths": ("a", "b")},
        }


@pytest.fixture
def node():
    return FakeNode()


@pytest.fixture
def sent():
    return []


@pytest.fixture
def dispatcher(node, sent):
    counted = []

    def publish(topic, payload, retain):
        # What goes on the wire: the payload must serialise to plain JSON.
        sent.append((topic, json.loads(payload.model_dump_json()), retain))

    dispatcher = RequestDispatcher(
        node,
        publish,
        network="lab",
        known_nodes={"alice", "bob", "carol"},
        wall_clock=lambda: 1000.0,
        count=lambda kind, result: counted.append((kind, result)),
    )
    dispatcher.counted = counted
    return dispatcher


def request(kind: str, **fields) -> tuple[str, bytes]:
    return f"{BASE}/request/{kind}", json.dumps(fields).encode()


def on(sent, suffix: str) -> list[dict]:
    return [body for topic, body, _ in sent if topic == f"{BASE}/{suffix}"]


def ok(sequence_number: int, **extra) -> EntangleOk:
    fields = {
        "create_id": 7,
        "sequence_number": sequence_number,
        "src": "alice",
        "dst": "bob",
        "bell_state": "phi+",
        "fidelity": 0.97,
        "created_at": 1.0,
        "delivered_at": 1.2,
        "attempts": 3,
    }
    return EntangleOk(**(fields | extra))


async def test_an_entangle_request_reaches_the_node_with_the_link_layer_names(
    dispatcher, node, sent
):
    await dispatcher.handle(
        *request(
            "entangle",
            correlation_id="c-1",
            remote_node_id="bob",
            number=2,
            minimum_fidelity=0.9,
            max_time_s=5,
            type="measure",
            basis="X",
            purify="bbpssw",
        )
    )
    (submitted, _sink) = node.submitted[0]
    assert submitted == EntangleRequest("bob", 2, 0.9, 5.0, "measure", "X", "bbpssw")
    assert sent == []  # nothing to say until the node reports
    assert dispatcher.open.keys() == {"c-1"}


async def test_pairs_then_done_go_to_the_response_topic_and_pairs_also_as_events(
    dispatcher, node, sent
):
    await dispatcher.handle(*request("entangle", correlation_id="c-1", remote_node_id="bob"))
    sink = node.submitted[0][1]
    sink.ok(ok(0, qubits=(0, 1)))
    sink.ok(ok(1, qubits=(2, 3)))
    sink.done(EntangleDone(7, 2))
    answers = on(sent, "response/c-1")
    assert [a["kind"] for a in answers] == ["pair", "pair", "done"]
    assert [a["final"] for a in answers] == [False, False, True]
    assert answers[0]["pair"]["qubits"] == [0, 1]
    assert answers[2] == {"kind": "done", "correlation_id": "c-1", "final": True,
                          "create_id": 7, "delivered": 2}  # fmt: skip
    events = on(sent, "event/pair_delivered")
    assert [e["pair"] for e in events] == [answers[0]["pair"], answers[1]["pair"]]
    assert events[0]["wall_time_s"] == 1000.0 and events[0]["emulated_time_s"] == 2.5
    assert dispatcher.open == {}
    assert ("entangle", "done") in dispatcher.counted


async def test_a_link_layer_error_is_final_and_told_as_request_failed(dispatcher, node, sent):
    await dispatcher.handle(*request("entangle", correlation_id="c-2", remote_node_id="bob"))
    sink = node.submitted[0][1]
    sink.err(EntangleErr(7, "TIMEOUT", "1 of 3 pairs within max_time_s 1", delivered=1))
    sink.ok(ok(5))  # anything after the final answer is dropped
    sink.done(EntangleDone(7, 1))
    (answer,) = on(sent, "response/c-2")
    assert answer["kind"] == "error" and answer["final"] is True
    assert (answer["error_code"], answer["delivered"], answer["create_id"]) == ("TIMEOUT", 1, 7)
    (event,) = on(sent, "event/request_failed")
    assert event["correlation_id"] == "c-2" and event["error_code"] == "TIMEOUT"
    assert dispatcher.open == {}


async def test_an_error_reported_during_submit_is_answered(dispatcher, node, sent):
    def refuse(request, sink):
        sink.err(EntangleErr(1, "NOTIME", "too good to be true"))

    node.submit = refuse
    await dispatcher.handle(
        *request("entangle", correlation_id="c-3", remote_node_id="bob", minimum_fidelity=1)
    )
    assert on(sent, "response/c-3")[0]["error_code"] == "NOTIME"
    assert dispatcher.open == {}


@pytest.mark.parametrize(
    ("fields", "code", "named"),
    [
        ({"number": 2}, "bad_request", "remote_node_id: Field required"),
        ({"remote_node_id": "bob", "number": -1}, "bad_request", "number"),
        ({"remote_node_id": "bob", "number": 1.5}, "bad_request", "number"),
        ({"remote_node_id": "bob", "number": "3"}, "bad_request", "number"),
        ({"remote_node_id": "bob", "minimum_fidelity": 1.2}, "bad_request", "minimum_fidelity"),
        ({"remote_node_id": "bob", "max_time_s": -1}, "bad_request", "max_time_s"),
        ({"remote_node_id": "bob", "type": "teleport"}, "bad_request", "type"),
        ({"remote_node_id": "bob", "basis": "W"}, "bad_request", "basis"),
        ({"remote_node_id": "bob", "colour": "red"}, "bad_request", "colour"),
        ({"remote_node_id": "bob", "number": 0, "max_time_s": 0}, "bad_request", "cancel"),
        ({"remote_node_id": "zoe"}, "unknown_node", "'zoe'"),
    ],
)
async def test_a_bad_entangle_request_gets_an_error_naming_the_problem(
    dispatcher, node, sent, fields, code, named
):
    await dispatcher.handle(*request("entangle", correlation_id="bad-1", **fields))
    (answer,) = on(sent, "response/bad-1")
    assert (answer["kind"], answer["error_code"]) == ("error", code)
    assert named in answer["message"]
    (event,) = on(sent, "event/request_rejected")
    assert event["correlation_id"] == "bad-1" and event["error_code"] == code
    assert node.submitted == [] and dispatcher.open == {}


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        (b"{nope", "bad_json"),
        (b"\xff\xfe", "bad_json"),
        (b"[1, 2]", "bad_request"),
        (b'{"remote_node_id": "bob"}', "bad_request"),  # no correlation id
        (b'{"correlation_id": "a/b", "remote_node_id": "bob"}', "bad_request"),
        (b'{"correlation_id": 12, "remote_node_id": "bob"}', "bad_request"),
        (b" " * (MAX_REQUEST_BYTES + 1), "too_large"),
    ],
)
async def test_a_request_without_a_usable_correlation_id_is_told_as_an_event(
    dispatcher, sent, payload, code
):
    await dispatcher.handle(f"{BASE}/request/entangle", payload)
    (topic, event, retain) = sent[0]
    assert len(sent) == 1 and topic == f"{BASE}/event/request_rejected" and not retain
    assert event["error_code"] == code and event["correlation_id"] is None
    assert event["request_kind"] == "entangle"


async def test_an_unknown_kind_and_a_duplicate_correlation_id_are_refused(dispatcher, sent):
    await dispatcher.handle(*request("teleport", correlation_id="k-1"))
    assert on(sent, "response/k-1")[0]["error_code"] == "unknown_kind"
    assert "entangle, free" in on(sent, "response/k-1")[0]["message"]
    await dispatcher.handle(*request("entangle", correlation_id="k-2", remote_node_id="bob"))
    await dispatcher.handle(*request("entangle", correlation_id="k-2", remote_node_id="bob"))
    assert on(sent, "response/k-2")[0]["error_code"] == "duplicate_correlation_id"


async def test_messages_for_other_nodes_or_sections_are_ignored(dispatcher, sent):
    await dispatcher.handle("qnemu/lab/bob/request/entangle", b"{}")
    await dispatcher.handle("qnemu/other/alice/request/entangle", b"{}")
    await dispatcher.handle(f"{BASE}/event/request_failed", b"{}")
    assert sent == []


async def test_a_node_failure_becomes_an_internal_error_not_a_crash(dispatcher, node, sent):
    node.fail_submit = True
    await dispatcher.handle(*request("entangle", correlation_id="i-1", remote_node_id="bob"))
    (answer,) = on(sent, "response/i-1")
    assert answer["error_code"] == "internal" and "boom" in answer["message"]


async def test_free_releases_what_the_node_holds_and_names_the_rest(dispatcher, node, sent):
    await dispatcher.handle(*request("free", correlation_id="f-1", qubits=[4, 0, 4, 9]))
    assert node.released == [[4, 0]]
    (answer,) = on(sent, "response/f-1")
    assert answer == {
        "kind": "freed",
        "correlation_id": "f-1",
        "final": True,
        "freed": 2,
        "not_held": [9],
    }
    assert dispatcher.open == {}


@pytest.mark.parametrize(
    "fields", [{}, {"qubits": []}, {"qubits": "all"}, {"qubits": [-1]}, {"qubits": [True]}]
)
async def test_a_bad_free_request_frees_nothing(dispatcher, node, sent, fields):
    await dispatcher.handle(*request("free", correlation_id="f-2", **fields))
    (answer,) = on(sent, "response/f-2")
    assert answer["error_code"] == "bad_request" and "qubits" in answer["message"]
    assert node.released == []


def test_state_is_plain_json_and_retained(dispatcher, sent):
    dispatcher.publish_state()
    ((topic, state, retain),) = sent
    assert topic == f"{BASE}/state" and retain is True
    assert state["status"] == "running" and state["network"] == "lab"
    assert state["memory"] == {"capacity": 8, "in_use": 3, "reserved": 0, "held": [0, 2, 4]}
    assert state["links"]["bob"]["mean_fidelity"] is None  # NaN is not JSON
    assert state["end_to_end"] == {"ratio": None, "paths": ["a", "b"]}
    assert state["active_requests"] == 1 and state["open_mqtt_requests"] == 0


def test_lifecycle_events_and_the_last_will(dispatcher, sent):
    dispatcher.publish_started(connection=2)
    dispatcher.publish_stopping()
    dispatcher.publish_state("stopped")
    assert on(sent, "event/node_started")[0]["connection"] == 2
    assert on(sent, "event/node_stopping")[0]["kind"] == "node_stopping"
    assert on(sent, "state")[0]["status"] == "stopped"
    will = json.loads(dispatcher.offline_state().model_dump_json())
    assert will["status"] == "offline" and will["node"] == "alice" and will["memory"] is None
