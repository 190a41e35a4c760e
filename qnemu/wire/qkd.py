"""QKD messages between the two nodes of a link: BBM92 post-processing and KME reservations.

Every message here crosses the classical channel and is authenticated: `session` names
the sender's run of its QKD extension, `sequence_number` and `tag` are the HMAC of
`qnemu.qkd.auth` over the other fields (see `qnemu.node.qkd`); the post-processing
state machines (`qnemu.qkd.session`) build them with the three left at their defaults.
Bit arrays travel as bytes: one uint8 per bit or basis (0 = Z, 1 = X), indices as
little-endian uint32.

Alice (the initiator) → Bob: sift, estimate, parity answers, verify answer.
Bob → Alice: sift answer, estimate answer, parity questions (Cascade), verify, stored.
Key relay, hop by hop along a path of QKD links: `key_relay_request` to the next hop,
`key_relay_reply` back once the destination has stored the key (or why not).
"""

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import msgpack

from qnemu.wire.registry import Bool, Bytes, Int, Str, message

__all__ = [
    "AUTHENTICATION_FIELDS",
    "KeyRelayReply",
    "KeyRelayRequest",
    "KmeReserveReply",
    "KmeReserveRequest",
    "QkdBlockAbort",
    "QkdDecoyEstimateRequest",
    "QkdDecoyPulses",
    "QkdDecoySiftRequest",
    "QkdEstimateReply",
    "QkdEstimateRequest",
    "QkdKeyStored",
    "QkdParityReply",
    "QkdParityRequest",
    "QkdSiftReply",
    "QkdSiftRequest",
    "QkdVerifyReply",
    "QkdVerifyRequest",
    "authenticated_payload",
]

# Fields every message below ends with; the MAC covers all the others.
AUTHENTICATION_FIELDS = ("session", "sequence_number", "tag")


def authenticated_payload(body: Any) -> bytes:
    """What a message's tag covers: its type and every field but the authentication ones."""
    values = [
        getattr(body, f.name)
        for f in dataclasses.fields(body)
        if f.name not in AUTHENTICATION_FIELDS
    ]
    return msgpack.packb([body.msg_type, *values], use_bin_type=True)


@message("qkd_sift_request")
@dataclass(frozen=True, slots=True)
class QkdSiftRequest:
    """Alice → Bob: the pairs of one block (create_id, sequence_number) and her bases."""

    link: Str
    block: Str  # "<link>/<Alice's session>/<block number>", the same at both ends
    pairs: Bytes  # uint32 [create_id, sequence_number] per pair
    bases: Bytes  # uint8 per pair
    session: Str = ""
    sequence_number: Int = 0
    tag: Bytes = b""


@message("qkd_sift_reply")
@dataclass(frozen=True, slots=True)
class QkdSiftReply:
    """Bob → Alice: his basis per pair (255: he holds no such half)."""

    link: Str
    block: Str
    bases: Bytes
    session: Str = ""
    sequence_number: Int = 0
    tag: Bytes = b""


@message("qkd_estimate_request")
@dataclass(frozen=True, slots=True)
class QkdEstimateRequest:
    """Alice → Bob: the sample (drawn from `sample_seed`) and her bits there."""

    link: Str
    block: Str
    sample_seed: Int
    sample_size: Int
    sample_bits: Bytes
    session: Str = ""
    sequence_number: Int = 0
    tag: Bytes = b""


@message("qkd_estimate_reply")
@dataclass(frozen=True, slots=True)
class QkdEstimateReply:
    """Bob → Alice: his bits at the sample, so both count the same errors."""

    link: Str
    block: Str
    sample_bits: Bytes
    session: Str = ""
    sequence_number: Int = 0
    tag: Bytes = b""


@message("qkd_parity_request")
@dataclass(frozen=True, slots=True)
class QkdParityRequest:
    """Bob → Alice: Cascade asks the parities of ranges [start, end) of pass `pass_index`."""

    link: Str
    block: Str
    pass_index: Bytes  # uint32 per range
    start: Bytes
    end: Bytes
    session: Str = ""
    sequence_number: Int = 0
    tag: Bytes = b""


@message("qkd_parity_reply")
@dataclass(frozen=True, slots=True)
class QkdParityReply:
    link: Str
    block: Str
    parity: Bytes  # uint8 per range, in request order
    session: Str = ""
    sequence_number: Int = 0
    tag: Bytes = b""


@message("qkd_verify_request")
@dataclass(frozen=True, slots=True)
class QkdVerifyRequest:
    """Bob → Alice: Cascade is over; a universal-hash tag of his corrected key."""

    link: Str
    block: Str
    tag_seed: Int
    key_tag: Bytes
    session: Str = ""
    sequence_number: Int = 0
    tag: Bytes = b""


@message("qkd_verify_reply")
@dataclass(frozen=True, slots=True)
class QkdVerifyReply:
    """Alice → Bob: tags equal or not; the privacy-amplification seed and output length."""

    link: Str
    block: Str
    verified: Bool
    key_bits: Int
    pa_seed: Int
    session: Str = ""
    sequence_number: Int = 0
    tag: Bytes = b""


@message("qkd_key_stored")
@dataclass(frozen=True, slots=True)
class QkdKeyStored:
    """Bob → Alice: the block's key is committed in my key store; store yours."""

    link: Str
    block: Str
    session: Str = ""
    sequence_number: Int = 0
    tag: Bytes = b""


@message("qkd_block_abort")
@dataclass(frozen=True, slots=True)
class QkdBlockAbort:
    """Either end: this block is given up (timeout, missing halves, a bad message)."""

    link: Str
    block: Str
    reason: Str
    session: Str = ""
    sequence_number: Int = 0
    tag: Bytes = b""


# --- decoy-state BB84 (prepare and measure; see qnemu.qkd.decoy_session) ------------------


@message("qkd_decoy_pulses")
@dataclass(frozen=True, slots=True)
class QkdDecoyPulses:
    """Alice → Bob, standing in for the quantum channel: what Bob's detectors recorded.

    The emulation shortcut: Alice's side samples a whole block of pulses (which ones
    Bob detects, in which basis, with which bit) and sends Bob his own record, delayed
    by the fibre like the light itself. Alice's post-processing never reads Bob's bits.
    """

    link: Str
    block: Str
    pulses: Int  # pulses sent in the block (all classes)
    bases: Bytes  # Bob's basis per detection, uint8, in emission order
    bits: Bytes  # Bob's bit per detection
    session: Str = ""
    sequence_number: Int = 0
    tag: Bytes = b""


@message("qkd_decoy_sift_request")
@dataclass(frozen=True, slots=True)
class QkdDecoySiftRequest:
    """Alice → Bob: her basis per detection of the block (Bob answers `qkd_sift_reply`)."""

    link: Str
    block: Str
    bases: Bytes
    session: Str = ""
    sequence_number: Int = 0
    tag: Bytes = b""


@message("qkd_decoy_estimate_request")
@dataclass(frozen=True, slots=True)
class QkdDecoyEstimateRequest:
    """Alice → Bob: intensity classes, pulses per class and the bits to compare.

    `sample_bits`: her bits at a sample (drawn from `sample_seed`) of the sifted signal
    detections, then at every sifted decoy and vacuum detection (all revealed, in order).
    Bob answers `qkd_estimate_reply` with his bits at the same places.
    """

    link: Str
    block: Str
    pulses_per_class: list[Int]  # signal, decoy, vacuum
    classes: Bytes  # intensity class per detection (0 signal, 1 decoy, 2 vacuum)
    sample_seed: Int
    sample_size: Int
    sample_bits: Bytes
    session: Str = ""
    sequence_number: Int = 0
    tag: Bytes = b""


@message("kme_reserve_request")
@dataclass(frozen=True, slots=True)
class KmeReserveRequest:
    """Master's KME → slave's KME: commit these keys (`Reservation.to_dict()`)."""

    reservation: dict[str, Any] = field(default_factory=dict)
    session: Str = ""
    sequence_number: Int = 0
    tag: Bytes = b""


@message("kme_reserve_reply")
@dataclass(frozen=True, slots=True)
class KmeReserveReply:
    """Slave's KME → master's KME: committed (`ok`), or why not."""

    ok: Bool
    message: Str = ""
    session: Str = ""
    sequence_number: Int = 0
    tag: Bytes = b""


@message("key_relay_request")
@dataclass(frozen=True, slots=True)
class KeyRelayRequest:
    """One hop of a trusted-node relay: the end-to-end key under this hop's one-time pad.

    The pad is the sender's own key units shared with the receiver, bits `segments`
    ([unit_ID, first bit, bits] each, in order); the receiver consumes the same bits.
    """

    relay_id: Str  # "relay/<origin>><destination>/<uuid>", the same at every hop
    route: list[Str]  # origin, trusted nodes, destination
    segments: list[tuple[Str, Int, Int]]
    ciphertext: Bytes  # end-to-end key ⊕ pad, whole bytes
    session: Str = ""
    sequence_number: Int = 0
    tag: Bytes = b""


@message("key_relay_reply")
@dataclass(frozen=True, slots=True)
class KeyRelayReply:
    """Next hop → previous hop: the destination stored the relayed key (`ok`), or why not.

    Tagged without a sequence number (replies may overtake each other): the tag covers
    `relay_id`, and a reply is accepted once, for the relay its receiver is waiting on.
    """

    relay_id: Str
    ok: Bool
    message: Str = ""
    session: Str = ""
    sequence_number: Int = 0
    tag: Bytes = b""
