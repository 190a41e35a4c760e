"""Decoy-state BB84 post-processing of one block: the BBM92 state machines, re-fed.

What differs from BBM92 (`qnemu.qkd.session`) is only what comes before Cascade and
the key length; Cascade, verification and privacy amplification are inherited:

    Alice                                        Bob
    decoy_pulses (Bob's own record)        →     (the quantum channel, fibre-delayed)
    decoy_sift_request (her bases)         →
                                           ←     sift_reply (his bases)        both sift
    decoy_estimate_request (classes,       →                                   both count
      pulses per class, sample bits)
                                           ←     estimate_reply (his bits)
    ... Cascade, verify, privacy amplification, key_stored: as for BBM92 ...

Only sifted *signal* detections make key. A sample of them estimates the QBER (abort
above the threshold, and Cascade's block size); every sifted decoy and vacuum bit is
revealed, so both ends know the detections per class and the decoy errors. From these
counts both derive finite-size worst cases of the gains Q_μ, Q_ν, Y0 and of E_ν Q_ν,
each failing with probability ε_PE (`qnemu.qkd.decoy_finite`), and from those the
single-photon bounds Y1^L, e1^U (Ma, Qi, Zhao, Lo, PRA 72, 012326 (2005), eqs. 34–37).
The key length is GLLP's: ℓ = ⌊n1^L (1 − h(e_ph^U)) − leak − tag − 2 log2(1/ε_PA)⌋,
n1^L the single-photon bits among the n reconciled signal bits, e_ph^U their phase-error
rate, both bounded with ε_PE too.
No asyncio here.
"""

import dataclasses
from dataclasses import dataclass

import numpy as np

from qnemu.qkd.decoy_bb84 import DECOY, SIGNAL, VACUUM, DecoyBlock, SinglePhotonBounds
from qnemu.qkd.decoy_finite import FiniteDecoyBounds, decoy_key_length, finite_decoy_bounds
from qnemu.qkd.session import AliceBlock, BlockResult, BobBlock, QkdSettings, _bits
from qnemu.qkd.sifting import choose_sample
from qnemu.wire.qkd import (
    QkdDecoyEstimateRequest,
    QkdDecoyPulses,
    QkdDecoySiftRequest,
    QkdEstimateReply,
    QkdEstimateRequest,
    QkdSiftReply,
)

__all__ = ["DecoyAliceBlock", "DecoyBobBlock", "DecoyEstimate", "bob_record", "decoy_estimate"]

_SEED_LIMIT = 2**62
_CLASSES = 3


@dataclass(frozen=True)
class DecoyEstimate:
    """What both ends learn from the decoy statistics of a block."""

    gains: tuple[float, float, float]  # Q_μ, Q_ν, Y0 as measured (detections per pulse)
    decoy_qber: float  # E_ν as measured, on every sifted decoy bit
    finite: FiniteDecoyBounds  # worst-case gains within ε_PE each, and what they certify

    @property
    def bounds(self) -> SinglePhotonBounds:
        """Y1^L, e1^U, Q1^L (finite-size): what the key length rests on."""
        return self.finite.single_photon

    @property
    def single_photon_share(self) -> float:
        """Q1^L / Q_μ^U: the least expected fraction of signal detections with one photon."""
        return self.finite.single_photon_share


def decoy_estimate(
    pulses_per_class: np.ndarray,
    classes: np.ndarray,
    revealed_classes: np.ndarray,
    revealed_errors: np.ndarray,
    signal_intensity: float,
    decoy_intensity: float,
    epsilon_pe: float,
) -> DecoyEstimate:
    """Gains per class, the decoy QBER and the finite-size single-photon bounds (both ends).

    Args:
        pulses_per_class: pulses Alice sent of each class (SIGNAL, DECOY, VACUUM).
        classes: the intensity class of every detection of the block.
        revealed_classes, revealed_errors: class and error (0/1) of every revealed
            sifted decoy and vacuum bit.
        epsilon_pe: failure probability of each statistical bound.
    """
    pulses = np.asarray(pulses_per_class, dtype=np.int64)
    detections = np.bincount(classes, minlength=_CLASSES)
    gains = detections / np.maximum(pulses, 1)
    decoy = revealed_classes == DECOY
    decoy_qber = float(revealed_errors[decoy].mean()) if decoy.any() else 0.5
    finite = finite_decoy_bounds(
        pulses,
        detections,
        int(np.count_nonzero(revealed_errors[decoy])),
        signal_intensity,
        decoy_intensity,
        epsilon_pe,
    )
    return DecoyEstimate(
        (float(gains[SIGNAL]), float(gains[DECOY]), float(gains[VACUUM])), decoy_qber, finite
    )


def bob_record(link: str, block: str, sampled: DecoyBlock) -> QkdDecoyPulses:
    """The quantum channel's message: Bob's basis and bit per detection, nothing of Alice's."""
    return QkdDecoyPulses(
        link, block, int(sampled.n_pulses), sampled.bob_basis.tobytes(), sampled.bob_bit.tobytes()
    )


def _decoy_key_length(
    kept: int, leaked: int, estimate: DecoyEstimate, settings: QkdSettings
) -> int:
    length = decoy_key_length(
        kept,
        leaked,
        estimate.finite,
        verification_bits=settings.verification_bits,
        epsilon_pa=settings.epsilon_pa,
    )
    return length - length % 8  # the key store takes whole bytes


def _split(sifted: np.ndarray, classes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sifted signal detections, sifted decoy and vacuum detections), in order."""
    signal = classes[sifted] == SIGNAL
    return sifted[signal], sifted[~signal]


class _DecoyKey:
    """What both ends' decoy blocks change in the BBM92 block: the key length comes from
    the decoy estimate, and the block's result carries it."""

    decoy: DecoyEstimate | None

    def _key_length(self, kept: int) -> int:
        assert self.decoy is not None
        return _decoy_key_length(kept, self.leaked_bits, self.decoy, self.settings)

    def _end(self, result: str, **kwargs) -> BlockResult:
        ended = dataclasses.replace(super()._end(result, **kwargs), decoy=self.decoy)
        self.result = ended
        return ended


class DecoyAliceBlock(_DecoyKey, AliceBlock):
    """Alice's side of one decoy-state block: she sent the pulses and knows their classes."""

    def __init__(
        self,
        link: str,
        block: str,
        sampled: DecoyBlock,
        signal_intensity: float,
        decoy_intensity: float,
        settings: QkdSettings,
        rng: np.random.Generator,
    ):
        detections = sampled.n_detections
        super().__init__(
            link,
            block,
            np.broadcast_to(np.zeros(2, dtype=np.int64), (detections, 2)),  # no pair IDs here
            sampled.alice_bit,
            sampled.alice_basis,
            settings,
            rng,
        )
        self.sampled = sampled
        self.intensities = (signal_intensity, decoy_intensity)
        self.decoy: DecoyEstimate | None = None
        self._revealed: np.ndarray | None = None

    def quantum_channel(self) -> QkdDecoyPulses:
        return bob_record(self.link, self.block, self.sampled)

    def sift_request(self) -> QkdDecoySiftRequest:  # type: ignore[override]
        return QkdDecoySiftRequest(self.link, self.block, self.bases.tobytes())

    def on_sift_reply(self, reply: QkdSiftReply) -> QkdDecoyEstimateRequest | BlockResult:  # type: ignore[override]
        bob_bases = _bits(reply.bases)
        if bob_bases.size != self.bases.size:
            raise ValueError(f"sift reply has {bob_bases.size} bases, block {self.bases.size}")
        classes = self.sampled.intensity_class
        signal, revealed = _split(np.flatnonzero(bob_bases == self.bases), classes)
        if signal.size < self.settings.min_sifted_bits:
            return self._end("too_few_bits", sifted_bits=int(signal.size))
        self._sifted, self._revealed = signal, revealed
        seed = int(self.rng.integers(0, _SEED_LIMIT))
        size = max(1, round(self.settings.sample_fraction * signal.size))
        self._sample, self._kept = choose_sample(signal.size, size, np.random.default_rng(seed))
        shown = np.concatenate([self.bits[signal[self._sample]], self.bits[revealed]])
        return QkdDecoyEstimateRequest(
            self.link,
            self.block,
            [int(n) for n in self.sampled.pulses_per_class],
            classes.tobytes(),
            seed,
            size,
            shown.tobytes(),
        )

    def on_estimate_reply(self, reply: QkdEstimateReply) -> BlockResult | None:
        assert self._revealed is not None
        theirs = _bits(reply.sample_bits)
        size = self._sample.size
        if theirs.size != size + self._revealed.size:
            expected = size + self._revealed.size
            raise ValueError(f"estimate reply has {theirs.size} bits, expected {expected}")
        classes = self.sampled.intensity_class
        errors = (self.bits[self._revealed] != theirs[size:]).astype(np.uint8)
        self.decoy = decoy_estimate(
            self.sampled.pulses_per_class, classes, classes[self._revealed], errors,
            *self.intensities, self.settings.epsilon_pe,
        )  # fmt: skip
        signal_reply = dataclasses.replace(reply, sample_bits=theirs[:size].tobytes())
        return super().on_estimate_reply(signal_reply)


class DecoyBobBlock(_DecoyKey, BobBlock):
    """Bob's side of one decoy-state block: his detector record, then the BBM92 answers."""

    def __init__(
        self,
        link: str,
        block: str,
        record: QkdDecoyPulses,
        signal_intensity: float,
        decoy_intensity: float,
        settings: QkdSettings,
        rng: np.random.Generator,
    ):
        super().__init__(link, block, settings, rng)
        bases, bits = _bits(record.bases), _bits(record.bits)
        if bases.size != bits.size or record.pulses < bases.size:
            raise ValueError("decoy pulses: one basis and bit per detection, ≤ pulses")
        self.record_bases, self.record_bits = bases, bits
        self.intensities = (signal_intensity, decoy_intensity)
        self.decoy: DecoyEstimate | None = None
        self._all_sifted: np.ndarray | None = None

    def on_sift_request(self, request: QkdDecoySiftRequest) -> QkdSiftReply:  # type: ignore[override]
        alice_bases = _bits(request.bases)
        if alice_bases.size != self.record_bases.size:
            raise ValueError(
                f"sift request has {alice_bases.size} bases, Bob saw {self.record_bases.size}"
            )
        self.pairs = int(alice_bases.size)
        self._bits = self.record_bits
        self._all_sifted = np.flatnonzero(self.record_bases == alice_bases)
        return QkdSiftReply(self.link, self.block, self.record_bases.tobytes())

    def on_estimate_request(self, request: QkdDecoyEstimateRequest):  # type: ignore[override]
        """His bits for Alice (signal sample, then revealed), and his first Cascade step."""
        assert self._all_sifted is not None and self._bits is not None
        classes = _bits(request.classes)
        if classes.size != self.pairs or (classes.size and classes.max() > VACUUM):
            raise ValueError("decoy estimate: one class (0, 1 or 2) per detection expected")
        pulses = np.array(request.pulses_per_class, dtype=np.int64)
        if pulses.size != _CLASSES or np.any(pulses < np.bincount(classes, minlength=_CLASSES)):
            raise ValueError("decoy estimate: pulses of three classes, each ≥ its detections")
        signal, revealed = _split(self._all_sifted, classes)
        self._sifted = signal
        shown = _bits(request.sample_bits)
        size = request.sample_size
        if shown.size != size + revealed.size:
            raise ValueError("decoy estimate: sample bits do not match the sample and decoys")
        mine_revealed = self._bits[revealed]
        errors = (shown[size:] != mine_revealed).astype(np.uint8)
        self.decoy = decoy_estimate(
            pulses, classes, classes[revealed], errors,
            *self.intensities, self.settings.epsilon_pe,
        )  # fmt: skip
        signal_request = QkdEstimateRequest(
            self.link, self.block, request.sample_seed, size, shown[:size].tobytes()
        )
        reply, step = super().on_estimate_request(signal_request)
        mine = np.concatenate([_bits(reply.sample_bits), mine_revealed])
        return dataclasses.replace(reply, sample_bits=mine.tobytes()), step
