"""Sifting and QBER estimation: keep matching bases, sacrifice a random sample to bound errors.

In the protocol Bob announces his bases, Alice answers which match (`sift_indices`);
Bob picks a random subset of the sifted bits and reveals them (`choose_sample`);
Alice counts disagreements and both keep the rest (`estimate_qber`). Bits and bases
are numpy uint8 arrays (0 = Z, 1 = X for bases).
"""

from dataclasses import dataclass

import numpy as np

from qnemu.qkd.entropy import serfling_deviation

__all__ = [
    "DEFAULT_EPSILON_PE",
    "QberEstimate",
    "choose_sample",
    "estimate_qber",
    "sample_and_estimate",
    "sift_indices",
]

# Failure probability of the parameter-estimation bound.
DEFAULT_EPSILON_PE = 1e-10


def sift_indices(alice_basis: np.ndarray, bob_basis: np.ndarray) -> np.ndarray:
    """Indices of the detections where both sides used the same basis."""
    alice_basis, bob_basis = np.asarray(alice_basis), np.asarray(bob_basis)
    if alice_basis.shape != bob_basis.shape:
        raise ValueError(f"basis arrays differ in shape: {alice_basis.shape} vs {bob_basis.shape}")
    return np.flatnonzero(alice_basis == bob_basis)


def choose_sample(
    n_bits: int, sample_size: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(sample, kept) index arrays, both sorted: a uniformly random `sample_size` subset."""
    if not 0 <= sample_size <= n_bits:
        raise ValueError(f"sample_size must be in [0, {n_bits}], got {sample_size}")
    chosen = np.zeros(n_bits, dtype=bool)
    chosen[rng.choice(n_bits, size=sample_size, replace=False)] = True
    return np.flatnonzero(chosen), np.flatnonzero(~chosen)


@dataclass(frozen=True)
class QberEstimate:
    """Errors seen in the sacrificed sample and an upper bound on the kept bits' QBER."""

    sample_size: int
    errors: int
    remaining_size: int
    qber_upper: float
    epsilon: float

    @property
    def qber(self) -> float:
        return self.errors / self.sample_size if self.sample_size else 0.0


def estimate_qber(
    alice_sample: np.ndarray,
    bob_sample: np.ndarray,
    remaining_size: int,
    epsilon: float = DEFAULT_EPSILON_PE,
) -> QberEstimate:
    """Count sample errors; bound the QBER of the `remaining_size` unrevealed bits.

    e_rest ≤ e_sample + δ except with probability ε, with δ the Serfling deviation for
    sampling without replacement (`entropy.serfling_deviation`). Capped at 1/2.
    """
    alice_sample, bob_sample = np.asarray(alice_sample), np.asarray(bob_sample)
    if alice_sample.shape != bob_sample.shape:
        raise ValueError("sample arrays differ in shape")
    sample_size = int(alice_sample.size)
    errors = int(np.count_nonzero(alice_sample != bob_sample))
    if sample_size == 0 or remaining_size == 0:
        upper = 0.5
    else:
        deviation = serfling_deviation(sample_size, remaining_size, epsilon)
        upper = min(0.5, errors / sample_size + deviation)
    return QberEstimate(sample_size, errors, int(remaining_size), upper, epsilon)


def sample_and_estimate(
    alice_bits: np.ndarray,
    bob_bits: np.ndarray,
    sample_size: int,
    rng: np.random.Generator,
    epsilon: float = DEFAULT_EPSILON_PE,
) -> tuple[QberEstimate, np.ndarray, np.ndarray]:
    """Both sides at once: estimate on a random sample; (estimate, Alice's rest, Bob's rest)."""
    alice_bits, bob_bits = np.asarray(alice_bits), np.asarray(bob_bits)
    if alice_bits.shape != bob_bits.shape:
        raise ValueError("key arrays differ in shape")
    sample, kept = choose_sample(alice_bits.size, sample_size, rng)
    estimate = estimate_qber(alice_bits[sample], bob_bits[sample], kept.size, epsilon)
    return estimate, alice_bits[kept], bob_bits[kept]
