"""Fuzzing the decoder: whatever arrives, decode returns an Envelope or raises WireError."""

import dataclasses
import math
import types
import typing
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import msgpack
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from qnemu.wire import (
    PROTOCOL_VERSION,
    Envelope,
    WireError,
    decode,
    encode,
    message_class,
    message_types,
)

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
REASONS = {"malformed", "bad_version", "unknown_type", "bad_body", "oversized"}

# Everything msgpack can carry: the scalars, binary, application extension types and
# nested arrays and maps (the timestamp extension, type -1, is fuzzed byte-wise below).
plain_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
    | st.binary(max_size=20)
)
extensions = st.builds(msgpack.ExtType, st.integers(0, 127), st.binary(max_size=12))
keys = st.text(max_size=12) | st.sampled_from(["header", "body", "parent_id", "op", "qubits"])


def nested(leaves: st.SearchStrategy) -> st.SearchStrategy:
    return st.recursive(
        leaves,
        lambda kids: st.lists(kids, max_size=5) | st.dictionaries(keys, kids, max_size=5),
        max_leaves=25,
    )


structures = nested(plain_scalars | extensions)
plain_structures = nested(plain_scalars)


def decode_or_refuse(data: bytes) -> Envelope | None:
    """Decode; a refusal must be a WireError with a known reason (anything else fails)."""
    try:
        envelope = decode(data)
    except WireError as error:
        assert error.reason in REASONS, error.reason
        assert isinstance(error.header, dict)
        event(f"refused: {error.reason}")
        return None
    assert isinstance(envelope, Envelope)
    event("accepted")
    return envelope


def header(msg_type: str, **changes) -> dict:
    fields = {
        "msg_id": "fuzz-1",
        "msg_type": msg_type,
        "sender": "fuzzer",
        "sent_at": 1.0,
        "version": PROTOCOL_VERSION,
    }
    return fields | changes


@FUZZ
@given(st.binary(max_size=400))
def test_arbitrary_bytes_only_ever_raise_wire_error(data):
    decode_or_refuse(data)


@FUZZ
@given(structures)
def test_arbitrary_msgpack_structures_only_ever_raise_wire_error(value):
    data = msgpack.packb(value, use_bin_type=True)
    decode_or_refuse(data)
    decode_or_refuse(data[: len(data) // 2])  # and the same, cut short


@FUZZ
@given(
    msg_type=st.sampled_from(message_types()) | st.text(max_size=10),
    header_changes=st.dictionaries(
        st.sampled_from(["msg_id", "sender", "sent_at", "version"]), structures, max_size=2
    ),
    parent_id=st.none() | structures,
    body=structures,
)
def test_envelopes_with_fuzzed_headers_and_bodies(msg_type, header_changes, parent_id, body):
    raw = {"header": header(msg_type, **header_changes), "parent_id": parent_id, "body": body}
    decode_or_refuse(msgpack.packb(raw, use_bin_type=True))


@FUZZ
@given(payload=st.binary(max_size=16))
def test_timestamp_extensions_of_any_length_only_ever_raise_wire_error(payload):
    # ext 8 with type -1: a timestamp, which msgpack decodes itself and may refuse
    timestamp = b"\xc7" + bytes([len(payload)]) + b"\xff" + payload
    pack = msgpack.packb
    for slot in ("sent_at", "body"):
        fields = header("stats_reply")
        encoded_header = (
            pack(fields)
            if slot != "sent_at"
            else b"\x85" + b"".join(pack(k) + (timestamp if k == "sent_at" else pack(v))
                                     for k, v in fields.items())
        )  # fmt: skip
        body = b"\x83" + pack("name") + pack("a") + pack("role") + pack("node")
        body += pack("stats") + b"\x81" + pack("t") + timestamp
        data = b"\x83" + pack("header") + encoded_header + pack("parent_id") + pack(None)
        data += pack("body") + (body if slot == "body" else pack({}))
        decode_or_refuse(data)


def _field_values(msg_type: str) -> st.SearchStrategy[dict]:
    """Bodies with the message's own field names (so validation goes deep) and fuzzed values.

    Extension types are left out here: see test_extension_types_are_refused.
    """
    names = [field.name for field in dataclasses.fields(message_class(msg_type))]
    if not names:
        return st.dictionaries(keys, plain_structures, max_size=2)
    return st.fixed_dictionaries({}, optional={name: plain_structures for name in names})


def _finite_everywhere(value) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list | tuple):
        return all(_finite_everywhere(item) for item in value)
    if isinstance(value, dict):
        return all(_finite_everywhere(item) for item in value.values())
    return True


@FUZZ
@given(st.sampled_from(message_types()).flatmap(lambda t: st.tuples(st.just(t), _field_values(t))))
def test_a_body_decode_accepts_encodes_again_to_the_same_message(case):
    msg_type, body = case
    raw = {"header": header(msg_type), "parent_id": None, "body": body}
    envelope = decode_or_refuse(msgpack.packb(raw, use_bin_type=True))
    if envelope is None or not _finite_everywhere(body):
        return  # refused, or NaN (never equal to itself) somewhere in the body
    assert type(envelope.body) is message_class(msg_type)
    again = decode(encode(envelope.body, sender="fuzzer", sent_at=1.0))
    assert again.body == envelope.body


def test_fuzz_strategies_reach_every_reason():
    """The hand-picked corner of each refusal, so the fuzzers above are not vacuous."""
    examples = {
        "malformed": b"\xc1",
        "bad_version": msgpack.packb({"header": header("ping_request", version=9),
                                      "parent_id": None, "body": {}}),
        "unknown_type": msgpack.packb({"header": header("nope"), "parent_id": None, "body": {}}),
        "bad_body": msgpack.packb({"header": header("ping_request"), "parent_id": None,
                                   "body": {"x": 1}}),
    }  # fmt: skip
    for reason, data in examples.items():
        with pytest.raises(WireError) as caught:
            decode(data)
        assert caught.value.reason == reason


def test_extension_types_are_refused():
    raw = {"header": header("ops_reply"), "parent_id": None,
           "body": {"results": [msgpack.ExtType(5, b"x")]}}  # fmt: skip
    with pytest.raises(WireError) as caught:
        decode(msgpack.packb(raw, use_bin_type=True))
    assert caught.value.reason in ("malformed", "bad_body")


def strategy_for(annotation: Any) -> st.SearchStrategy:
    """Any value a field of this type may hold (the sender's view, before encoding)."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Annotated:
        return strategy_for(args[0])
    if annotation is Any:
        return plain_structures
    if annotation is type(None):
        return st.none()
    if origin is Literal:
        return st.sampled_from(args)
    if origin in (Union, types.UnionType):
        return st.one_of([strategy_for(arg) for arg in args])
    if origin is list:
        return st.lists(strategy_for(args[0]), max_size=4)
    if origin is tuple:
        return st.tuples(*(strategy_for(arg) for arg in args))
    if origin is dict:
        return st.dictionaries(st.text(max_size=8), strategy_for(args[1]), max_size=4)
    simple = {
        bool: st.booleans(),
        int: st.integers(-(2**63), 2**63 - 1),
        float: st.floats(allow_nan=False, allow_infinity=False),
        str: st.text(max_size=12),
        bytes: st.binary(max_size=32),
    }
    if annotation in simple:
        return simple[annotation]
    assert dataclasses.is_dataclass(annotation), f"no strategy for {annotation!r}"
    hints = typing.get_type_hints(annotation, include_extras=True)
    fields = {
        field.name: strategy_for(hints[field.name]) for field in dataclasses.fields(annotation)
    }
    return st.builds(annotation, **fields)


@FUZZ
@given(st.sampled_from(message_types()).flatmap(lambda t: strategy_for(message_class(t))))
def test_any_well_typed_message_survives_encode_decode_encode_byte_for_byte(body):
    # Compared as bytes, so NaN fields and tuple/list spellings compare as they travel.
    data = encode(body, sender="fuzzer", sent_at=0.5, msg_id="m-1", parent_id="p-1")
    envelope = decode(data)
    assert type(envelope.body) is type(body)
    assert (
        encode(envelope.body, sender="fuzzer", sent_at=0.5, msg_id="m-1", parent_id="p-1") == data
    )
