"""Sifting and QBER estimation with a Serfling bound."""

import math

import numpy as np
import pytest

from qnemu.qkd.entropy import binary_entropy, hoeffding_deviation, serfling_deviation
from qnemu.qkd.sifting import choose_sample, estimate_qber, sample_and_estimate, sift_indices


def test_sift_keeps_exactly_the_matching_bases():
    alice = np.array([0, 1, 1, 0, 1], dtype=np.uint8)
    bob = np.array([0, 0, 1, 1, 1], dtype=np.uint8)
    np.testing.assert_array_equal(sift_indices(alice, bob), [0, 2, 4])
    with pytest.raises(ValueError):
        sift_indices(alice, bob[:3])


def test_sample_and_kept_partition_the_indices():
    sample, kept = choose_sample(1000, 100, np.random.default_rng(0))
    assert sample.size == 100 and kept.size == 900
    np.testing.assert_array_equal(np.sort(np.concatenate([sample, kept])), np.arange(1000))
    with pytest.raises(ValueError):
        choose_sample(10, 11, np.random.default_rng(0))


def test_estimate_counts_errors_and_bounds_the_rest():
    rng = np.random.default_rng(1)
    n, true_qber = 100_000, 0.04
    alice = rng.integers(0, 2, n, dtype=np.uint8)
    bob = alice ^ (rng.random(n) < true_qber).astype(np.uint8)
    estimate, alice_rest, bob_rest = sample_and_estimate(alice, bob, 10_000, rng, epsilon=1e-10)
    assert alice_rest.size == bob_rest.size == 90_000
    assert abs(estimate.errors - 10_000 * true_qber) <= 5 * math.sqrt(10_000 * 0.04 * 0.96)
    rest_qber = float(np.mean(alice_rest != bob_rest))
    assert estimate.qber <= estimate.qber_upper
    assert rest_qber <= estimate.qber_upper
    expected_delta = math.sqrt(100_000 * 10_001 * math.log(1e10) / (90_000 * 10_000**2))
    assert estimate.qber_upper == pytest.approx(estimate.qber + expected_delta)


def test_bound_holds_over_many_seeds_at_loose_epsilon():
    # With ε = 1e-2 the bound may fail in at most ~1 % of trials; we see none in 200.
    failures = 0
    for seed in range(200):
        rng = np.random.default_rng(seed)
        alice = rng.integers(0, 2, 5_000, dtype=np.uint8)
        bob = alice ^ (rng.random(5_000) < 0.05).astype(np.uint8)
        estimate, a, b = sample_and_estimate(alice, bob, 500, rng, epsilon=1e-2)
        failures += float(np.mean(a != b)) > estimate.qber_upper
    assert failures <= 2


def test_empty_sample_gives_the_worst_case_bound():
    estimate = estimate_qber(np.array([], dtype=np.uint8), np.array([], dtype=np.uint8), 100)
    assert estimate.qber_upper == 0.5 and estimate.qber == 0.0


def test_entropy_helpers():
    assert binary_entropy(0.0) == 0.0 and binary_entropy(1.0) == 0.0
    assert binary_entropy(0.5) == pytest.approx(1.0)
    assert binary_entropy(0.11) == pytest.approx(0.4999, abs=1e-3)
    np.testing.assert_allclose(binary_entropy(np.array([0.0, 0.5, 1.0])), [0.0, 1.0, 0.0])
    with pytest.raises(ValueError):
        binary_entropy(1.5)
    assert hoeffding_deviation(1000, 1e-3) == pytest.approx(math.sqrt(math.log(1e3) / 2000))
    assert serfling_deviation(100, 900, 0.01) > serfling_deviation(1000, 9000, 0.01)
