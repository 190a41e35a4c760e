"""Wire protocol: one msgpack envelope, one frozen dataclass per message type.

`encode(body, sender=..., sent_at=...)` packs; `decode(bytes)` unpacks and validates,
raising `WireError(reason, ...)` for anything malformed, unknown or oversized.
Importing this package registers every message type.
"""

from qnemu.wire import app, broker, common, control, link, network
from qnemu.wire.envelope import (
    MAX_MESSAGE_BYTES,
    PROTOCOL_VERSION,
    Envelope,
    Header,
    WireError,
    decode,
    encode,
    new_msg_id,
)
from qnemu.wire.registry import message_class, message_types

__all__ = [
    "MAX_MESSAGE_BYTES",
    "PROTOCOL_VERSION",
    "Envelope",
    "Header",
    "WireError",
    "app",
    "broker",
    "common",
    "control",
    "decode",
    "encode",
    "link",
    "message_class",
    "message_types",
    "network",
    "new_msg_id",
    "qkd",
]
