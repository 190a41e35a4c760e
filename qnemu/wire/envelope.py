"""The one envelope every qnemu message travels in, and its msgpack codec.

On the wire a message is a msgpack map::

    {"header": {"msg_id", "msg_type", "sender", "sent_at", "version"},
     "parent_id": <msg_id this answers, or nil>,
     "body": {...fields of the message's dataclass...}}

`sent_at` is the emulated time (seconds since the run epoch) at which the sender sent it.
Decoding validates everything and raises `WireError` with a short `reason` that
receivers use as the `reason` label of `qnemu_wire_rejected_messages_total`.
"""

import dataclasses
import functools
import itertools
import math
import os
from dataclasses import dataclass
from typing import Any

import msgpack
import numpy as np
from pydantic import ValidationError

from qnemu.wire.registry import body_adapter, message_class

__all__ = [
    "MAX_MESSAGE_BYTES",
    "PROTOCOL_VERSION",
    "Envelope",
    "Header",
    "WireError",
    "decode",
    "encode",
    "new_msg_id",
]

PROTOCOL_VERSION = 1
MAX_MESSAGE_BYTES = 4 * 1024 * 1024
_HEADER_KEYS = {"msg_id", "msg_type", "sender", "sent_at", "version"}
_ENVELOPE_KEYS = {"header", "parent_id", "body"}

# msg ids: a per-process random prefix and a counter: unique, cheap, and readable in logs.
_ID_PREFIX = os.urandom(4).hex()
_ID_COUNTER = itertools.count(1)


def new_msg_id() -> str:
    return f"{_ID_PREFIX}-{next(_ID_COUNTER)}"


class WireError(Exception):
    """A message that cannot be accepted; `reason` is a metric label, `header` what was readable."""

    def __init__(self, reason: str, message: str, header: dict | None = None):
        super().__init__(message)
        self.reason = reason
        self.header = header or {}


@dataclass(frozen=True, slots=True)
class Header:
    msg_id: str
    msg_type: str
    sender: str
    sent_at: float
    version: int = PROTOCOL_VERSION


@dataclass(frozen=True, slots=True)
class Envelope:
    header: Header
    parent_id: str | None
    body: Any  # an instance of the dataclass registered for header.msg_type


@functools.cache
def _field_names(cls: type) -> tuple[str, ...] | None:
    if not dataclasses.is_dataclass(cls):
        return None
    return tuple(f.name for f in dataclasses.fields(cls))


def _to_wire(value: Any) -> Any:
    """msgpack's hook for what it cannot pack itself: dataclasses become maps, numpy
    scalars plain numbers. (msgpack walks lists, tuples and dicts in C.)"""
    names = _field_names(type(value))
    if names is not None:
        return {name: getattr(value, name) for name in names}
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot put {type(value).__name__} on the wire")


_PACKER = msgpack.Packer(default=_to_wire, use_bin_type=True, autoreset=True)


def encode(
    body: Any,
    *,
    sender: str,
    sent_at: float,
    parent_id: str | None = None,
    msg_id: str | None = None,
) -> bytes:
    """Pack a message dataclass into one envelope."""
    msg_type = getattr(type(body), "msg_type", None)
    if msg_type is None:
        raise TypeError(f"{type(body).__name__} is not a registered wire message")
    envelope = {
        "header": {
            "msg_id": msg_id or new_msg_id(),
            "msg_type": msg_type,
            "sender": sender,
            "sent_at": float(sent_at),
            "version": PROTOCOL_VERSION,
        },
        "parent_id": parent_id,
        "body": body,
    }
    data = _PACKER.pack(envelope)
    if len(data) > MAX_MESSAGE_BYTES:
        raise WireError("oversized", f"message of {len(data)} bytes exceeds {MAX_MESSAGE_BYTES}")
    return data


def _refuse_extension(code: int, data: bytes) -> Any:
    raise ValueError(f"msgpack extension type {code} is not part of the protocol")


def _check_header(raw: Any) -> Header:
    if not isinstance(raw, dict) or set(raw) != _HEADER_KEYS:
        raise WireError("malformed", f"header must have exactly the keys {sorted(_HEADER_KEYS)}")
    msg_id, msg_type, sender = raw["msg_id"], raw["msg_type"], raw["sender"]
    sent_at, version = raw["sent_at"], raw["version"]
    for key, value in (("msg_id", msg_id), ("msg_type", msg_type), ("sender", sender)):
        if not isinstance(value, str) or not 0 < len(value) <= 200:
            raise WireError("malformed", f"header.{key} must be a non-empty string", raw)
    if (
        isinstance(sent_at, bool)
        or not isinstance(sent_at, int | float)
        or not math.isfinite(sent_at)
    ):
        raise WireError("malformed", "header.sent_at must be a finite number (emulated s)", raw)
    if version != PROTOCOL_VERSION:
        expected = f"expected {PROTOCOL_VERSION}"
        raise WireError("bad_version", f"protocol version {version!r}, {expected}", raw)
    return Header(msg_id, msg_type, sender, float(sent_at), version)


def decode(data: bytes) -> Envelope:
    """Unpack and validate one envelope; raise WireError on anything unexpected."""
    if len(data) > MAX_MESSAGE_BYTES:
        raise WireError("oversized", f"message of {len(data)} bytes exceeds {MAX_MESSAGE_BYTES}")
    try:
        raw = msgpack.unpackb(
            data, raw=False, strict_map_key=True, use_list=True, ext_hook=_refuse_extension
        )
    except Exception as error:  # msgpack raises several unrelated types for garbage
        raise WireError("malformed", f"not msgpack: {type(error).__name__}") from None
    if not isinstance(raw, dict) or set(raw) != _ENVELOPE_KEYS:
        raise WireError("malformed", "envelope must be a map with keys header, parent_id, body")
    header = _check_header(raw["header"])
    parent_id = raw["parent_id"]
    if parent_id is not None and not isinstance(parent_id, str):
        raise WireError("malformed", "parent_id must be a string or nil", raw["header"])
    cls = message_class(header.msg_type)
    if cls is None:
        raise WireError("unknown_type", f"unknown message type {header.msg_type!r}", raw["header"])
    if not isinstance(raw["body"], dict):
        raise WireError("bad_body", f"{header.msg_type}: body must be a map", raw["header"])
    try:
        body = body_adapter(cls).validate_python(raw["body"])
    except ValidationError as error:
        first = error.errors()[0]
        location = ".".join(str(part) for part in first["loc"]) or "body"
        raise WireError(
            "bad_body", f"{header.msg_type}: {location}: {first['msg']}", raw["header"]
        ) from None
    return Envelope(header, parent_id, body)
