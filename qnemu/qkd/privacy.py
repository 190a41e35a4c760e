"""Verification hashing and privacy amplification with Toeplitz matrices over GF(2) (FFT).

A Toeplitz matrix T (m × n, T[i, j] = seed[i − j + n − 1]) drawn from a uniform seed
of n + m − 1 bits is a 2-universal hash family (Krawczyk, CRYPTO '94): two different
keys collide with probability 2^(−m). Used twice: a short tag (m = 64) to verify that
error correction succeeded, and a long output (m = ℓ) as the privacy-amplification
extractor (leftover hash lemma). T·x mod 2 is the middle of the linear convolution of
seed and x, computed with a real FFT and rounded: exact while the float64 rounding
error stays below 1/2, which is checked, and the input split in halves if it is not.
"""

import math

import numpy as np

from qnemu.qkd.entropy import binary_entropy

__all__ = [
    "DEFAULT_EPSILON_PA",
    "DEFAULT_VERIFICATION_BITS",
    "privacy_amplification",
    "secret_key_length",
    "seed_bits",
    "toeplitz_hash",
    "verification_tag",
]

DEFAULT_VERIFICATION_BITS = 64
# Distance from a uniform key that privacy amplification guarantees.
DEFAULT_EPSILON_PA = 1e-10
# Largest tolerated distance of an FFT convolution value from an integer.
_ROUNDING_TOLERANCE = 0.25


def seed_bits(seed: int, length: int) -> np.ndarray:
    """`length` uniform bits from an integer seed both sides share (uint8)."""
    return np.random.default_rng(seed).integers(0, 2, size=length, dtype=np.uint8)


def toeplitz_hash(bits: np.ndarray, seed: np.ndarray, output_bits: int) -> np.ndarray:
    """T·x mod 2 for the m × n Toeplitz matrix T[i, j] = seed[i − j + n − 1].

    Args:
        bits: the input x, n bits (0/1 array).
        seed: n + m − 1 bits defining T.
        output_bits: m.
    """
    x = np.asarray(bits, dtype=np.uint8)
    seed = np.asarray(seed, dtype=np.uint8)
    n, m = x.size, int(output_bits)
    if m < 0:
        raise ValueError("output_bits must be ≥ 0")
    if seed.size != n + m - 1 and not (n == 0 or m == 0):
        raise ValueError(f"seed must have n + m − 1 = {n + m - 1} bits, got {seed.size}")
    if n == 0 or m == 0:
        return np.zeros(m, dtype=np.uint8)
    return _toeplitz_product(x, seed, m)


def fft_size(minimum: int) -> int:
    """The smallest 2^a·3^b·5^c ≥ `minimum`: sizes the FFT does fast, closer than 2^k.

    2^20 bits hashed to 2^19 need 3·2^19 points instead of 2^21, a quarter fewer.
    """
    best = 1 << max(0, minimum - 1).bit_length()
    five = 1
    while five < best:
        three = five
        while three < best:
            size = three << max(0, (minimum - 1) // three).bit_length()
            best = min(best, size)
            three *= 3
        five *= 5
    return best


def _toeplitz_product(x: np.ndarray, seed: np.ndarray, m: int) -> np.ndarray:
    n = x.size
    # Output i is the linear convolution at index i + n − 1; a circular one of size
    # ≥ n + m − 1 leaves those indices free of wrap-around.
    size = fft_size(n + m - 1)
    spectrum = np.fft.rfft(seed.astype(np.float64), size) * np.fft.rfft(x.astype(np.float64), size)
    values = np.fft.irfft(spectrum, size)[n - 1 : n - 1 + m]
    rounded = np.rint(values)
    if n > 1 and np.max(np.abs(values - rounded), initial=0.0) > _ROUNDING_TOLERANCE:
        # Columns [0, h) and [h, n) of T are Toeplitz matrices themselves, with seeds
        # the matching slices of the seed; their products add mod 2.
        half = n // 2
        left = _toeplitz_product(x[:half], seed[n - half : n + m - 1], m)
        right = _toeplitz_product(x[half:], seed[: n - half + m - 1], m)
        return left ^ right
    return (rounded.astype(np.int64) & 1).astype(np.uint8)


def verification_tag(
    key_bits: np.ndarray, seed: int, tag_bits: int = DEFAULT_VERIFICATION_BITS
) -> np.ndarray:
    """A `tag_bits` universal-hash tag: two different keys collide with probability 2^−tag_bits."""
    key_bits = np.asarray(key_bits, dtype=np.uint8)
    return toeplitz_hash(key_bits, seed_bits(seed, key_bits.size + tag_bits - 1), tag_bits)


def privacy_amplification(key_bits: np.ndarray, output_bits: int, seed: int) -> np.ndarray:
    """Compress the reconciled key to `output_bits` bits with a seeded Toeplitz hash."""
    key_bits = np.asarray(key_bits, dtype=np.uint8)
    if not 0 <= output_bits <= key_bits.size:
        raise ValueError(f"output_bits must be in [0, {key_bits.size}], got {output_bits}")
    return toeplitz_hash(key_bits, seed_bits(seed, key_bits.size + output_bits - 1), output_bits)


def secret_key_length(
    n_bits: int,
    leaked_ec_bits: int,
    phase_error_upper: float,
    single_photon_bits: float | None = None,
    verification_bits: int = DEFAULT_VERIFICATION_BITS,
    epsilon_pa: float = DEFAULT_EPSILON_PA,
) -> int:
    """Privacy-amplification output length ℓ (≥ 0) for a reconciled key of `n_bits`.

    ℓ = ⌊s·(1 − H2(e_ph)) − leak_EC − verification_bits − 2 log2(1/ε_PA)⌋, where e_ph
    is the upper bound on the phase error rate (BB84/BBM92: the QBER bound; decoy
    BB84: e1^U of the single-photon pulses), s = n_bits, or the lower bound on the
    single-photon bits in the key for decoy BB84 (GLLP, whose multi-photon bits count
    as fully known to Eve). Everything revealed is subtracted (the Cascade parities
    and the verification tag); 2 log2(1/ε_PA) is the leftover-hash-lemma margin
    (Renner, PhD thesis, ETH 2005; Tomamichel et al., Nat. Commun. 3, 634 (2012)).
    """
    if n_bits < 0 or leaked_ec_bits < 0:
        raise ValueError("n_bits and leaked_ec_bits must be ≥ 0")
    if not 0.0 < epsilon_pa < 1.0:
        raise ValueError("epsilon_pa must be in (0, 1)")
    protected = n_bits if single_photon_bits is None else min(float(single_photon_bits), n_bits)
    phase_error = min(max(phase_error_upper, 0.0), 0.5)
    length = (
        protected * (1.0 - binary_entropy(phase_error))
        - leaked_ec_bits
        - verification_bits
        - 2.0 * math.log2(1.0 / epsilon_pa)
    )
    return max(0, math.floor(length))
