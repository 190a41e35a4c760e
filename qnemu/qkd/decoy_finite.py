"""Finite-size decoy-state bounds: worst-case single-photon figures from one block's counts.

The asymptotic estimators (`decoy_bb84.estimate_single_photon`) take the gains Q_μ, Q_ν,
Y0 and the decoy error gain E_ν Q_ν measured on a block as if they were the true
expectations. A block is finite, so each is bounded instead, in the direction that hurts
the key (Ma, Qi, Zhao, Lo, PRA 72, 012326 (2005), sec. V, bound the same quantities with
Gaussian deviations; Lim, Curty, Walenta, Xu, Zbinden, PRA 89, 022307 (2014), bound the
counts per intensity with Hoeffding): here with multiplicative Chernoff bounds
(`entropy.chernoff_*`), which stay tight for the handful of vacuum counts a block has.

Each detection of a pulse of class k is taken as an independent trial with the class's
detection probability (the i.i.d. model of Ma et al. and of `decoy_bb84.sample_block`);
Bob's basis matches Alice's with probability 1/2 whatever the pulse, so the sifted
decoy errors count trials of probability E_ν Q_ν / 2. Seven bounds, each failing with
probability at most ε_PE (`BOUNDS_PER_BLOCK`; by the union bound the estimate fails with
at most 7 ε_PE):

    Q_μ^U, Q_ν^L, Y0^U, Y0^L    from the detections per class: m^U, m^L of the count / pulses
    (E_ν Q_ν)^U                 from the sifted decoy errors: 2 m^U / N_ν
    n1^L                        the single-photon bits among the n kept signal bits:
                                at least n·Q1^L/Q_μ^U minus its Chernoff deviation
    e_ph^U                      the phase-error rate of those n1^L bits: at most n1^L e1^U
                                plus its Chernoff deviation, over n1^L

and the key length is GLLP's with them,

    ℓ = ⌊n1^L (1 − h(e_ph^U)) − leak_EC − tag − 2 log2(1/ε_PA)⌋.

With ε_PE = 1 every margin is 0 and this is the asymptotic estimate on measured values
(`decoy_bb84.estimate_single_photon`, with E_ν Q_ν counted as 2 × errors ÷ N_ν).
"""

import math
from dataclasses import dataclass

import numpy as np

from qnemu.qkd.decoy_bb84 import DECOY, SIGNAL, VACUUM, SinglePhotonBounds, single_photon_bounds
from qnemu.qkd.entropy import (
    chernoff_count_lower,
    chernoff_count_upper,
    chernoff_mean_lower,
    chernoff_mean_upper,
)
from qnemu.qkd.privacy import DEFAULT_EPSILON_PA, DEFAULT_VERIFICATION_BITS, secret_key_length

__all__ = [
    "BOUNDS_PER_BLOCK",
    "FiniteDecoyBounds",
    "decoy_key_length",
    "finite_decoy_bounds",
    "single_photon_key_bits",
]

# Statistical bounds taken per block, each with failure probability ε_PE (docstring).
BOUNDS_PER_BLOCK = 7
# Probability that Bob's basis matches Alice's (uniform, independent choices).
_SIFTING_PROBABILITY = 0.5


@dataclass(frozen=True)
class FiniteDecoyBounds:
    """Worst-case gains of one block (per pulse) and the single-photon bounds they give."""

    gain_signal_upper: float  # Q_μ^U
    gain_decoy_lower: float  # Q_ν^L
    background_upper: float  # Y0^U
    background_lower: float  # Y0^L
    decoy_error_gain_upper: float  # (E_ν Q_ν)^U
    single_photon: SinglePhotonBounds  # Y1^L, e1^U, Q1^L from the bounds above
    epsilon_pe: float

    @property
    def single_photon_share(self) -> float:
        """Q1^L / Q_μ^U: the least expected fraction of signal detections with one photon."""
        if self.gain_signal_upper <= 0.0:
            return 0.0
        return min(1.0, self.single_photon.gain_lower / self.gain_signal_upper)


def finite_decoy_bounds(
    pulses_per_class,
    detections_per_class,
    decoy_sifted_errors: int,
    signal_intensity: float,
    decoy_intensity: float,
    epsilon_pe: float,
) -> FiniteDecoyBounds:
    """Bound the gains of a block from its counts, then Y1^L, e1^U, Q1^L (module doc).

    Args:
        pulses_per_class: pulses Alice sent of each class (SIGNAL, DECOY, VACUUM).
        detections_per_class: Bob's detections of each class.
        decoy_sifted_errors: errors among the sifted decoy detections (all revealed).
        epsilon_pe: failure probability of each bound; 1 gives the asymptotic estimate.
    """
    pulses = np.maximum(np.asarray(pulses_per_class, dtype=float), 1.0)
    detections = np.asarray(detections_per_class, dtype=float)
    upper = chernoff_mean_upper(detections, epsilon_pe) / pulses
    lower = chernoff_mean_lower(detections, epsilon_pe) / pulses
    error_gain_upper = (
        chernoff_mean_upper(decoy_sifted_errors, epsilon_pe) / _SIFTING_PROBABILITY / pulses[DECOY]
    )
    # The Chernoff margin may exceed the count: no probability is above 1.
    upper, error_gain_upper = np.minimum(upper, 1.0), min(float(error_gain_upper), 1.0)
    yield_lower, error_upper, gain_lower = single_photon_bounds(
        gain_signal_upper=upper[SIGNAL],
        gain_decoy_lower=lower[DECOY],
        background_upper=upper[VACUUM],
        decoy_error_gain_upper=error_gain_upper,
        background_lower=lower[VACUUM],
        signal_intensity=signal_intensity,
        decoy_intensity=decoy_intensity,
    )
    return FiniteDecoyBounds(
        gain_signal_upper=float(upper[SIGNAL]),
        gain_decoy_lower=float(lower[DECOY]),
        background_upper=float(upper[VACUUM]),
        background_lower=float(lower[VACUUM]),
        decoy_error_gain_upper=error_gain_upper,
        single_photon=SinglePhotonBounds(float(yield_lower), float(error_upper), float(gain_lower)),
        epsilon_pe=epsilon_pe,
    )


def single_photon_key_bits(kept_bits, bounds: FiniteDecoyBounds):
    """(n1^L, e_ph^U): single-photon bits among `kept_bits` signal bits and their phase errors.

    Vectorised over `kept_bits`. n1^L = max(0, m − √(2Lm)) with m = n·Q1^L/Q_μ^U;
    e_ph^U = min(1/2, (n1^L e1^U + Chernoff deviation) / n1^L), 1/2 when n1^L = 0.
    """
    epsilon = bounds.epsilon_pe
    expected = np.asarray(kept_bits, dtype=float) * bounds.single_photon_share
    single = chernoff_count_lower(expected, epsilon)
    errors = chernoff_count_upper(single * bounds.single_photon.error_upper, epsilon)
    phase = np.divide(errors, single, out=np.full_like(single, 0.5), where=single > 0.0)
    return single, np.minimum(phase, 0.5)


def decoy_key_length(
    kept_bits: int,
    leaked_ec_bits: int,
    bounds: FiniteDecoyBounds,
    verification_bits: int = DEFAULT_VERIFICATION_BITS,
    epsilon_pa: float = DEFAULT_EPSILON_PA,
) -> int:
    """ℓ = ⌊n1^L (1 − h(e_ph^U)) − leak_EC − tag − 2 log2(1/ε_PA)⌋ ≥ 0, not yet in bytes."""
    single, phase = single_photon_key_bits(kept_bits, bounds)
    return secret_key_length(
        kept_bits,
        leaked_ec_bits,
        float(phase),
        single_photon_bits=math.floor(float(single)),
        verification_bits=verification_bits,
        epsilon_pa=epsilon_pa,
    )
