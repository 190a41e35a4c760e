"""QKD messages between the two nodes of a link: BBM92 post-processing and KME reservations.

Every message here crosses the classical channel and is authenticated: `session` names
the sender's run of its QKD extension, `sequence_number` and `tag` are the HMAC of
`qnemu.qkd.auth` over the other fields (see `qnemu.node.qkd`); the post-processing
state machines (`qnemu.qkd.session`) build them with the three left at their defaults.
Bit arrays travel as bytes: one uint8 per bit or basis (0 = Z, 1 = X), indices as
little-endian uint32.

Alice (the initiator) → Bob: sift, estimate, parity answers, verify answer.
Bob → Alice: sift answer, estimate answer, parity questions (Cascade), verify, stored.
"""

from dataclasses import dataclass, field
from typing import Any

from qnemu.wire.registry import Bool, Bytes, Int, Str, message

__all__ = [
    "AUTHENTICATION_FIELDS",
    "KmeReserveReply",
    "KmeReserveRequest",
    "QkdBlockAbort",
    "QkdEstimateReply",
    "QkdEstimateRequest",
    "QkdKeyStored",
    "QkdParityReply",
    "QkdParityRequest",
    "QkdSiftReply",
    "QkdSiftRequest",
    "QkdVerifyReply",
    "QkdVerifyRequest",
]

# Fields every message below ends with; the MAC covers all the others.
AUTHENTICATION_FIELDS = ("session", "sequence_number", "tag")


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
