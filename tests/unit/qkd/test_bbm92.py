"""BBM92: Werner-pair QBER 2(1−F)/3 in both bases, sampler against the Born rule."""

import math

import numpy as np
import pytest

from qnemu.physics.bell import BellState, bell_density, werner_state
from qnemu.qkd.bbm92 import (
    bbm92_key_rate,
    bbm92_qber,
    qber_from_density,
    sample_pair_outcomes,
    werner_bell_weights,
)


def _errors_per_basis(outcomes):
    sifted = outcomes.alice_basis == outcomes.bob_basis
    errors = outcomes.alice_bit != outcomes.bob_bit
    result = []
    for basis in (0, 1):
        in_basis = sifted & (outcomes.alice_basis == basis)
        result.append((int(in_basis.sum()), int((in_basis & errors).sum())))
    return result


def _within_five_sigma(errors: int, n: int, p: float) -> bool:
    return abs(errors - n * p) <= 5.0 * math.sqrt(n * p * (1.0 - p)) + 1e-9


@pytest.mark.parametrize("fidelity", [1.0, 0.95, 0.85, 0.7])
def test_werner_qber_closed_form_matches_the_born_rule(fidelity):
    for state in BellState:
        qber_z, qber_x = qber_from_density(werner_state(fidelity, state), state)
        assert qber_z == pytest.approx(bbm92_qber(fidelity), abs=1e-12)
        assert qber_x == pytest.approx(bbm92_qber(fidelity), abs=1e-12)


@pytest.mark.parametrize("state", list(BellState))
@pytest.mark.parametrize("fidelity", [1.0, 0.9, 0.75])
def test_sampled_werner_qber_is_two_thirds_of_infidelity_in_both_bases(fidelity, state):
    rng = np.random.default_rng(int(state) * 100 + int(fidelity * 100))
    outcomes = sample_pair_outcomes(werner_bell_weights(fidelity, state), 200_000, rng, state)
    for n, errors in _errors_per_basis(outcomes):
        assert _within_five_sigma(errors, n, bbm92_qber(fidelity))


def test_sampler_matches_density_for_any_bell_diagonal_state():
    weights = np.array([0.7, 0.05, 0.15, 0.1])  # indexed by BellState value
    density = sum(w * bell_density(BellState(i)) for i, w in enumerate(weights))
    expected_z, expected_x = qber_from_density(density)
    assert expected_z == pytest.approx(0.05 + 0.1)  # Ψ weights
    assert expected_x == pytest.approx(0.15 + 0.1)  # minus-sign weights
    outcomes = sample_pair_outcomes(weights, 200_000, np.random.default_rng(2))
    (n_z, errors_z), (n_x, errors_x) = _errors_per_basis(outcomes)
    assert _within_five_sigma(errors_z, n_z, expected_z)
    assert _within_five_sigma(errors_x, n_x, expected_x)


def test_mismatched_bases_are_uncorrelated_and_bases_uniform():
    n = 200_000
    outcomes = sample_pair_outcomes(werner_bell_weights(1.0), n, np.random.default_rng(4))
    mismatched = outcomes.alice_basis != outcomes.bob_basis
    n_mismatched = int(mismatched.sum())
    assert _within_five_sigma(n_mismatched, n, 0.5)
    agree = int((mismatched & (outcomes.alice_bit == outcomes.bob_bit)).sum())
    assert _within_five_sigma(agree, n_mismatched, 0.5)
    assert outcomes.bob_bit.dtype == np.uint8


def test_key_rate_symmetric_case_and_threshold():
    assert bbm92_key_rate(0.0) == 1.0
    q = 0.03
    h = -q * math.log2(q) - (1 - q) * math.log2(1 - q)
    assert bbm92_key_rate(q) == pytest.approx(1 - 2 * h)
    assert bbm92_key_rate(0.10) > 0.0
    assert bbm92_key_rate(0.111) == 0.0  # threshold ≈ 11.0 %
    assert bbm92_key_rate(0.02, 0.05) == pytest.approx(bbm92_key_rate(0.05, 0.02))


def test_invalid_inputs_are_rejected():
    with pytest.raises(ValueError):
        bbm92_qber(1.2)
    with pytest.raises(ValueError):
        sample_pair_outcomes(np.array([0.5, 0.5, 0.5, 0.0]), 10, np.random.default_rng(0))
