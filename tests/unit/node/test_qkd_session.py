"""BBM92 block post-processing (qnemu.qkd.session) run end to end without sockets."""

import math
from dataclasses import replace

import numpy as np

from qnemu.qkd.session import (
    NO_HALF,
    AliceBlock,
    BlockResult,
    BobBlock,
    QkdSettings,
    bob_raw_bit,
)
from qnemu.wire import decode, encode
from qnemu.wire.qkd import QkdParityRequest, QkdVerifyRequest

SETTINGS = QkdSettings(block_pairs=8192, sample_fraction=0.2, epsilon_pe=1e-6)


def raw_pairs(n: int, qber: float, seed: int, missing: int = 0):
    """n pairs: Alice's and Bob's (bit, basis), Bob's bits wrong with probability qber."""
    rng = np.random.default_rng(seed)
    pairs = np.stack([np.full(n, 7), np.arange(n)], axis=1)
    alice_bits = rng.integers(0, 2, n).astype(np.uint8)
    alice_bases = rng.integers(0, 2, n).astype(np.uint8)
    bob_bases = rng.integers(0, 2, n).astype(np.uint8)
    errors = (rng.random(n) < qber).astype(np.uint8)
    bob_bits = np.where(bob_bases == alice_bases, alice_bits ^ errors, rng.integers(0, 2, n))
    halves = zip(range(n), bob_bits, bob_bases, strict=True)
    bob = {(7, int(s)): (int(b), int(c)) for s, b, c in halves}
    for sequence_number in range(missing):
        del bob[(7, sequence_number)]
    return pairs, alice_bits, alice_bases, bob


def wire(body):
    """Through the real codec, as the classical channel carries it."""
    return decode(encode(body, sender="x", sent_at=0.0)).body


def run_block(n: int, qber: float, seed: int = 1, settings: QkdSettings = SETTINGS, **kw):
    pairs, bits, bases, bob_halves = raw_pairs(n, qber, seed, **kw)
    alice = AliceBlock("a-b", "a-b/s/0", pairs, bits, bases, settings, np.random.default_rng(2))
    bob = BobBlock("a-b", "a-b/s/0", settings, np.random.default_rng(3))
    reply = wire(
        bob.on_sift_request(wire(alice.sift_request()), lambda c, s: bob_halves.get((c, s)))
    )
    step = alice.on_sift_reply(reply)
    if isinstance(step, BlockResult):
        return step, None, 0
    estimate_reply, step = bob.on_estimate_request(wire(step))
    alice_end = alice.on_estimate_reply(wire(estimate_reply))
    if isinstance(step, BlockResult):
        assert alice_end is not None and alice_end.result == step.result
        return alice_end, step, 0
    round_trips = 0
    while isinstance(step, QkdParityRequest):
        round_trips += 1
        step = bob.on_parity_reply(wire(alice.answer(wire(step))))
    assert isinstance(step, QkdVerifyRequest)
    verdict, alice_result = alice.on_verify_request(wire(step))
    bob_result = bob.on_verify_reply(wire(verdict))
    return alice_result, bob_result, round_trips


def test_noisy_block_gives_identical_keys_and_honest_accounting():
    qber = 0.03
    alice, bob, round_trips = run_block(16384, qber)
    assert alice.result == bob.result == "ok"
    assert alice.key == bob.key and alice.key_bits > 0 and alice.key_bits % 8 == 0
    # About half the pairs survive sifting: |k − np| ≤ 5σ.
    assert abs(alice.sifted_bits - 8192) <= 5 * math.sqrt(16384 / 4)
    estimate = alice.estimate
    sigma = math.sqrt(qber * (1 - qber) / estimate.sample_size)
    assert abs(estimate.qber - qber) <= 5 * sigma
    assert estimate.qber_upper > estimate.qber
    # Both ends counted the same Cascade leak, and it is near the Shannon limit.
    assert alice.leaked_bits == bob.leaked_bits > 0
    entropy = -qber * math.log2(qber) - (1 - qber) * math.log2(1 - qber)
    assert alice.leaked_bits < 2.0 * estimate.remaining_size * entropy
    assert 1 <= round_trips < 200


def test_block_above_the_threshold_is_aborted_at_both_ends_without_cascade():
    alice, bob, round_trips = run_block(8192, 0.15)
    assert alice.result == bob.result == "aborted_qber"
    assert alice.key is None and bob.key is None and round_trips == 0
    assert alice.estimate.qber > SETTINGS.qber_threshold


def test_perfect_pairs_and_missing_halves():
    alice, bob, _ = run_block(8192, 0.0, missing=100)
    assert alice.result == bob.result == "ok" and alice.key == bob.key
    assert alice.estimate.errors == 0
    # Pairs Bob never measured are not sifted: about half of the rest are.
    assert alice.sifted_bits <= (8192 - 100) / 2 + 5 * math.sqrt(8092 / 4)


def test_too_few_sifted_bits_ends_the_block_at_alice():
    alice, bob, _ = run_block(100, 0.0)
    assert alice.result == "too_few_bits" and bob is None


def test_no_secret_key_when_the_finite_size_bound_eats_it_all():
    strict = QkdSettings(block_pairs=2048, epsilon_pe=1e-10)
    alice, bob, _ = run_block(2048, 0.08, settings=strict)
    assert alice.result == bob.result == "no_secret_key"
    assert alice.key is None


def test_a_tag_that_does_not_match_fails_verification_at_both_ends():
    pairs, bits, bases, bob_halves = raw_pairs(8192, 0.02, 5)
    alice = AliceBlock("a-b", "blk", pairs, bits, bases, SETTINGS, np.random.default_rng(2))
    bob = BobBlock("a-b", "blk", SETTINGS, np.random.default_rng(3))
    estimate = alice.on_sift_reply(
        bob.on_sift_request(alice.sift_request(), lambda c, s: bob_halves.get((c, s)))
    )
    reply, step = bob.on_estimate_request(estimate)
    assert alice.on_estimate_reply(reply) is None
    while isinstance(step, QkdParityRequest):
        step = bob.on_parity_reply(alice.answer(step))
    # As if Cascade had left an error: Bob's tag is of a different key.
    wrong = bytes([step.key_tag[0] ^ 1]) + step.key_tag[1:]
    verdict, alice_result = alice.on_verify_request(replace(step, key_tag=wrong))
    assert not verdict.verified and alice_result.result == "failed_verification"
    assert bob.on_verify_reply(verdict).result == "failed_verification"
    assert alice_result.key is None


def test_bob_flips_his_bit_for_the_heralded_bell_state():
    # Φ+ (0): correlated in Z and X; Ψ+ (1): Z anticorrelated; Φ− (2): X anticorrelated.
    assert bob_raw_bit(1, "Z", 0) == 1 and bob_raw_bit(1, "X", 0) == 1
    assert bob_raw_bit(1, "Z", 1) == 0 and bob_raw_bit(1, "X", 1) == 1
    assert bob_raw_bit(1, "Z", 2) == 1 and bob_raw_bit(1, "X", 2) == 0
    assert bob_raw_bit(0, "Z", 3) == 1 and bob_raw_bit(0, "X", 3) == 1
    assert NO_HALF not in (0, 1)
