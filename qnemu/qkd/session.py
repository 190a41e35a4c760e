"""BBM92 post-processing of one key block between Alice and Bob, as two sans-IO state machines.

Alice (the link's initiator) holds her outcome and basis for every pair of the block;
Bob holds his, looked up by (create_id, sequence_number). Each side turns the other's
message into its next message; an adapter carries them (`qnemu.node.qkd`):

    Alice                                   Bob
    sift_request (pairs, her bases)   →
                                      ←     sift_reply (his bases)          both sift
    estimate_request (sample, bits)   →                                      both count
                                      ←     estimate_reply (his bits)        sample errors
                                      ←     parity_request ... (Cascade, Bob asks)
    parity_reply ...                  →
                                      ←     verify_request (tag of his key)
    verify_reply (ok, ℓ, PA seed)     →                                      both hash to ℓ
                                      ←     key_stored (after his store committed)

A block whose sample QBER is above `qber_threshold` is aborted at both ends
(`aborted_qber`); a verification mismatch is `failed_verification`; a block that
leaves no secret bits after the finite-size bound is `no_secret_key`. No asyncio here.
"""

import hashlib
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

import numpy as np

from qnemu.qkd.cascade import CascadeAlice as _CascadeAlice
from qnemu.qkd.cascade import CascadeBob, CascadeParameters, ParityReply, ParityRequest
from qnemu.qkd.privacy import privacy_amplification, secret_key_length, verification_tag
from qnemu.qkd.sifting import QberEstimate, choose_sample, estimate_qber
from qnemu.wire.qkd import (
    QkdEstimateReply,
    QkdEstimateRequest,
    QkdParityReply,
    QkdParityRequest,
    QkdSiftReply,
    QkdSiftRequest,
    QkdVerifyReply,
    QkdVerifyRequest,
)

__all__ = [
    "BASIS_CODES",
    "NO_HALF",
    "AliceBlock",
    "BlockResult",
    "BobBlock",
    "QkdSettings",
    "basis_code",
    "bob_raw_bit",
]

BASIS_CODES = {"Z": 0, "X": 1}
NO_HALF = 255  # Bob's basis code for a pair he never measured
_SEED_LIMIT = 2**62


@dataclass(frozen=True)
class QkdSettings:
    """What both ends of a link agree on for BBM92 post-processing."""

    block_pairs: int = 32768  # measured pairs per block (about half survive sifting)
    sample_fraction: float = 0.2  # of the sifted bits, revealed to estimate the QBER
    qber_threshold: float = 0.11  # above it (sample QBER) the block is discarded
    epsilon_pe: float = 1e-10  # parameter estimation (Serfling bound)
    epsilon_pa: float = 1e-10  # privacy amplification (leftover hash lemma)
    cascade_passes: int = 4
    min_cascade_qber: float = 0.01  # Cascade's first block size when no error was seen
    verification_bits: int = 64
    min_sifted_bits: int = 256  # fewer: nothing to estimate from, the block is dropped

    def __post_init__(self) -> None:
        if self.block_pairs <= 0 or not 0.0 < self.sample_fraction < 1.0:
            raise ValueError("block_pairs must be positive and sample_fraction in (0, 1)")
        if not 0.0 < self.qber_threshold < 0.5:
            raise ValueError("qber_threshold must be in (0, 0.5)")


@dataclass(frozen=True)
class BlockResult:
    """How a block ended at one end, and its key when it made one."""

    block: str
    result: str  # ok | aborted_qber | failed_verification | no_secret_key | too_few_bits
    pairs: int
    sifted_bits: int = 0
    estimate: QberEstimate | None = None
    leaked_bits: int = 0
    key: bytes | None = None
    decoy: Any = None  # decoy-state blocks: their `DecoyEstimate` (qnemu.qkd.decoy_session)

    @property
    def key_bits(self) -> int:
        return 8 * len(self.key) if self.key else 0


def basis_code(basis: str) -> int:
    return BASIS_CODES[basis]


def bob_raw_bit(outcome: int, basis: str, bell_state: int) -> int:
    """Bob's bit made to agree with Alice's for a perfect pair of the heralded Bell state.

    BellState value = x<<1 | z: z = 1 (Ψ) anticorrelates Z outcomes, x = 1 (minus)
    anticorrelates X outcomes; Bob flips his outcome accordingly.
    """
    flip = (bell_state & 1) if basis == "Z" else (bell_state >> 1) & 1
    return int(outcome) ^ int(flip)


def _bits(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype=np.uint8)


def _indices(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype="<u4").astype(np.int64)


def _u32(values: np.ndarray) -> bytes:
    return np.asarray(values, dtype="<u4").tobytes()


def cascade_seed(block: str) -> int:
    """Public seed of the Cascade shuffles, from the block ID (both ends derive it)."""
    return int.from_bytes(hashlib.sha256(f"cascade/{block}".encode()).digest()[:8], "big") >> 2


def _estimate(
    alice: np.ndarray, bob: np.ndarray, remaining: int, settings: QkdSettings
) -> QberEstimate:
    return estimate_qber(alice, bob, remaining, settings.epsilon_pe)


def _cascade_parameters(block: str, size: int, estimate: QberEstimate, settings: QkdSettings):
    qber = min(max(estimate.qber, settings.min_cascade_qber), 0.45)
    return CascadeParameters(
        n_bits=size, qber=qber, seed=cascade_seed(block), passes=settings.cascade_passes
    )


def _final_length(kept: int, leaked: int, estimate: QberEstimate, settings: QkdSettings) -> int:
    length = secret_key_length(
        kept,
        leaked,
        estimate.qber_upper,
        verification_bits=settings.verification_bits,
        epsilon_pa=settings.epsilon_pa,
    )
    return length - length % 8  # the key store takes whole bytes


class AliceBlock:
    """Alice's side of one block: announces, samples, answers parities, decides ℓ."""

    def __init__(
        self,
        link: str,
        block: str,
        pairs: np.ndarray,
        bits: np.ndarray,
        bases: np.ndarray,
        settings: QkdSettings,
        rng: np.random.Generator,
    ):
        self.link, self.block, self.settings, self.rng = link, block, settings, rng
        self.pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
        self.bits = np.asarray(bits, dtype=np.uint8)
        self.bases = np.asarray(bases, dtype=np.uint8)
        self._sifted: np.ndarray | None = None
        self._kept: np.ndarray | None = None
        self.estimate: QberEstimate | None = None
        self._cascade: _CascadeAlice | None = None
        self.leaked_bits = 0
        self.result: BlockResult | None = None

    def sift_request(self) -> QkdSiftRequest:
        return QkdSiftRequest(self.link, self.block, _u32(self.pairs), self.bases.tobytes())

    def on_sift_reply(self, reply: QkdSiftReply) -> QkdEstimateRequest | BlockResult:
        bob_bases = _bits(reply.bases)
        if bob_bases.size != self.bases.size:
            raise ValueError(f"sift reply has {bob_bases.size} bases, block {self.bases.size}")
        sifted = np.flatnonzero(bob_bases == self.bases)
        if sifted.size < self.settings.min_sifted_bits:
            return self._end("too_few_bits", sifted_bits=int(sifted.size))
        self._sifted = sifted
        seed = int(self.rng.integers(0, _SEED_LIMIT))
        size = max(1, round(self.settings.sample_fraction * sifted.size))
        sample, self._kept = choose_sample(sifted.size, size, np.random.default_rng(seed))
        self._sample = sample
        alice_sample = self.bits[sifted[sample]]
        return QkdEstimateRequest(self.link, self.block, seed, size, alice_sample.tobytes())

    def on_estimate_reply(self, reply: QkdEstimateReply) -> BlockResult | None:
        """None: go on with Cascade (answer Bob's parity requests); else the block ended."""
        assert self._sifted is not None and self._kept is not None
        alice_sample = self.bits[self._sifted[self._sample]]
        estimate = _estimate(alice_sample, _bits(reply.sample_bits), self._kept.size, self.settings)
        self.estimate = estimate
        if estimate.qber > self.settings.qber_threshold:
            return self._end("aborted_qber")
        key = self.bits[self._sifted[self._kept]]
        parameters = _cascade_parameters(self.block, key.size, estimate, self.settings)
        self._key = key
        self._cascade = _CascadeAlice(key, parameters)
        return None

    def answer(self, request: QkdParityRequest) -> QkdParityReply:
        assert self._cascade is not None, "parity request before the estimate"
        question = ParityRequest(
            _indices(request.pass_index), _indices(request.start), _indices(request.end)
        )
        self.leaked_bits += len(question)
        reply = self._cascade.answer(question)
        return QkdParityReply(self.link, self.block, reply.parity.astype(np.uint8).tobytes())

    def on_verify_request(self, request: QkdVerifyRequest) -> tuple[QkdVerifyReply, BlockResult]:
        """Alice's verdict; the result's key is hers, to store once Bob has stored his."""
        assert self._cascade is not None and self.estimate is not None
        settings = self.settings
        mine = verification_tag(self._key, request.tag_seed, settings.verification_bits)
        verified = mine.tobytes() == request.key_tag
        if not verified:
            reply = QkdVerifyReply(self.link, self.block, False, 0, 0)
            return reply, self._end("failed_verification")
        length = self._key_length(self._key.size)
        seed = int(self.rng.integers(0, _SEED_LIMIT))
        reply = QkdVerifyReply(self.link, self.block, True, length, seed)
        if length <= 0:
            return reply, self._end("no_secret_key")
        key = privacy_amplification(self._key, length, seed)
        return reply, self._end("ok", key=np.packbits(key).tobytes())

    def _key_length(self, kept: int) -> int:
        """ℓ for a reconciled key of `kept` bits (the decoy-state block overrides it)."""
        assert self.estimate is not None
        return _final_length(kept, self.leaked_bits, self.estimate, self.settings)

    def _end(self, result: str, *, sifted_bits: int | None = None, key: bytes | None = None):
        sifted = self._sifted.size if self._sifted is not None else (sifted_bits or 0)
        self.result = BlockResult(
            self.block,
            result,
            int(self.pairs.shape[0]),
            int(sifted),
            self.estimate,
            self.leaked_bits,
            key,
        )
        return self.result


# (create_id, sequence_number) -> (raw bit, basis code), or None when Bob has no such half.
HalfLookup = Callable[[int, int], tuple[int, int] | None]


class BobBlock:
    """Bob's side of one block: answers the sift and estimate, drives Cascade, verifies."""

    def __init__(self, link: str, block: str, settings: QkdSettings, rng: np.random.Generator):
        self.link, self.block, self.settings, self.rng = link, block, settings, rng
        self.pairs = 0
        self._bits: np.ndarray | None = None
        self._sifted: np.ndarray | None = None
        self.estimate: QberEstimate | None = None
        self._exchange: Generator[ParityRequest, ParityReply, np.ndarray] | None = None
        self._corrected: np.ndarray | None = None
        self.leaked_bits = 0
        self.result: BlockResult | None = None

    def on_sift_request(self, request: QkdSiftRequest, lookup: HalfLookup) -> QkdSiftReply:
        pairs = _indices(request.pairs).reshape(-1, 2)
        alice_bases = _bits(request.bases)
        if alice_bases.size != pairs.shape[0]:
            raise ValueError("sift request: one basis per pair expected")
        self.pairs = int(pairs.shape[0])
        bits = np.zeros(self.pairs, dtype=np.uint8)
        bases = np.full(self.pairs, NO_HALF, dtype=np.uint8)
        for index, (create_id, sequence_number) in enumerate(pairs.tolist()):
            half = lookup(create_id, sequence_number)
            if half is not None:
                bits[index], bases[index] = half
        self._bits = bits
        self._sifted = np.flatnonzero(bases == alice_bases)
        return QkdSiftReply(self.link, self.block, bases.tobytes())

    def on_estimate_request(
        self, request: QkdEstimateRequest
    ) -> tuple[QkdEstimateReply, QkdParityRequest | QkdVerifyRequest | BlockResult]:
        """His sample bits for Alice, and then his first Cascade question (or the end)."""
        assert self._bits is not None and self._sifted is not None
        sifted = self._sifted
        if not 0 < request.sample_size < sifted.size:
            raise ValueError(f"sample of {request.sample_size} out of {sifted.size} sifted bits")
        rng = np.random.default_rng(request.sample_seed)
        sample, kept = choose_sample(sifted.size, request.sample_size, rng)
        mine = self._bits[sifted[sample]]
        reply = QkdEstimateReply(self.link, self.block, mine.tobytes())
        alice_sample = _bits(request.sample_bits)
        if alice_sample.size != mine.size:
            raise ValueError("estimate request: sample bits do not match the sample size")
        self.estimate = _estimate(alice_sample, mine, kept.size, self.settings)
        if self.estimate.qber > self.settings.qber_threshold:
            return reply, self._end("aborted_qber")
        key = self._bits[sifted[kept]]
        parameters = _cascade_parameters(self.block, key.size, self.estimate, self.settings)
        self._exchange = CascadeBob(key, parameters).protocol()
        return reply, self._next(next(self._exchange))

    def on_parity_reply(self, reply: QkdParityReply) -> QkdParityRequest | QkdVerifyRequest:
        assert self._exchange is not None, "parity reply before Cascade started"
        parity = _bits(reply.parity).copy()
        try:
            question = self._exchange.send(ParityReply(parity))
        except StopIteration as finished:
            return self._verify(finished.value)
        return self._next(question)

    def _next(self, question: ParityRequest) -> QkdParityRequest:
        self.leaked_bits += len(question)
        return QkdParityRequest(
            self.link,
            self.block,
            _u32(question.pass_index),
            _u32(question.start),
            _u32(question.end),
        )

    def _verify(self, corrected: np.ndarray) -> QkdVerifyRequest:
        self._corrected = corrected
        seed = int(self.rng.integers(0, _SEED_LIMIT))
        tag = verification_tag(corrected, seed, self.settings.verification_bits)
        return QkdVerifyRequest(self.link, self.block, seed, tag.tobytes())

    def on_verify_reply(self, reply: QkdVerifyReply) -> BlockResult:
        assert self._corrected is not None and self.estimate is not None
        if not reply.verified:
            return self._end("failed_verification")
        expected = self._key_length(self._corrected.size)
        if reply.key_bits != expected:  # both ends count the same leak: a mismatch is a bug
            raise ValueError(f"Alice's key length {reply.key_bits} differs from Bob's {expected}")
        if expected <= 0:
            return self._end("no_secret_key")
        key = privacy_amplification(self._corrected, expected, reply.pa_seed)
        return self._end("ok", key=np.packbits(key).tobytes())

    def _key_length(self, kept: int) -> int:
        """ℓ for a reconciled key of `kept` bits (the decoy-state block overrides it)."""
        assert self.estimate is not None
        return _final_length(kept, self.leaked_bits, self.estimate, self.settings)

    def _end(self, result: str, *, key: bytes | None = None) -> BlockResult:
        sifted = self._sifted.size if self._sifted is not None else 0
        self.result = BlockResult(
            self.block, result, self.pairs, int(sifted), self.estimate, self.leaked_bits, key
        )
        return self.result
