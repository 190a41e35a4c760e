"""The payload schemas: generated docs are current, and schemas match what is sent."""

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from qnemu.control.payloads import EntangleRequestPayload, PairResponse, pair_payload
from qnemu.control.schema import BEGIN, END, TOPIC_SCHEMAS, json_schema, render_markdown
from qnemu.wire.control import EntangleOk

DOC = Path(__file__).resolve().parents[3] / "docs" / "mqtt-api.md"


def test_docs_hold_the_current_generated_schemas():
    text = DOC.read_text()
    generated = text[text.index(BEGIN) : text.index(END) + len(END)]
    assert generated == render_markdown(), (
        "docs/mqtt-api.md is stale: python -m qnemu.control.schema --write docs/mqtt-api.md"
    )


def test_every_documented_topic_has_an_object_schema():
    for topic, publisher, payload_type in TOPIC_SCHEMAS:
        schema = json_schema(payload_type, publisher)
        assert schema.get("type") == "object" or "oneOf" in schema, topic
        assert f"`qnemu/<network>/{topic}`" in DOC.read_text()


def test_responses_are_told_apart_by_kind():
    (response,) = [
        t for topic, _, t in TOPIC_SCHEMAS if topic == "<node>/response/<correlation_id>"
    ]
    schema = json_schema(response, "node")
    assert schema["discriminator"]["propertyName"] == "kind"
    kinds = {schema["$defs"][ref["$ref"].split("/")[-1]]["properties"]["kind"]["const"]
             for ref in schema["oneOf"]}  # fmt: skip
    assert kinds == {"pair", "done", "error", "freed", "keys", "fault", "app"}


def test_request_defaults_are_the_link_layer_ones_and_strict():
    request = EntangleRequestPayload(correlation_id="a", remote_node_id="bob")
    assert (request.number, request.minimum_fidelity, request.max_time_s) == (1, 0.0, 10.0)
    assert (request.type, request.basis) == ("keep", "random")
    for bad in ({"number": True}, {"minimum_fidelity": float("nan")}, {"max_time_s": "inf"}):
        with pytest.raises(ValidationError):
            EntangleRequestPayload(correlation_id="a", remote_node_id="bob", **bad)


def test_a_pair_from_the_link_layer_serialises_as_its_schema_says():
    ok = EntangleOk(3, 0, "alice", "carol", "psi-", float("nan"), 1.0, 1.5, 12,
                    outcomes=(0, 1), bases=("Z", "Z"), path=["alice", "bob", "carol"])  # fmt: skip
    body = json.loads(PairResponse(correlation_id="c", pair=pair_payload(ok)).model_dump_json())
    assert body["pair"]["fidelity"] is None
    assert body["pair"]["outcomes"] == [0, 1] and body["pair"]["qubits"] is None
    properties = json_schema(PairResponse, "node")["$defs"]["PairPayload"]["properties"]
    assert set(body["pair"]) == set(properties)
