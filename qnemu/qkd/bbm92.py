"""BBM92 entanglement-based QKD: QBER and key rate from Bell-diagonal (Werner) pairs.

Bennett, Brassard, Mermin, PRL 68, 557 (1992). Each side measures its half of a pair
in Z or X at random; matching bases give correlated bits. For a Bell-diagonal state
the Z-basis error is the weight of the Ψ states (parities differ) and the X-basis
error the weight of the "minus" states (relative sign −), both taken relative to the
Bell state the pairs are meant to be. Bases: 0 = Z, 1 = X; outcome bit 0 = |0> or |+>.
"""

from dataclasses import dataclass

import numpy as np

from qnemu.physics.bell import BellState
from qnemu.qkd.entropy import binary_entropy

__all__ = [
    "PairOutcomes",
    "bbm92_key_rate",
    "bbm92_qber",
    "qber_from_density",
    "sample_pair_outcomes",
    "werner_bell_weights",
]

_HADAMARD = np.array([[1.0, 1.0], [1.0, -1.0]]) / np.sqrt(2.0)


def bbm92_qber(fidelity: float) -> float:
    """QBER of Werner pairs of fidelity F, the same in Z and X: 2(1 − F)/3."""
    if not 0.0 <= fidelity <= 1.0:
        raise ValueError(f"fidelity must be in [0, 1], got {fidelity}")
    return 2.0 * (1.0 - fidelity) / 3.0


def bbm92_key_rate(qber_z: float, qber_x: float | None = None) -> float:
    """Asymptotic secret bits per sifted bit: 1 − H2(e_Z) − H2(e_X), ≥ 0.

    Shor–Preskill bound (PRL 85, 441 (2000)); the symmetric case e_X = e_Z = Q gives
    1 − 2 H2(Q), which reaches zero at Q ≈ 11.0 %.
    """
    qber_x = qber_z if qber_x is None else qber_x
    return max(0.0, 1.0 - binary_entropy(qber_z) - binary_entropy(qber_x))


def werner_bell_weights(fidelity: float, state: BellState = BellState.PHI_PLUS) -> np.ndarray:
    """Weights of the four Bell states (indexed by BellState value) in a Werner state."""
    weights = np.full(4, (1.0 - fidelity) / 3.0)
    weights[int(state)] = fidelity
    return weights


def qber_from_density(density: np.ndarray, state: BellState = BellState.PHI_PLUS) -> tuple:
    """(Z-basis, X-basis) QBER of a two-qubit density matrix against Bell state `state`.

    Born rule: the probability that the two outcomes disagree with the parity the
    reference state would give, computed directly from ρ (a reference for the sampler).
    """
    state = BellState(state)
    density = np.asarray(density, dtype=complex)
    diagonal_z = np.real(np.diag(density))
    rotate = np.kron(_HADAMARD, _HADAMARD)
    diagonal_x = np.real(np.diag(rotate @ density @ rotate.conj().T))
    # Index 1 (01) and 2 (10) have differing bits.
    differ_z = diagonal_z[1] + diagonal_z[2]
    differ_x = diagonal_x[1] + diagonal_x[2]
    z_parity, x_parity = state & 1, (state >> 1) & 1
    qber_z = 1.0 - differ_z if z_parity else differ_z
    qber_x = 1.0 - differ_x if x_parity else differ_x
    return float(qber_z), float(qber_x)


@dataclass(frozen=True)
class PairOutcomes:
    """Both sides' bases and bits for a batch of measured pairs (uint8 arrays)."""

    alice_basis: np.ndarray
    alice_bit: np.ndarray
    bob_basis: np.ndarray
    bob_bit: np.ndarray


def sample_pair_outcomes(
    bell_weights: np.ndarray,
    n_pairs: int,
    rng: np.random.Generator,
    reference: BellState = BellState.PHI_PLUS,
) -> PairOutcomes:
    """Measure `n_pairs` Bell-diagonal pairs in random Z/X bases (vectorised).

    A Bell-diagonal state is a mixture of Bell states, so each pair is a Bell state
    drawn with the given weights. For Bell state B = (x_bit, z_bit): in Z, Alice's bit
    is uniform and Bob's differs by z_bit; in X, Bob's differs by x_bit; in different
    bases Bob's bit is uniform. Bob then flips his bit by the reference state's parity
    in his basis, so that a perfect pair of the reference state gives equal bits.
    """
    weights = np.asarray(bell_weights, dtype=float)
    if weights.shape != (4,) or np.any(weights < 0.0) or not np.isclose(weights.sum(), 1.0):
        raise ValueError("bell_weights must be four non-negative numbers summing to 1")
    cumulative = np.cumsum(weights)
    bell = np.searchsorted(cumulative[:-1], rng.random(n_pairs), side="right").astype(np.uint8)
    alice_basis, alice_bit, bob_basis, random_bit = rng.integers(
        0, 2, size=(4, n_pairs), dtype=np.uint8
    )
    reference = BellState(reference)
    # In basis b (0 = Z, 1 = X) the relevant parity bit of Bell state s is (s >> b) & 1.
    parity = (bell >> bob_basis) & 1
    reference_parity = (np.uint8(reference) >> bob_basis) & 1
    correlated = alice_bit ^ parity ^ reference_parity
    bob_bit = np.where(alice_basis == bob_basis, correlated, random_bit).astype(np.uint8)
    return PairOutcomes(alice_basis, alice_bit, bob_basis, bob_bit)
