"""Authenticated classical messages for QKD post-processing: HMAC-SHA256 with sequence numbers.

Every post-processing message (bases, sample, parities, tags, seeds) must be
authenticated, or Eve can sit in the middle. We tag `sender, receiver, sequence
number, payload` with HMAC-SHA256 (RFC 2104) under a key derived by HKDF-SHA256
(RFC 5869) from a pre-shared seed or from bits of the key pool. The sender and
receiver names stop a message from being reflected back; the strictly increasing
sequence number stops replays. HMAC is computationally secure; an
information-theoretic Wegman–Carter MAC (Wegman, Carter, JCSS 22, 265 (1981))
would spend pool key on every message and is not done here.
"""

import hashlib
import hmac
import struct
from dataclasses import dataclass

import numpy as np

__all__ = [
    "TAG_BYTES",
    "AuthenticatedMessage",
    "AuthenticationError",
    "MessageAuthenticator",
    "derive_key",
    "key_from_bits",
    "mac_tag",
]

TAG_BYTES = hashlib.sha256().digest_size
_DOMAIN = b"qnemu-qkd-auth-v1"


class AuthenticationError(Exception):
    """A classical message failed authentication (bad tag, wrong direction or replay)."""


def derive_key(secret: bytes, context: bytes, length: int = 32, salt: bytes = b"") -> bytes:
    """HKDF-SHA256 (RFC 5869): a `length`-byte key for `context` from a shared secret."""
    if not secret:
        raise ValueError("secret must not be empty")
    if not 0 < length <= 255 * TAG_BYTES:
        raise ValueError("length out of range for HKDF-SHA256")
    pseudo_random_key = hmac.new(salt or bytes(TAG_BYTES), secret, hashlib.sha256).digest()
    output, block = b"", b""
    counter = 1
    while len(output) < length:
        block = hmac.new(
            pseudo_random_key, block + context + bytes([counter]), hashlib.sha256
        ).digest()
        output += block
        counter += 1
    return output[:length]


def key_from_bits(bits: np.ndarray) -> bytes:
    """Pack key-pool bits (0/1, a multiple of 8 long) into bytes, first bit most significant."""
    bits = np.asarray(bits, dtype=np.uint8)
    if bits.size == 0 or bits.size % 8:
        raise ValueError("need a non-empty multiple of 8 bits")
    return np.packbits(bits).tobytes()


def _field(value: bytes) -> bytes:
    return struct.pack(">I", len(value)) + value


def mac_tag(key: bytes, sender: str, receiver: str, sequence_number: int, payload: bytes) -> bytes:
    """HMAC-SHA256 over an unambiguous encoding of direction, sequence number and payload."""
    message = (
        _field(_DOMAIN)
        + _field(sender.encode())
        + _field(receiver.encode())
        + struct.pack(">Q", sequence_number)
        + _field(payload)
    )
    return hmac.new(key, message, hashlib.sha256).digest()


@dataclass(frozen=True)
class AuthenticatedMessage:
    """A payload with its sequence number and tag, as it crosses the classical channel."""

    sequence_number: int
    payload: bytes
    tag: bytes


class MessageAuthenticator:
    """One end of an authenticated classical channel between `local` and `remote`."""

    def __init__(self, key: bytes, local: str, remote: str) -> None:
        if len(key) < 16:
            raise ValueError("authentication key must be at least 128 bits")
        if local == remote:
            raise ValueError("local and remote names must differ")
        self._key = bytes(key)
        self.local, self.remote = local, remote
        self._next_send = 0
        self._last_received = -1

    def seal(self, payload: bytes) -> AuthenticatedMessage:
        sequence_number = self._next_send
        self._next_send += 1
        tag = mac_tag(self._key, self.local, self.remote, sequence_number, payload)
        return AuthenticatedMessage(sequence_number, bytes(payload), tag)

    def open(self, message: AuthenticatedMessage) -> bytes:
        """The payload if the tag is valid and the message is new; else AuthenticationError."""
        expected = mac_tag(
            self._key, self.remote, self.local, message.sequence_number, message.payload
        )
        if not hmac.compare_digest(expected, message.tag):
            raise AuthenticationError("tag does not verify")
        if message.sequence_number <= self._last_received:
            raise AuthenticationError(f"replayed message {message.sequence_number}")
        self._last_received = message.sequence_number
        return message.payload
