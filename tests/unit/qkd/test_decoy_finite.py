"""Finite-size decoy bounds: Chernoff coverage, bracketing of Y1/e1, ℓ ≤ asymptotic ℓ → it.

"Asymptotic" here is the same estimator with ε_PE = 1 (every margin 0): the measured
values taken as the true ones, which is what the key length used before (with E_ν Q_ν
counted as 2 × sifted decoy errors ÷ decoy pulses).
"""

import dataclasses
import math

import numpy as np
import pytest

from qnemu.qkd.decoy_bb84 import (
    DECOY,
    GOBBY_YUAN_SHIELDS,
    SIGNAL,
    block_statistics,
    estimate_single_photon,
    gain,
    qber,
    sample_block,
    single_photon_error,
    single_photon_yield,
)
from qnemu.qkd.decoy_finite import decoy_key_length, finite_decoy_bounds, single_photon_key_bits
from qnemu.qkd.entropy import (
    binary_entropy,
    chernoff_count_lower,
    chernoff_count_upper,
    chernoff_mean_lower,
    chernoff_mean_upper,
)

PARAMS = GOBBY_YUAN_SHIELDS.at_length(25.0)
EPSILON_PE = 1e-10
MU, NU = PARAMS.signal_intensity, PARAMS.decoy_intensity


def leak(kept: float, params=PARAMS) -> float:
    """Cascade's leak as the benchmark measures it at 3 % QBER: 1.17 n h(E_μ)."""
    return 1.17 * kept * binary_entropy(qber(params, MU))


def expected_counts(params, pulses_total: float):
    """(pulses, detections per class, sifted decoy errors) as their expectations."""
    pulses = pulses_total * params.intensity_probabilities
    detections = pulses * np.array([gain(params, m) for m in params.intensities])
    errors = pulses[DECOY] * gain(params, NU) * qber(params, NU) / 2.0
    return pulses, detections, errors


def lengths(pulses, detections, errors, kept, leaked, epsilon=EPSILON_PE):
    """(finite ℓ, asymptotic ℓ) for the same counts."""
    finite = finite_decoy_bounds(pulses, detections, errors, MU, NU, epsilon)
    asymptotic = finite_decoy_bounds(pulses, detections, errors, MU, NU, 1.0)
    return decoy_key_length(kept, leaked, finite), decoy_key_length(kept, leaked, asymptotic)


def test_chernoff_bounds_cover_the_mean_at_their_epsilon():
    rng = np.random.default_rng(4)
    epsilon = 0.01
    for mean in (0.5, 8.0, 110.0, 6700.0):
        counts = rng.poisson(mean, size=200_000)  # Poisson: the many-trial binomial limit
        # Each bound fails with probability ≤ ε (in practice well below: Chernoff is loose).
        assert np.mean(chernoff_mean_upper(counts, epsilon) < mean) <= epsilon
        assert np.mean(chernoff_mean_lower(counts, epsilon) > mean) <= epsilon
        assert np.mean(counts < chernoff_count_lower(mean, epsilon)) <= epsilon
        assert np.mean(counts > chernoff_count_upper(mean, epsilon)) <= epsilon


def test_chernoff_bounds_are_vectorised_and_vanish_at_epsilon_one():
    counts = np.array([0, 3, 110, 255_000])
    assert np.array_equal(chernoff_mean_upper(counts, 1.0), counts)
    assert np.array_equal(chernoff_mean_lower(counts, 1.0), counts)
    upper, lower = chernoff_mean_upper(counts, EPSILON_PE), chernoff_mean_lower(counts, EPSILON_PE)
    assert np.all(lower <= counts) and np.all(counts <= upper) and lower[0] == 0.0
    # x = 0: m^U = 2 ln(1/ε), where P(X = 0) = e^(−m) < e^(−m/2) = ε.
    assert upper[0] == pytest.approx(2.0 * math.log(1.0 / EPSILON_PE))
    with pytest.raises(ValueError):
        chernoff_mean_upper(counts, 0.0)


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_finite_bounds_bracket_the_true_single_photon_values(seed):
    # Holds except with probability 7 ε_PE per block; the measured-value estimator
    # (estimate_single_photon) is free to fall on either side by its σ.
    stats = block_statistics(sample_block(PARAMS, 50_000_000, np.random.default_rng(seed)))
    finite = finite_decoy_bounds(
        stats.pulses, stats.detections, stats.errors[DECOY], MU, NU, EPSILON_PE
    )
    y1, e1 = single_photon_yield(PARAMS), single_photon_error(PARAMS)
    assert 0.75 * y1 <= finite.single_photon.yield_lower <= y1
    assert e1 <= finite.single_photon.error_upper <= e1 + 0.07
    measured = stats.single_photon_bounds(PARAMS)
    assert finite.single_photon.yield_lower <= measured.yield_lower
    assert finite.single_photon.error_upper >= measured.error_upper
    assert finite.gain_signal_upper >= stats.gains[SIGNAL]
    assert finite.gain_decoy_lower <= stats.gains[DECOY]


def test_finite_key_is_at_most_the_asymptotic_key_and_never_negative():
    stats = block_statistics(sample_block(PARAMS, 50_000_000, np.random.default_rng(9)))
    kept = int(0.9 * stats.sifted[SIGNAL])
    finite, asymptotic = lengths(stats.pulses, stats.detections, stats.errors[DECOY],
                                 kept, leak(kept))  # fmt: skip
    # 2.6e5 detections: the finite-size key is about a sixth of the asymptotic one.
    assert 0 < finite <= asymptotic
    assert 0.10 <= finite / asymptotic <= 0.25
    # A block with a tenth of the detections certifies nothing, yet ℓ stays at 0.
    small = block_statistics(sample_block(PARAMS, 5_000_000, np.random.default_rng(9)))
    kept = int(0.9 * small.sifted[SIGNAL])
    assert lengths(small.pulses, small.detections, small.errors[DECOY], kept, leak(kept)) == (
        0,
        pytest.approx(2_000, rel=0.5),
    )


def test_estimate_at_epsilon_one_is_the_measured_value_estimator():
    stats = block_statistics(sample_block(PARAMS, 50_000_000, np.random.default_rng(3)))
    # Sifted decoy errors over half the decoy pulses stand for E_ν Q_ν.
    error_gain = 2.0 * stats.errors[DECOY] / stats.pulses[DECOY]
    finite = finite_decoy_bounds(stats.pulses, stats.detections, stats.errors[DECOY], MU, NU, 1.0)
    gains = stats.gains
    measured = estimate_single_photon(
        gains[SIGNAL], gains[DECOY], gains[2], error_gain / gains[DECOY], MU, NU
    )
    assert finite.single_photon == pytest.approx(measured)
    single, phase = single_photon_key_bits(100_000, finite)
    assert single == pytest.approx(100_000 * finite.single_photon_share)
    assert phase == pytest.approx(finite.single_photon.error_upper)


def test_finite_key_approaches_the_asymptotic_key_as_the_block_grows():
    shortfall = []
    for pulses_total in (5e7, 5e8, 5e9, 5e10, 5e11):
        pulses, detections, errors = expected_counts(PARAMS, pulses_total)
        kept = 0.45 * detections[SIGNAL]
        finite, asymptotic = lengths(pulses, detections, errors, kept, leak(kept))
        shortfall.append(1.0 - finite / asymptotic)
    # Measured: 0.84, 0.26, 0.082, 0.026, 0.0082 — shrinking as 1/√N (×√10 a decade).
    assert shortfall[0] > 0.75
    assert shortfall[-1] < 0.01
    ratios = np.array(shortfall[1:-1]) / np.array(shortfall[2:])
    assert np.all((ratios > 2.5) & (ratios < 4.0))


def test_finite_bounds_at_fifty_km_and_with_an_eavesdropper():
    far = dataclasses.replace(PARAMS, length_km=50.0)
    pulses, detections, errors = expected_counts(far, 1.66e8)  # about 2^18 detections
    kept = 0.45 * detections[SIGNAL]
    finite, asymptotic = lengths(pulses, detections, errors, kept, leak(kept, far))
    assert 0 < finite <= 0.2 * asymptotic
    # Intercept–resend on 60 % of the pulses: no key, the length clamps at 0.
    stats = block_statistics(
        sample_block(PARAMS, 50_000_000, np.random.default_rng(5), eavesdrop_fraction=0.6)
    )
    kept = int(0.9 * stats.sifted[SIGNAL])
    assert lengths(stats.pulses, stats.detections, stats.errors[DECOY], kept, leak(kept))[0] == 0
