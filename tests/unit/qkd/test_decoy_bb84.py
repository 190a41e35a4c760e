"""Decoy-state BB84: closed forms against MQZL, decoy estimators, sampler statistics."""

import dataclasses
import math
import time

import numpy as np
import pytest

from qnemu.qkd.decoy_bb84 import (
    DECOY,
    GOBBY_YUAN_SHIELDS,
    SIGNAL,
    VACUUM,
    DecoyBB84Params,
    asymptotic_key_rate,
    block_statistics,
    estimate_single_photon,
    gain,
    max_distance_km,
    qber,
    raman_noise_probability,
    sample_block,
    secret_key_rate_bps,
    single_photon_error,
    single_photon_yield,
)

GYS = GOBBY_YUAN_SHIELDS


def _five_sigma(n: int, p: float) -> float:
    return 5.0 * math.sqrt(n * p * (1.0 - p))


def test_gys_key_rate_falls_to_zero_near_142_km():
    # MQZL fig. 1: with the GYS parameters the decoy key rate vanishes near 142 km.
    # We get 142.0 km; tolerance ±4 km.
    cutoff_km = max_distance_km(GYS)
    assert 138.0 <= cutoff_km <= 146.0
    assert asymptotic_key_rate(GYS.at_length(cutoff_km - 1.0)) > 0.0
    assert asymptotic_key_rate(GYS.at_length(cutoff_km + 1.0)) == 0.0


def test_closed_forms_match_formulas():
    params = GYS.at_length(40.0)
    eta = 0.045 * 10 ** (-0.21 * 40 / 10)
    assert params.transmittance == pytest.approx(eta, rel=1e-12)
    mu, y0 = 0.48, 1.7e-6
    q_mu = y0 + 1 - math.exp(-eta * mu)
    assert gain(params, mu) == pytest.approx(q_mu, rel=1e-12)
    e_mu = (0.5 * y0 + 0.033 * (1 - math.exp(-eta * mu))) / q_mu
    assert qber(params, mu) == pytest.approx(e_mu, rel=1e-12)
    assert single_photon_yield(params) == pytest.approx(y0 + eta, rel=1e-12)
    assert single_photon_error(params) == pytest.approx((0.5 * y0 + 0.033 * eta) / (y0 + eta))
    h2 = lambda p: -p * math.log2(p) - (1 - p) * math.log2(1 - p)  # noqa: E731
    e1 = single_photon_error(params)
    expected = 0.5 * (-q_mu * 1.22 * h2(e_mu) + (y0 + eta) * mu * math.exp(-mu) * (1 - h2(e1)))
    assert asymptotic_key_rate(params) == pytest.approx(expected, rel=1e-12)
    assert secret_key_rate_bps(params) == pytest.approx(expected * 1e9 * 0.8, rel=1e-12)


@pytest.mark.parametrize("length_km", [10.0, 50.0, 100.0, 130.0])
@pytest.mark.parametrize("decoy_intensity", [0.2, 0.1, 0.05, 0.01])
def test_estimators_bound_exact_values_and_tighten_as_decoy_weakens(length_km, decoy_intensity):
    params = dataclasses.replace(GYS, length_km=length_km, decoy_intensity=decoy_intensity)
    mu, nu = params.signal_intensity, decoy_intensity
    bounds = estimate_single_photon(
        gain(params, mu),
        gain(params, nu),
        params.background_probability,
        qber(params, nu),
        mu,
        nu,
    )
    y1, e1 = single_photon_yield(params), single_photon_error(params)
    assert bounds.yield_lower <= y1
    assert bounds.error_upper >= e1
    # The gap is O(ν) (MQZL section IV.B): about 3 % in Y1 and 14 % in e1 at ν = 0.1.
    assert bounds.yield_lower >= y1 * (1.0 - 0.35 * nu)
    assert bounds.error_upper <= e1 * (1.0 + 1.6 * nu)


def test_sampled_gain_and_qber_match_closed_forms():
    params = GYS.at_length(25.0)
    block = sample_block(params, 20_000_000, np.random.default_rng(7))
    stats = block_statistics(block)
    assert stats.pulses.sum() == 20_000_000
    for cls in (SIGNAL, DECOY, VACUUM):
        n, intensity = int(stats.pulses[cls]), params.intensities[cls]
        expected_gain = gain(params, intensity)
        assert abs(stats.detections[cls] - n * expected_gain) <= max(
            _five_sigma(n, expected_gain), 5.0
        )
    for cls in (SIGNAL, DECOY):
        n, expected_qber = int(stats.sifted[cls]), qber(params, params.intensities[cls])
        assert abs(stats.errors[cls] - n * expected_qber) <= _five_sigma(n, expected_qber)
    # About half the detections are sifted, and the class mix follows the probabilities.
    n_detected = block.n_detections
    assert abs(stats.sifted.sum() - n_detected / 2) <= _five_sigma(n_detected, 0.5)
    assert abs(stats.pulses[SIGNAL] - 0.8 * 20_000_000) <= _five_sigma(20_000_000, 0.8)


@pytest.mark.parametrize("fraction", [0.1, 0.5, 1.0])
def test_intercept_resend_raises_qber_by_a_quarter_of_the_fraction(fraction):
    params = dataclasses.replace(
        GYS, length_km=10.0, misalignment_error=0.0, dark_count_probability=0.0
    )
    block = sample_block(params, 2_000_000, np.random.default_rng(11), eavesdrop_fraction=fraction)
    stats = block_statistics(block)
    n, errors = int(stats.sifted.sum()), int(stats.errors.sum())
    assert abs(errors - n * fraction / 4) <= _five_sigma(n, fraction / 4)
    honest = block_statistics(sample_block(params, 2_000_000, np.random.default_rng(11)))
    assert honest.errors.sum() == 0


def test_decoy_statistics_certify_close_to_the_asymptotic_rate():
    params = GYS.at_length(25.0)
    stats = block_statistics(sample_block(params, 500_000_000, np.random.default_rng(3)))
    rate = stats.key_rate(params)
    # ν = 0.1 costs about 12 % of the perfect-decoy rate (exact inputs: 0.884).
    assert 0.75 * asymptotic_key_rate(params) <= rate <= asymptotic_key_rate(params)


def test_eavesdropper_is_caught_by_the_decoy_bound():
    params = GYS.at_length(25.0)
    block = sample_block(params, 200_000_000, np.random.default_rng(5), eavesdrop_fraction=0.6)
    assert block_statistics(block).key_rate(params) == 0.0


def test_raman_noise_follows_the_forward_scattering_model():
    base = GYS.at_length(25.0)
    assert raman_noise_probability(base) == 0.0
    params = dataclasses.replace(base, coexisting_classical_dbm=-10.0)
    raman_w = 1e-4 * 3e-9 * 0.8 * 25.0 * 10 ** (-0.21 * 25 / 10)
    photons = raman_w * 1e-10 / (6.62607015e-34 * 299792458.0 / 1550e-9)
    assert raman_noise_probability(params) == pytest.approx(1 - math.exp(-0.045 * photons))
    assert params.background_probability > base.background_probability
    louder = dataclasses.replace(base, coexisting_classical_dbm=0.0)
    assert raman_noise_probability(louder) == pytest.approx(
        10 * raman_noise_probability(params), rel=1e-3
    )
    assert asymptotic_key_rate(louder) < asymptotic_key_rate(params) < asymptotic_key_rate(base)


def test_sampler_is_fast_at_a_gigahertz_source():
    params = GYS.at_length(25.0)
    started = time.perf_counter()
    block = sample_block(params, 100_000_000, np.random.default_rng(1))
    elapsed_s = time.perf_counter() - started
    assert block.n_detections > 0
    # 0.1 s of a 1 GHz source; measured ≈ 0.05 s on one core.
    assert elapsed_s < 1.0


@pytest.mark.parametrize(
    "change",
    [
        {"decoy_intensity": 0.6},
        {"signal_probability": 0.5},
        {"detector_efficiency": 1.5},
        {"error_correction_efficiency": 0.9},
        {"length_km": -1.0},
    ],
)
def test_invalid_parameters_are_rejected(change):
    with pytest.raises(ValueError):
        DecoyBB84Params(**change)
