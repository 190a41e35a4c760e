"""The wire envelope: every message type round-trips, and bad input is refused by reason."""

import dataclasses
import math
import types
import typing
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import msgpack
import numpy as np
import pytest

from qnemu.wire import (
    MAX_MESSAGE_BYTES,
    PROTOCOL_VERSION,
    Envelope,
    Header,
    WireError,
    decode,
    encode,
    message_class,
    message_types,
    new_msg_id,
)
from qnemu.wire.broker import FreeOp, MeasureOp, OpsRequest
from qnemu.wire.common import PingReply, PingRequest, StatsReply
from qnemu.wire.control import EntangleOk, FreeRequest
from qnemu.wire.link import Herald, HeraldedPair

# --- building a valid instance of any message from its dataclass fields -------------------


def _union_members(annotation: Any) -> list[Any]:
    """The alternatives of a (possibly Annotated) union, None left out; else [annotation]."""
    if get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    if get_origin(annotation) in (Union, types.UnionType):
        return [member for member in get_args(annotation) if member is not type(None)]
    return [annotation]


def example_value(annotation: Any) -> Any:
    """A non-default value of this type; a list of a union holds one of every member."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Annotated:
        return example_value(args[0])
    if annotation is Any:
        return {"answer": [42, "text", 0.5, None]}
    if origin is Literal:
        return args[0]
    if origin in (Union, types.UnionType):
        return example_value(_union_members(annotation)[0])
    if origin is list:
        return [example_value(member) for member in _union_members(args[0])]
    if origin is tuple:
        return tuple(example_value(arg) for arg in args)
    if origin is dict:
        return {"answer": example_value(args[1])}
    if annotation is bool:
        return True
    if annotation is int:
        return 3
    if annotation is float:
        return 0.25
    if annotation is str:
        return "Z"
    if annotation is bytes:
        return bytes(range(16))
    if dataclasses.is_dataclass(annotation):
        return example_message(annotation)
    raise AssertionError(f"no example for field type {annotation!r}: extend example_value")


def example_message(cls: type, *, minimal: bool = False) -> Any:
    """An instance with every field set (or, if minimal, only the required ones)."""
    hints = typing.get_type_hints(cls, include_extras=True)
    kwargs = {}
    for field in dataclasses.fields(cls):
        has_default = (
            field.default is not dataclasses.MISSING
            or field.default_factory is not dataclasses.MISSING
        )
        if minimal and has_default:
            continue
        kwargs[field.name] = example_value(hints[field.name])
    return cls(**kwargs)


def packed(envelope: Any) -> bytes:
    return msgpack.packb(envelope, use_bin_type=True)


def valid_envelope(**changes: Any) -> dict[str, Any]:
    """A well-formed ping_reply as plain data, with top-level keys replaced by `changes`."""
    envelope = {
        "header": {
            "msg_id": "abc-1",
            "msg_type": "ping_reply",
            "sender": "delft",
            "sent_at": 1.5,
            "version": PROTOCOL_VERSION,
        },
        "parent_id": None,
        "body": {"name": "delft", "role": "node", "pid": 12, "ready": True, "emulated_now_s": 1.5},
    }
    envelope.update(changes)
    return envelope


def with_header(**changes: Any) -> dict[str, Any]:
    envelope = valid_envelope()
    envelope["header"] = {**envelope["header"], **changes}
    return envelope


def with_body(msg_type: str, body: Any) -> dict[str, Any]:
    envelope = with_header(msg_type=msg_type)
    envelope["body"] = body
    return envelope


def reason_of(data: bytes) -> str:
    with pytest.raises(WireError) as caught:
        decode(data)
    return caught.value.reason


# --- registry and round trips ---------------------------------------------------------------


def test_registry_holds_the_protocol_core_and_maps_names_to_classes():
    names = message_types()
    assert names == sorted(set(names))
    core = {
        "error_reply",
        "ping_request",
        "ping_reply",
        "stats_request",
        "stats_reply",
        "ops_request",
        "ops_reply",
        "entangle_request",
        "entangle_ok",
        "entangle_err",
        "entangle_done",
        "create_request",
        "herald",
    }
    assert core <= set(names)
    for name in names:
        cls = message_class(name)
        assert cls is not None and cls.msg_type == name
        assert dataclasses.is_dataclass(cls)
        assert cls.__dataclass_params__.frozen, f"{name} must be a frozen dataclass"
    assert message_class("no_such_type") is None


@pytest.mark.parametrize("minimal", [False, True], ids=["all-fields", "required-only"])
@pytest.mark.parametrize("msg_type", message_types())
def test_every_message_type_round_trips(msg_type, minimal):
    body = example_message(message_class(msg_type), minimal=minimal)
    data = encode(body, sender="station-a-b", sent_at=2.75, parent_id="p-9", msg_id="m-1")
    envelope = decode(data)
    assert isinstance(envelope, Envelope)
    assert envelope.header == Header("m-1", msg_type, "station-a-b", 2.75, PROTOCOL_VERSION)
    assert envelope.parent_id == "p-9"
    assert type(envelope.body) is type(body)
    assert envelope.body == body


def test_ops_request_round_trips_every_operation_in_order():
    body = example_message(OpsRequest)
    assert len({type(op) for op in body.ops}) == len(body.ops) >= 9  # one of each op
    decoded = decode(encode(body, sender="delft", sent_at=0.0)).body
    assert [type(op) for op in decoded.ops] == [type(op) for op in body.ops]
    assert decoded == body


def test_realistic_messages_round_trip_with_their_values():
    pair = HeraldedPair(
        sequence_number=7, qubit=10, peer_qubit=11, bell_state=1, created_at=0.5, attempts=42,
        fidelity=0.95,
    )  # fmt: skip
    ok = EntangleOk(
        create_id=1, sequence_number=7, src="delft", dst="hague", bell_state="psi+",
        fidelity=0.949, created_at=0.5, delivered_at=0.50005, attempts=42,
        outcomes=(0, 1), bases=("Z", "Z"),
    )  # fmt: skip
    ops = OpsRequest([MeasureOp(3, "X", readout_error=(0.01, 0.05)), FreeOp(4)])
    for body in (Herald("delft", 1, [pair, pair]), ok, ops):
        assert decode(encode(body, sender="delft", sent_at=1.0)).body == body


def test_header_defaults_and_numpy_scalars():
    first = decode(encode(PingRequest(), sender="cli", sent_at=np.float64(3.5)))
    second = decode(encode(PingRequest(), sender="cli", sent_at=3))
    assert first.header.msg_id != second.header.msg_id  # fresh ids
    assert first.parent_id is None
    assert first.header.sent_at == 3.5 and isinstance(second.header.sent_at, float)
    body = StatsReply("broker", "broker", {"qubits": np.int64(4), "load": np.float32(0.5)})
    assert decode(encode(body, sender="broker", sent_at=0.0)).body.stats == {
        "qubits": 4,
        "load": 0.5,
    }


def test_msg_ids_are_unique_strings():
    ids = [new_msg_id() for _ in range(1000)]
    assert len(set(ids)) == 1000 and all(isinstance(i, str) and i for i in ids)


def test_encode_refuses_what_is_not_a_registered_message():
    @dataclasses.dataclass(frozen=True)
    class NotAMessage:
        x: int = 1

    with pytest.raises(TypeError):
        encode(NotAMessage(), sender="a", sent_at=0.0)
    with pytest.raises(TypeError):
        encode(StatsReply("a", "node", {"bad": object()}), sender="a", sent_at=0.0)


# --- refusals and their reasons ---------------------------------------------------------------

GOOD = packed(valid_envelope())

MALFORMED = {
    "empty": b"",
    "reserved msgpack byte": b"\xc1",
    "text": b"hello, broker",
    "truncated": GOOD[:-3],
    "trailing bytes": GOOD + b"\x00",
    "list": packed([valid_envelope()["header"], None, {}]),
    "integer": packed(5),
    "string": packed("header"),
    "nil": packed(None),
    "map with int keys": packed({1: 2}),
    "no body": packed({k: v for k, v in valid_envelope().items() if k != "body"}),
    "no parent_id": packed({k: v for k, v in valid_envelope().items() if k != "parent_id"}),
    "extra envelope key": packed(valid_envelope(extra=1)),
    "header not a map": packed(valid_envelope(header=["abc-1", "ping_reply"])),
    "header missing sender": packed(
        valid_envelope(header={k: v for k, v in with_header()["header"].items() if k != "sender"})
    ),
    "header extra key": packed(with_header(priority=1)),
    "msg_id int": packed(with_header(msg_id=5)),
    "msg_id empty": packed(with_header(msg_id="")),
    "msg_type nil": packed(with_header(msg_type=None)),
    "sender too long": packed(with_header(sender="x" * 201)),
    "sender bytes": packed(with_header(sender=b"delft")),
    "sent_at string": packed(with_header(sent_at="1.5")),
    "sent_at bool": packed(with_header(sent_at=True)),
    "sent_at NaN": packed(with_header(sent_at=math.nan)),
    "parent_id int": packed(valid_envelope(parent_id=17)),
}


@pytest.mark.parametrize("data", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_input_is_refused_as_malformed(data):
    assert reason_of(data) == "malformed"


@pytest.mark.parametrize("version", [0, 2, PROTOCOL_VERSION + 100, "1", None, 1.5])
def test_other_protocol_versions_are_refused(version):
    assert reason_of(packed(with_header(version=version))) == "bad_version"


def test_unknown_type_is_refused_with_the_readable_header():
    with pytest.raises(WireError) as caught:
        decode(packed(with_header(msg_type="teleport_request", msg_id="q-77")))
    assert caught.value.reason == "unknown_type"
    assert "teleport_request" in str(caught.value)
    assert caught.value.header["msg_id"] == "q-77"  # so the receiver can answer it


BAD_BODIES = {
    "body a list": with_body("ping_reply", ["delft", "node", 12, True, 1.5]),
    "body nil": with_body("ping_reply", None),
    "int field given text": with_body("ping_reply", {**valid_envelope()["body"], "pid": "twelve"}),
    "str field given a list": with_body(
        "ping_reply", {**valid_envelope()["body"], "name": ["delft"]}
    ),
    "extra field": with_body("ping_reply", {**valid_envelope()["body"], "admin": True}),
    "missing field": with_body(
        "ping_reply", {k: v for k, v in valid_envelope()["body"].items() if k != "pid"}
    ),
    "body for a bodiless message": with_body("ping_request", {"x": 1}),
    "unknown operation": with_body("ops_request", {"ops": [{"op": "explode", "qubit": 1}]}),
    "operation with an extra field": with_body(
        "ops_request", {"ops": [{"op": "free", "qubit": 1, "force": True}]}
    ),
    "nested pair with a missing field": with_body(
        "herald", {"initiator": "delft", "create_id": 1, "pairs": [{"sequence_number": 0}]}
    ),
    "tuple of the wrong length": with_body(
        "ops_request", {"ops": [{"op": "bell_measure", "qubits": [1, 2, 3]}]}
    ),
}


@pytest.mark.parametrize("envelope", BAD_BODIES.values(), ids=BAD_BODIES.keys())
def test_bad_bodies_are_refused_as_bad_body(envelope):
    with pytest.raises(WireError) as caught:
        decode(packed(envelope))
    assert caught.value.reason == "bad_body"
    assert caught.value.header["msg_type"] == envelope["header"]["msg_type"]
    assert str(caught.value).startswith(envelope["header"]["msg_type"])


def test_a_wrong_body_type_error_names_the_field():
    envelope = with_body("ping_reply", {**valid_envelope()["body"], "pid": "twelve"})
    with pytest.raises(WireError, match="pid"):
        decode(packed(envelope))


def _stats_reply_of_size(size: int) -> bytes:
    """A valid stats_reply exactly `size` bytes long (a binary blob fills it up)."""
    blob_bytes = size - 200
    for _ in range(5):
        data = encode(
            StatsReply("broker", "broker", {"blob": bytes(blob_bytes)}),
            sender="broker",
            sent_at=0.0,
            msg_id="m-1",
        )
        if len(data) == size:
            return data
        blob_bytes += size - len(data)
    raise AssertionError("could not size the message")


def test_size_cap_is_inclusive_and_oversized_is_refused():
    at_cap = _stats_reply_of_size(MAX_MESSAGE_BYTES)
    assert len(decode(at_cap).body.stats["blob"]) > MAX_MESSAGE_BYTES - 200
    assert reason_of(at_cap + b"\x00") == "oversized"  # checked before unpacking
    assert reason_of(b"\x00" * (MAX_MESSAGE_BYTES + 1)) == "oversized"
    big = packed(with_body("free_request", {"qubits": list(range(MAX_MESSAGE_BYTES // 4))}))
    assert len(big) > MAX_MESSAGE_BYTES
    assert reason_of(big) == "oversized"


def test_encode_refuses_an_oversized_message():
    with pytest.raises(WireError) as caught:
        encode(FreeRequest(list(range(MAX_MESSAGE_BYTES // 4))), sender="a", sent_at=0.0)
    assert caught.value.reason == "oversized"


def test_free_op_body_validates_strictly_enough_to_refuse_a_float_handle():
    envelope = with_body("ops_request", {"ops": [{"op": "free", "qubit": 1.5}]})
    assert reason_of(packed(envelope)) == "bad_body"
    ok = decode(packed(with_body("ops_request", {"ops": [{"op": "free", "qubit": 1}]})))
    assert ok.body == OpsRequest([FreeOp(1)])


def test_ping_reply_decodes_to_its_dataclass():
    body = decode(GOOD).body
    assert body == PingReply("delft", "node", 12, True, 1.5)


# --- known gaps (bugs reported, not fixed here) ----------------------------------------------


@pytest.mark.parametrize(
    "field, value",
    [("pid", "12"), ("pid", True), ("ready", "yes"), ("emulated_now_s", "1.5"), ("name", b"d")],
)
def test_values_of_the_wrong_type_are_not_coerced(field, value):
    envelope = with_body("ping_reply", {**valid_envelope()["body"], field: value})
    assert reason_of(packed(envelope)) == "bad_body"


@pytest.mark.parametrize("sent_at", [math.inf, -math.inf])
def test_non_finite_sent_at_is_refused(sent_at):
    assert reason_of(packed(with_header(sent_at=sent_at))) == "malformed"
