"""Toeplitz hashing via FFT against the direct GF(2) product; key length formula."""

import math

import numpy as np
import pytest

from qnemu.qkd import privacy
from qnemu.qkd.privacy import (
    privacy_amplification,
    secret_key_length,
    seed_bits,
    toeplitz_hash,
    verification_tag,
)


def _direct(bits: np.ndarray, seed: np.ndarray, m: int) -> np.ndarray:
    n = bits.size
    rows, cols = np.indices((m, n))
    matrix = seed[rows - cols + n - 1].astype(np.int64)
    return (matrix @ bits.astype(np.int64) % 2).astype(np.uint8)


@pytest.mark.parametrize(
    ("n", "m"), [(1, 1), (1, 5), (7, 3), (64, 64), (300, 17), (513, 400), (1024, 512), (2000, 1001)]
)
def test_fft_product_equals_direct_matrix_product(n, m):
    rng = np.random.default_rng(n * 1000 + m)
    bits = rng.integers(0, 2, n, dtype=np.uint8)
    seed = rng.integers(0, 2, n + m - 1, dtype=np.uint8)
    np.testing.assert_array_equal(toeplitz_hash(bits, seed, m), _direct(bits, seed, m))


def test_fft_size_is_the_smallest_fast_size():
    def fast(size: int) -> bool:
        for prime in (2, 3, 5):
            while size % prime == 0:
                size //= prime
        return size == 1

    for minimum in [*range(1, 2_000), 24_575, 1_572_863, 1_572_865]:
        size = privacy.fft_size(minimum)
        assert size >= minimum and fast(size)
        assert not any(fast(smaller) for smaller in range(minimum, size))
    assert privacy.fft_size((1 << 20) + (1 << 19) - 1) == 3 << 19


def test_matrix_is_toeplitz_as_documented():
    # T[i, j] = seed[i − j + n − 1]: unit vectors pick out the columns.
    n, m = 5, 4
    seed = seed_bits(3, n + m - 1)
    for j in range(n):
        unit = np.zeros(n, dtype=np.uint8)
        unit[j] = 1
        np.testing.assert_array_equal(toeplitz_hash(unit, seed, m), seed[n - 1 - j : n - 1 - j + m])


def test_hash_is_linear_over_gf2():
    rng = np.random.default_rng(9)
    n, m = 10_000, 4_000
    seed = rng.integers(0, 2, n + m - 1, dtype=np.uint8)
    a = rng.integers(0, 2, n, dtype=np.uint8)
    b = rng.integers(0, 2, n, dtype=np.uint8)
    np.testing.assert_array_equal(
        toeplitz_hash(a ^ b, seed, m), toeplitz_hash(a, seed, m) ^ toeplitz_hash(b, seed, m)
    )


def test_split_fallback_gives_the_same_product(monkeypatch):
    rng = np.random.default_rng(4)
    n, m = 1_000, 300
    bits = rng.integers(0, 2, n, dtype=np.uint8)
    seed = rng.integers(0, 2, n + m - 1, dtype=np.uint8)
    expected = _direct(bits, seed, m)
    # Force the "FFT not exact" branch all the way down to single columns.
    monkeypatch.setattr(privacy, "_ROUNDING_TOLERANCE", -1.0)
    np.testing.assert_array_equal(toeplitz_hash(bits, seed, m), expected)


def test_fft_is_exact_at_a_million_bits():
    rng = np.random.default_rng(5)
    n, m = 1_000_000, 64
    bits = rng.integers(0, 2, n, dtype=np.uint8)
    seed = rng.integers(0, 2, n + m - 1, dtype=np.uint8)
    # Spot-check rows against the direct sum: row i = seed[i + n − 1 − j]·x_j.
    result = toeplitz_hash(bits, seed, m)
    for i in (0, 31, 63):
        row = seed[i : i + n][::-1]
        assert result[i] == int(row.astype(np.int64) @ bits) % 2


def test_verification_tag_detects_a_single_flipped_bit():
    rng = np.random.default_rng(6)
    key = rng.integers(0, 2, 50_000, dtype=np.uint8)
    tag = verification_tag(key, seed=42)
    assert tag.size == 64
    np.testing.assert_array_equal(tag, verification_tag(key.copy(), seed=42))
    flipped = key.copy()
    flipped[12_345] ^= 1
    assert not np.array_equal(tag, verification_tag(flipped, seed=42))


def test_privacy_amplification_output_and_balance():
    rng = np.random.default_rng(7)
    key = rng.integers(0, 2, 20_000, dtype=np.uint8)
    out = privacy_amplification(key, 8_000, seed=1)
    assert out.size == 8_000 and out.dtype == np.uint8
    ones = int(out.sum())
    assert abs(ones - 4_000) <= 5 * math.sqrt(8_000 * 0.25)
    np.testing.assert_array_equal(out, privacy_amplification(key, 8_000, seed=1))
    assert not np.array_equal(out, privacy_amplification(key, 8_000, seed=2))
    with pytest.raises(ValueError):
        privacy_amplification(key, 20_001, seed=1)


def test_secret_key_length_formula():
    n, leak, e = 100_000, 20_000, 0.03
    h = -e * math.log2(e) - (1 - e) * math.log2(1 - e)
    expected = math.floor(n * (1 - h) - leak - 64 - 2 * math.log2(1e10))
    assert secret_key_length(n, leak, e) == expected
    # Decoy BB84: only single-photon bits count, with their own phase error.
    assert secret_key_length(n, leak, 0.05, single_photon_bits=60_000) == math.floor(
        60_000 * (1 - (-0.05 * math.log2(0.05) - 0.95 * math.log2(0.95)))
        - leak
        - 64
        - 2 * math.log2(1e10)
    )
    assert secret_key_length(n, leak, 0.11) >= 0
    assert secret_key_length(1_000, 900, 0.2) == 0
    with pytest.raises(ValueError):
        secret_key_length(-1, 0, 0.1)
