"""Decoy-state BB84 over a fibre: closed-form rates, decoy estimators, block sampler.

The link: a weak-coherent source with three intensities (signal μ, decoy ν, vacuum 0),
a fibre, and Bob's threshold detectors with efficiency η_Bob, dark counts Y0 and
optical misalignment e_d, optionally with Raman noise from classical channels sharing
the fibre. References: Lo, Ma, Chen, PRL 94, 230504 (2005); Ma, Qi, Zhao, Lo, PRA 72,
012326 (2005) (written "MQZL" below); GLLP: Gottesman, Lo, Lütkenhaus, Preskill,
QIC 4, 325 (2004).
"""

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from qnemu.physics.fibre import transmittance
from qnemu.qkd.entropy import binary_entropy

__all__ = [
    "GOBBY_YUAN_SHIELDS",
    "DecoyBB84Params",
    "DecoyBlock",
    "DecoyStatistics",
    "SinglePhotonBounds",
    "asymptotic_key_rate",
    "block_statistics",
    "decoy_key_rate",
    "estimate_single_photon",
    "gain",
    "max_distance_km",
    "qber",
    "raman_noise_probability",
    "sample_block",
    "secret_key_rate_bps",
    "single_photon_bounds",
    "single_photon_error",
    "single_photon_yield",
]

# Error rate of a background (dark or Raman) count: its bit is random (MQZL eq. 5).
BACKGROUND_ERROR_RATE = 0.5
# Probability that Alice's and Bob's bases match in BB84 with uniform bases.
SIFTING_FRACTION = 0.5
# Intensity classes, the value of `DecoyBlock.intensity_class`.
SIGNAL, DECOY, VACUUM = 0, 1, 2

_PLANCK_J_S = 6.626_070_15e-34
_SPEED_OF_LIGHT_M_PER_S = 299_792_458.0


@dataclass(frozen=True)
class DecoyBB84Params:
    """A prepare-and-measure decoy-state BB84 fibre link (source, fibre, detectors).

    Defaults are the Gobby–Yuan–Shields (GYS) set used by MQZL (α 0.21 dB/km,
    η_Bob 4.5 %, Y0 1.7e-6, e_d 3.3 %, f 1.22, μ 0.48) with a 1 GHz source.

    The Raman model (used only when `coexisting_classical_dbm` is set): a classical
    channel of launch power P co-propagating with the quantum channel scatters
    spontaneous-Raman photons into the quantum channel's filter; the power reaching
    Bob is P_R = P · ρ · Δλ · L · e^(−α L) (forward scattering, same loss at both
    wavelengths; Eraerds et al., NJP 12, 063027 (2010), eq. 1; Patel et al., PRX 2,
    041010 (2012)). ρ is the effective Raman cross-section per km per nm of filter
    bandwidth Δλ (order 1e-9–1e-8 /(km·nm) for a C-band quantum channel a few nm from
    the classical one). The photons per detection window τ, N = P_R τ λ/(h c), add a
    background count probability 1 − e^(−η_Bob N) per pulse to the dark counts.
    """

    length_km: float = 0.0
    source_rate_hz: float = 1e9
    signal_intensity: float = 0.48
    decoy_intensity: float = 0.1
    signal_probability: float = 0.8
    decoy_probability: float = 0.1
    vacuum_probability: float = 0.1
    detector_efficiency: float = 0.045
    dark_count_probability: float = 1.7e-6
    misalignment_error: float = 0.033
    attenuation_db_per_km: float = 0.21
    error_correction_efficiency: float = 1.22
    coexisting_classical_dbm: float | None = None
    raman_cross_section_per_km_nm: float = 3e-9
    filter_bandwidth_nm: float = 0.8
    detection_window_s: float = 1e-10
    quantum_wavelength_nm: float = 1550.0

    def __post_init__(self) -> None:
        if not self.signal_intensity > self.decoy_intensity > 0.0:
            raise ValueError("need signal_intensity > decoy_intensity > 0 (vacuum is 0)")
        probabilities = (self.signal_probability, self.decoy_probability, self.vacuum_probability)
        if min(probabilities) < 0.0 or not math.isclose(sum(probabilities), 1.0, abs_tol=1e-9):
            raise ValueError(f"intensity probabilities must be ≥ 0 and sum to 1: {probabilities}")
        for name in ("detector_efficiency", "dark_count_probability", "misalignment_error"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.source_rate_hz <= 0.0 or self.length_km < 0.0 or self.attenuation_db_per_km < 0.0:
            raise ValueError("source_rate_hz must be > 0, length and attenuation ≥ 0")
        if self.error_correction_efficiency < 1.0:
            raise ValueError("error_correction_efficiency f must be ≥ 1 (Shannon limit)")

    def at_length(self, length_km: float) -> "DecoyBB84Params":
        return dataclasses.replace(self, length_km=length_km)

    @property
    def intensities(self) -> np.ndarray:
        """Mean photon numbers per class, indexed by SIGNAL, DECOY, VACUUM."""
        return np.array([self.signal_intensity, self.decoy_intensity, 0.0])

    @property
    def intensity_probabilities(self) -> np.ndarray:
        return np.array([self.signal_probability, self.decoy_probability, self.vacuum_probability])

    @property
    def transmittance(self) -> float:
        """η = η_Bob · 10^(−αL/10): probability that one photon sent is detected."""
        return self.detector_efficiency * transmittance(self.length_km, self.attenuation_db_per_km)

    @property
    def background_probability(self) -> float:
        """Y0: probability of a count with no signal photon (dark counts + Raman)."""
        raman = raman_noise_probability(self)
        return 1.0 - (1.0 - self.dark_count_probability) * (1.0 - raman)


GOBBY_YUAN_SHIELDS = DecoyBB84Params()


def raman_noise_probability(params: DecoyBB84Params) -> float:
    """Probability per pulse of a detector count from Raman photons (model in the class doc)."""
    if params.coexisting_classical_dbm is None:
        return 0.0
    launch_w = 1e-3 * 10.0 ** (params.coexisting_classical_dbm / 10.0)
    loss = transmittance(params.length_km, params.attenuation_db_per_km)
    raman_w = (
        launch_w
        * params.raman_cross_section_per_km_nm
        * params.filter_bandwidth_nm
        * params.length_km
        * loss
    )
    photon_energy_j = _PLANCK_J_S * _SPEED_OF_LIGHT_M_PER_S / (params.quantum_wavelength_nm * 1e-9)
    photons_per_window = raman_w * params.detection_window_s / photon_energy_j
    return -math.expm1(-params.detector_efficiency * photons_per_window)


# --- closed forms (MQZL section II, asymptotic) -----------------------------------------


def gain(params: DecoyBB84Params, intensity: float) -> float:
    """Q_μ = Y0 + 1 − e^(−ημ): detections per pulse of mean photon number μ (MQZL eq. 4)."""
    return params.background_probability - math.expm1(-params.transmittance * intensity)


def qber(params: DecoyBB84Params, intensity: float) -> float:
    """E_μ from E_μ Q_μ = e0 Y0 + e_d (1 − e^(−ημ)) (MQZL eq. 5)."""
    signal_counts = -math.expm1(-params.transmittance * intensity)
    errors = (
        BACKGROUND_ERROR_RATE * params.background_probability
        + params.misalignment_error * signal_counts
    )
    return errors / gain(params, intensity)


def single_photon_yield(params: DecoyBB84Params) -> float:
    """Y1 ≈ Y0 + η (MQZL eq. 2, dropping the Y0·η product)."""
    return params.background_probability + params.transmittance


def single_photon_error(params: DecoyBB84Params) -> float:
    """e1 = (e0 Y0 + e_d η) / Y1 (MQZL eq. 6)."""
    return (
        BACKGROUND_ERROR_RATE * params.background_probability
        + params.misalignment_error * params.transmittance
    ) / single_photon_yield(params)


def _gllp_rate(
    f: float, gain_signal: float, qber_signal: float, gain_single: float, error_single: float
) -> float:
    # GLLP with decoy states (MQZL eq. 1): R = q{−Q_μ f H2(E_μ) + Q1 [1 − H2(e1)]}.
    error_single = min(max(error_single, 0.0), 0.5)
    return SIFTING_FRACTION * (
        -gain_signal * f * binary_entropy(qber_signal)
        + gain_single * (1.0 - binary_entropy(error_single))
    )


def _raw_asymptotic_rate(params: DecoyBB84Params) -> float:
    mu = params.signal_intensity
    gain_single = single_photon_yield(params) * mu * math.exp(-mu)
    return _gllp_rate(
        params.error_correction_efficiency,
        gain(params, mu),
        qber(params, mu),
        gain_single,
        single_photon_error(params),
    )


def asymptotic_key_rate(params: DecoyBB84Params) -> float:
    """Secret bits per signal pulse with perfect (infinite) decoy estimation, ≥ 0."""
    return max(0.0, _raw_asymptotic_rate(params))


def secret_key_rate_bps(params: DecoyBB84Params) -> float:
    """Asymptotic secret bits per second: rate per signal pulse × signal pulses per second."""
    return asymptotic_key_rate(params) * params.source_rate_hz * params.signal_probability


def max_distance_km(params: DecoyBB84Params, upper_km: float = 1000.0) -> float:
    """Fibre length at which the asymptotic key rate reaches zero (bisection to 1 m)."""
    low, high = 0.0, upper_km
    if _raw_asymptotic_rate(params.at_length(low)) <= 0.0:
        return 0.0
    if _raw_asymptotic_rate(params.at_length(high)) > 0.0:
        return math.inf
    while high - low > 1e-3:
        middle = 0.5 * (low + high)
        if _raw_asymptotic_rate(params.at_length(middle)) > 0.0:
            low = middle
        else:
            high = middle
    return 0.5 * (low + high)


# --- practical estimators: one weak decoy + vacuum (MQZL section IV.B) --------------------


@dataclass(frozen=True)
class SinglePhotonBounds:
    """Lower bound on the single-photon yield and gain, upper bound on its error rate."""

    yield_lower: float
    error_upper: float
    gain_lower: float


def estimate_single_photon(
    gain_signal: float,
    gain_decoy: float,
    background_yield: float,
    qber_decoy: float,
    signal_intensity: float,
    decoy_intensity: float,
) -> SinglePhotonBounds:
    """Y1^L, e1^U, Q1^L from measured gains and QBERs (MQZL eqs. 34–37).

    Y1^L = μ/(μν − ν²) · [Q_ν e^ν − Q_μ e^μ ν²/μ² − (μ² − ν²)/μ² · Y0],
    e1^U = (E_ν Q_ν e^ν − e0 Y0) / (Y1^L ν), Q1^L = Y1^L μ e^(−μ).
    The bound on e1 uses only the weak decoy, which is what makes it tight as ν → 0;
    E_μ enters the key rate through the error-correction term (`decoy_key_rate`).
    These are the asymptotic estimators: the inputs are taken as the true gains. The
    finite-size version (`qnemu.qkd.decoy_finite`) feeds `single_photon_bounds` the
    worst case of each input instead.
    """
    yield_lower, error_upper, gain_lower = single_photon_bounds(
        gain_signal_upper=gain_signal,
        gain_decoy_lower=gain_decoy,
        background_upper=background_yield,
        decoy_error_gain_upper=qber_decoy * gain_decoy,
        background_lower=background_yield,
        signal_intensity=signal_intensity,
        decoy_intensity=decoy_intensity,
    )
    return SinglePhotonBounds(float(yield_lower), float(error_upper), float(gain_lower))


def single_photon_bounds(
    gain_signal_upper,
    gain_decoy_lower,
    background_upper,
    decoy_error_gain_upper,
    background_lower,
    signal_intensity: float,
    decoy_intensity: float,
):
    """(Y1^L, e1^U, Q1^L) from bounds on the inputs, each taken in its worst direction.

    Y1^L falls with Q_μ and Y0 and rises with Q_ν, so it takes Q_μ^U, Q_ν^L and Y0^U;
    e1^U = ((E_ν Q_ν)^U e^ν − e0 Y0^L) / (Y1^L ν). With every bound equal to the
    measured value this is `estimate_single_photon`. Vectorised (numpy broadcasting);
    where Y1^L ≤ 0 the block certifies nothing: Y1^L = Q1^L = 0, e1^U = 1/2.
    """
    mu, nu = signal_intensity, decoy_intensity
    if not mu > nu > 0.0:
        raise ValueError("need signal_intensity > decoy_intensity > 0")
    yield_lower = (
        mu
        / (mu * nu - nu * nu)
        * (
            np.asarray(gain_decoy_lower, dtype=float) * math.exp(nu)
            - np.asarray(gain_signal_upper, dtype=float) * math.exp(mu) * nu * nu / (mu * mu)
            - (mu * mu - nu * nu) / (mu * mu) * np.asarray(background_upper, dtype=float)
        )
    )
    yield_lower = np.maximum(yield_lower, 0.0)
    certified = yield_lower > 0.0
    numerator = np.asarray(decoy_error_gain_upper, dtype=float) * math.exp(
        nu
    ) - BACKGROUND_ERROR_RATE * np.asarray(background_lower, dtype=float)
    error_upper = np.divide(
        numerator, yield_lower * nu, out=np.full_like(yield_lower, 0.5), where=certified
    )
    error_upper = np.where(certified, np.clip(error_upper, 0.0, 0.5), 0.5)
    return yield_lower, error_upper, yield_lower * mu * math.exp(-mu)


def decoy_key_rate(
    gain_signal: float,
    qber_signal: float,
    bounds: SinglePhotonBounds,
    error_correction_efficiency: float,
) -> float:
    """Secret bits per signal pulse from measured statistics and decoy bounds, ≥ 0."""
    rate = _gllp_rate(
        error_correction_efficiency, gain_signal, qber_signal, bounds.gain_lower, bounds.error_upper
    )
    return max(0.0, rate)


# --- vectorised block sampler ---------------------------------------------------------------


@dataclass(frozen=True)
class DecoyBlock:
    """The detected pulses of a block of `n_pulses` pulses, in emission order.

    Arrays have one entry per detection: intensity class (SIGNAL, DECOY, VACUUM),
    Alice's basis and bit, Bob's basis and bit (0 = Z, 1 = X; uint8). `intercepted` is
    the oracle's record of which detections Eve attacked (for tests and metrics only).
    """

    n_pulses: int
    pulses_per_class: np.ndarray
    intensity_class: np.ndarray
    alice_basis: np.ndarray
    alice_bit: np.ndarray
    bob_basis: np.ndarray
    bob_bit: np.ndarray
    intercepted: np.ndarray

    @property
    def n_detections(self) -> int:
        return int(self.intensity_class.size)


def sample_block(
    params: DecoyBB84Params,
    n_pulses: int,
    rng: np.random.Generator,
    eavesdrop_fraction: float = 0.0,
) -> DecoyBlock:
    """Sample which of `n_pulses` pulses Bob detects and what both sides record.

    Cost scales with the number of detections, not pulses: each pulse is
    independently (class c, detected or not) with probability p_c · P_det(c), so the
    number of detections is binomial, the detections' classes are i.i.d. with weights
    p_c · P_det(c), and the undetected pulses split multinomially among the classes.
    P_det(c) = 1 − (1 − Y0) e^(−η μ_c) (Poisson photon number, each photon detected
    with probability η, independent background). Given a detection, it came from a
    signal photon with probability (1 − e^(−η μ_c)) / P_det(c) — then Bob's bit in a
    matching basis is flipped with probability e_d — otherwise it is a background
    count with a random bit. This reproduces the closed forms up to O(Y0·η) terms.

    Eve's intercept–resend on a fraction of the pulses: she measures in a random basis
    and resends her result, reproducing the photon statistics Bob would have seen (an
    idealised attack that leaves the gain unchanged), so only the QBER betrays her: +f/4
    for e_d = 0 and negligible Y0.
    """
    if n_pulses < 0:
        raise ValueError("n_pulses must be ≥ 0")
    if not 0.0 <= eavesdrop_fraction <= 1.0:
        raise ValueError("eavesdrop_fraction must be in [0, 1]")
    class_probabilities = params.intensity_probabilities
    signal_detection = -np.expm1(-params.transmittance * params.intensities)
    detection = 1.0 - (1.0 - params.background_probability) * np.exp(
        -params.transmittance * params.intensities
    )
    detected_weights = class_probabilities * detection
    p_detected = float(detected_weights.sum())
    n_detected = int(rng.binomial(n_pulses, p_detected))
    undetected_weights = class_probabilities * (1.0 - detection)
    undetected_per_class = rng.multinomial(
        n_pulses - n_detected, undetected_weights / undetected_weights.sum()
    )

    cumulative = np.cumsum(detected_weights / p_detected)
    intensity_class = np.searchsorted(cumulative[:-1], rng.random(n_detected), side="right")
    intensity_class = intensity_class.astype(np.uint8)
    pulses_per_class = undetected_per_class + np.bincount(intensity_class, minlength=3)

    # A class Bob can never detect (vacuum with Y0 = 0) never appears, so 0/0 → 0 is moot.
    signal_share = np.divide(
        signal_detection, detection, out=np.zeros_like(detection), where=detection > 0.0
    )
    from_signal = rng.random(n_detected) < signal_share[intensity_class]
    bits = rng.integers(0, 2, size=(4, n_detected), dtype=np.uint8)
    alice_basis, alice_bit, bob_basis, random_bit = bits
    misaligned = (rng.random(n_detected) < params.misalignment_error).astype(np.uint8)

    # The state reaching Bob: Alice's, or Eve's re-preparation of her measurement result.
    sent_basis, sent_bit = alice_basis, alice_bit
    intercepted = np.zeros(n_detected, dtype=bool)
    if eavesdrop_fraction > 0.0:
        intercepted = (rng.random(n_detected) < eavesdrop_fraction) & from_signal
        eve_basis, eve_guess = rng.integers(0, 2, size=(2, n_detected), dtype=np.uint8)
        eve_bit = np.where(eve_basis == alice_basis, alice_bit, eve_guess)
        sent_basis = np.where(intercepted, eve_basis, alice_basis)
        sent_bit = np.where(intercepted, eve_bit, alice_bit)

    faithful = from_signal & (bob_basis == sent_basis)
    bob_bit = np.where(faithful, sent_bit ^ misaligned, random_bit)
    return DecoyBlock(
        n_pulses=n_pulses,
        pulses_per_class=pulses_per_class,
        intensity_class=intensity_class,
        alice_basis=alice_basis,
        alice_bit=alice_bit,
        bob_basis=bob_basis,
        bob_bit=bob_bit,
        intercepted=intercepted,
    )


@dataclass(frozen=True)
class DecoyStatistics:
    """Measured gain and sifted QBER per intensity class (indexed SIGNAL, DECOY, VACUUM)."""

    pulses: np.ndarray
    detections: np.ndarray
    sifted: np.ndarray
    errors: np.ndarray

    @property
    def gains(self) -> np.ndarray:
        return self.detections / np.maximum(self.pulses, 1)

    @property
    def qbers(self) -> np.ndarray:
        return self.errors / np.maximum(self.sifted, 1)

    def single_photon_bounds(self, params: DecoyBB84Params) -> SinglePhotonBounds:
        gains, qbers = self.gains, self.qbers
        return estimate_single_photon(
            gain_signal=gains[SIGNAL],
            gain_decoy=gains[DECOY],
            background_yield=gains[VACUUM],
            qber_decoy=qbers[DECOY],
            signal_intensity=params.signal_intensity,
            decoy_intensity=params.decoy_intensity,
        )

    def key_rate(self, params: DecoyBB84Params) -> float:
        """Secret bits per signal pulse that these statistics certify (asymptotic)."""
        return decoy_key_rate(
            self.gains[SIGNAL],
            self.qbers[SIGNAL],
            self.single_photon_bounds(params),
            params.error_correction_efficiency,
        )


def block_statistics(block: DecoyBlock) -> DecoyStatistics:
    """Gains and sifted QBERs per class (the parameter-estimation input; uses both sides)."""
    sifted = block.alice_basis == block.bob_basis
    errors = sifted & (block.alice_bit != block.bob_bit)
    return DecoyStatistics(
        pulses=np.asarray(block.pulses_per_class, dtype=np.int64),
        detections=np.bincount(block.intensity_class, minlength=3),
        sifted=np.bincount(block.intensity_class[sifted], minlength=3),
        errors=np.bincount(block.intensity_class[errors], minlength=3),
    )
