"""Authenticated classical messages: accepted when genuine, rejected when tampered or replayed."""

import dataclasses
import hashlib
import hmac

import numpy as np
import pytest

from qnemu.qkd.auth import (
    TAG_BYTES,
    AuthenticatedMessage,
    AuthenticationError,
    MessageAuthenticator,
    derive_key,
    key_from_bits,
)


def _pair(key: bytes = b"k" * 32):
    return MessageAuthenticator(key, "alice", "bob"), MessageAuthenticator(key, "bob", "alice")


def test_genuine_messages_are_accepted_in_both_directions():
    alice, bob = _pair()
    for payload in (b"bases", b"", b"\x00" * 1000):
        assert bob.open(alice.seal(payload)) == payload
    assert alice.open(bob.seal(b"reply")) == b"reply"


@pytest.mark.parametrize(
    "tamper",
    [
        lambda m: dataclasses.replace(m, payload=m.payload + b"!"),
        lambda m: dataclasses.replace(m, payload=bytes([m.payload[0] ^ 1]) + m.payload[1:]),
        lambda m: dataclasses.replace(m, sequence_number=m.sequence_number + 1),
        lambda m: dataclasses.replace(m, tag=bytes([m.tag[0] ^ 0x80]) + m.tag[1:]),
        lambda m: dataclasses.replace(m, tag=m.tag[:-1]),
    ],
)
def test_tampered_messages_are_rejected(tamper):
    alice, bob = _pair()
    with pytest.raises(AuthenticationError):
        bob.open(tamper(alice.seal(b"parities 0110")))


def test_replay_reflection_and_wrong_key_are_rejected():
    alice, bob = _pair()
    first = alice.seal(b"one")
    assert bob.open(first) == b"one"
    with pytest.raises(AuthenticationError):
        bob.open(first)  # replay
    with pytest.raises(AuthenticationError):
        alice.open(alice.seal(b"mine"))  # reflected back to its sender
    stranger = MessageAuthenticator(b"x" * 32, "alice", "bob")
    with pytest.raises(AuthenticationError):
        bob.open(stranger.seal(b"forged"))


def test_tag_is_hmac_sha256():
    alice, _ = _pair(b"s" * 32)
    message = alice.seal(b"hello")
    assert isinstance(message, AuthenticatedMessage) and len(message.tag) == TAG_BYTES == 32
    assert message.tag != hmac.new(b"s" * 32, b"hello", hashlib.sha256).digest()  # domain-separated


def test_hkdf_matches_rfc5869_test_case_1():
    ikm = bytes.fromhex("0b" * 22)
    salt = bytes.fromhex("000102030405060708090a0b0c")
    info = bytes.fromhex("f0f1f2f3f4f5f6f7f8f9")
    okm = derive_key(ikm, info, length=42, salt=salt)
    assert okm.hex() == (
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
    )
    assert derive_key(b"seed", b"link-a-b") != derive_key(b"seed", b"link-a-c")


def test_key_from_pool_bits():
    bits = np.array([1, 0, 0, 0, 0, 0, 0, 1] * 16, dtype=np.uint8)
    assert key_from_bits(bits) == b"\x81" * 16
    with pytest.raises(ValueError):
        key_from_bits(bits[:7])
    with pytest.raises(ValueError):
        MessageAuthenticator(b"short", "a", "b")
