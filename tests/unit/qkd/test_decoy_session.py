"""Decoy-state BB84 post-processing of one sampled block, both ends in one process.

Fixed seeds; physics checked against the closed forms of `qnemu.qkd.decoy_bb84` within
binomial bounds (6σ), the key length against the finite-size GLLP formula written out
here (the bounds themselves: tests/unit/qkd/test_decoy_finite.py).
"""

import dataclasses
import math

import numpy as np
import pytest

from qnemu.qkd.decoy_bb84 import (
    DECOY,
    SIGNAL,
    VACUUM,
    DecoyBB84Params,
    gain,
    qber,
    sample_block,
    single_photon_error,
    single_photon_yield,
)
from qnemu.qkd.decoy_session import DecoyAliceBlock, DecoyBobBlock
from qnemu.qkd.entropy import binary_entropy
from qnemu.qkd.session import BlockResult, QkdSettings
from qnemu.wire.qkd import QkdParityRequest

SIGMAS = 6.0
PARAMS = DecoyBB84Params(length_km=25.0)
PULSES = 50_000_000  # about 2.6e5 detections at 25 km
SETTINGS = QkdSettings(sample_fraction=0.1)


def run_block(params=PARAMS, pulses=PULSES, eavesdrop=0.0, seed=7):
    """Both ends through one block; (Alice's result, Bob's result, Alice's block)."""
    rng = np.random.default_rng(seed)
    sampled = sample_block(params, pulses, rng, eavesdrop_fraction=eavesdrop)
    intensities = (params.signal_intensity, params.decoy_intensity)
    alice = DecoyAliceBlock("a-b", "a-b/s/0", sampled, *intensities, SETTINGS, rng)
    bob = DecoyBobBlock("a-b", "a-b/s/0", alice.quantum_channel(), *intensities, SETTINGS, rng)
    step = alice.on_sift_reply(bob.on_sift_request(alice.sift_request()))
    if isinstance(step, BlockResult):
        return step, None, alice
    reply, bob_step = bob.on_estimate_request(step)
    ended = alice.on_estimate_reply(reply)
    if ended is not None:
        assert isinstance(bob_step, BlockResult)
        return ended, bob_step, alice
    while isinstance(bob_step, QkdParityRequest):
        bob_step = bob.on_parity_reply(alice.answer(bob_step))
    verdict, alice_result = alice.on_verify_request(bob_step)
    return alice_result, bob.on_verify_reply(verdict), alice


@pytest.fixture(scope="module")
def block():
    return run_block()


def within(count: float, trials: int, probability: float) -> bool:
    return abs(count - trials * probability) <= SIGMAS * math.sqrt(
        trials * probability * (1.0 - probability)
    )


def test_both_ends_distil_the_same_key(block):
    alice, bob, _ = block
    assert alice.result == bob.result == "ok"
    # Finite-size bounds (ε_PE = 1e-10 each) leave about 4 900 of the ~25 000 bits the
    # measured values would certify at this block size (tests/unit/qkd/test_decoy_finite.py).
    assert alice.key == bob.key and alice.key_bits > 3_000
    assert alice.decoy == bob.decoy  # both ends estimate from the same public data


def test_measured_gains_and_qbers_agree_with_the_closed_forms(block):
    alice, _, sent = block
    sampled, decoy = sent.sampled, alice.decoy
    for index, intensity in ((SIGNAL, PARAMS.signal_intensity), (DECOY, PARAMS.decoy_intensity),
                             (VACUUM, 0.0)):  # fmt: skip
        pulses = int(sampled.pulses_per_class[index])
        assert within(decoy.gains[index] * pulses, pulses, gain(PARAMS, intensity)), index
    estimate = alice.estimate
    signal_qber = qber(PARAMS, PARAMS.signal_intensity)
    assert within(estimate.errors, estimate.sample_size, signal_qber)
    decoy_sifted = np.count_nonzero(
        (sampled.intensity_class == DECOY) & (sampled.alice_basis == sampled.bob_basis)
    )
    assert within(decoy.decoy_qber * decoy_sifted, decoy_sifted, qber(PARAMS, 0.1))


def test_single_photon_bounds_bracket_the_true_values(block):
    # Finite-size bounds on 2.6e5 detections: Y1^L about 0.84 of Y1 (the estimator's
    # O(ν) gap plus the Chernoff margins on Q_ν and Q_μ), e1^U about 0.08 against a true
    # 0.033 (the ~110 decoy errors of a block carry a Chernoff margin of about 80).
    bounds = block[0].decoy.bounds
    assert 0.75 * single_photon_yield(PARAMS) <= bounds.yield_lower <= single_photon_yield(PARAMS)
    error = single_photon_error(PARAMS)
    assert error <= bounds.error_upper <= error + 0.07


def test_key_length_is_finite_size_gllp_over_the_single_photon_share(block):
    alice = block[0]
    finite = alice.decoy.finite
    kept = alice.sifted_bits - alice.estimate.sample_size
    log_inv = math.log(1.0 / SETTINGS.epsilon_pe)
    mean = kept * finite.single_photon.gain_lower / finite.gain_signal_upper
    n1 = mean - math.sqrt(2.0 * log_inv * mean)
    errors = n1 * finite.single_photon.error_upper
    phase = (errors + 0.5 * (log_inv + math.sqrt(log_inv**2 + 8.0 * log_inv * errors))) / n1
    length = math.floor(
        math.floor(n1) * (1.0 - binary_entropy(phase))
        - alice.leaked_bits
        - SETTINGS.verification_bits
        - 2.0 * math.log2(1.0 / SETTINGS.epsilon_pa)
    )
    assert alice.key_bits == length - length % 8 > 0


def test_eavesdropper_on_every_pulse_gets_the_block_discarded():
    alice, bob, _ = run_block(eavesdrop=1.0)
    assert alice.result == bob.result == "aborted_qber"
    assert alice.key is None and alice.estimate.qber > 0.2


def test_a_block_with_too_few_detections_is_dropped():
    alice, bob, _ = run_block(pulses=20_000)
    assert alice.result == "too_few_bits" and bob is None


def test_malformed_messages_are_refused():
    rng = np.random.default_rng(1)
    sampled = sample_block(PARAMS, 5_000_000, rng)
    alice = DecoyAliceBlock("a-b", "blk", sampled, 0.48, 0.1, SETTINGS, rng)
    record = alice.quantum_channel()
    with pytest.raises(ValueError):  # more detections than pulses
        DecoyBobBlock("a-b", "blk", dataclasses.replace(record, pulses=1), 0.48, 0.1,
                      SETTINGS, rng)  # fmt: skip
    bob = DecoyBobBlock("a-b", "blk", record, 0.48, 0.1, SETTINGS, rng)
    request = alice.sift_request()
    with pytest.raises(ValueError):  # one basis short
        bob.on_sift_request(dataclasses.replace(request, bases=request.bases[:-1]))
    estimate = alice.on_sift_reply(bob.on_sift_request(request))
    bad_class = bytes([3]) + estimate.classes[1:]
    with pytest.raises(ValueError):
        bob.on_estimate_request(dataclasses.replace(estimate, classes=bad_class))
    with pytest.raises(ValueError):  # fewer pulses than detections
        bob.on_estimate_request(dataclasses.replace(estimate, pulses_per_class=[1, 1, 1]))


def test_the_quantum_channel_message_carries_only_bobs_record():
    rng = np.random.default_rng(2)
    sampled = sample_block(PARAMS, 5_000_000, rng)
    record = DecoyAliceBlock("a-b", "blk", sampled, 0.48, 0.1, SETTINGS, rng).quantum_channel()
    assert record.pulses == 5_000_000
    assert np.array_equal(np.frombuffer(record.bits, np.uint8), sampled.bob_bit)
    assert np.array_equal(np.frombuffer(record.bases, np.uint8), sampled.bob_basis)
