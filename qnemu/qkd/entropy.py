"""Binary entropy and the sampling bounds used in QKD parameter estimation."""

import math

import numpy as np

__all__ = [
    "binary_entropy",
    "chernoff_count_lower",
    "chernoff_count_upper",
    "chernoff_mean_lower",
    "chernoff_mean_upper",
    "hoeffding_deviation",
    "serfling_deviation",
]


def binary_entropy(probability: float | np.ndarray) -> float | np.ndarray:
    """H2(p) = −p log2 p − (1 − p) log2(1 − p) in bits, with H2(0) = H2(1) = 0.

    Vectorised over arrays; values outside [0, 1] are a caller bug and raise.
    """
    p = np.asarray(probability, dtype=float)
    if np.any((p < 0.0) | (p > 1.0)) or np.any(np.isnan(p)):
        raise ValueError(f"probability must be in [0, 1], got {probability}")
    # Clip away from the edges so log2 stays finite; the clipped terms vanish anyway
    # because x·log2(x) → 0 as x → 0.
    inner = np.clip(p, 1e-300, 1.0 - 1e-16)
    h = -p * np.log2(inner) - (1.0 - p) * np.log2(1.0 - inner)
    h = np.where((p == 0.0) | (p == 1.0), 0.0, h)
    return float(h) if h.ndim == 0 else h


def hoeffding_deviation(sample_size: int, epsilon: float) -> float:
    """δ with P(observed mean − true mean ≥ δ) ≤ ε for n i.i.d. bits (Hoeffding 1963)."""
    if sample_size <= 0:
        raise ValueError("sample_size must be positive")
    _check_epsilon(epsilon)
    return math.sqrt(math.log(1.0 / epsilon) / (2.0 * sample_size))


def serfling_deviation(sample_size: int, remaining_size: int, epsilon: float) -> float:
    """δ bounding the error rate of the unsampled bits: e_rest ≤ e_sample + δ except with ε.

    Random sampling without replacement of k = sample_size bits out of k + n, n =
    remaining_size (Serfling 1974, in the form of Tomamichel, Lim, Gisin, Renner,
    Nat. Commun. 3, 634 (2012), eq. (2)): δ = sqrt((n + k)(k + 1) ln(1/ε) / (n k²)).
    """
    k, n = sample_size, remaining_size
    if k <= 0 or n <= 0:
        raise ValueError("sample_size and remaining_size must be positive")
    _check_epsilon(epsilon)
    return math.sqrt((n + k) * (k + 1) * math.log(1.0 / epsilon) / (n * k * k))


# Multiplicative Chernoff bounds for a count X, a sum of independent 0/1 trials with
# E[X] = m (Chernoff, Ann. Math. Stat. 23, 493 (1952); the forms of Mitzenmacher and
# Upfal, "Probability and Computing", thms 4.4 and 4.5, the upper one for every δ > 0
# from ln(1 + δ) ≥ 2δ/(2 + δ)):
#     P(X ≤ (1 − δ) m) ≤ exp(−δ² m / 2),      P(X ≥ (1 + δ) m) ≤ exp(−δ² m / (2 + δ)).
# Setting each right side to ε and solving for m (or for X) gives the four closed forms
# below, with L = ln(1/ε). Unlike Hoeffding's additive bound, their width scales with
# √(count), not √(trials): what makes them usable for the few counts of vacuum pulses.
# Vectorised: counts may be numpy arrays.


def chernoff_mean_upper(observed, epsilon: float):
    """m^U = x + L + √(L² + 2Lx): E[X] ≤ m^U except with probability ε, given X = x."""
    log_inv = _log_inverse(epsilon)
    x = np.asarray(observed, dtype=float)
    return x + log_inv + np.sqrt(log_inv * log_inv + 2.0 * log_inv * x)


def chernoff_mean_lower(observed, epsilon: float):
    """m^L = x + L/2 − √(L²/4 + 2Lx) (≥ 0): E[X] ≥ m^L except with probability ε."""
    log_inv = _log_inverse(epsilon)
    x = np.asarray(observed, dtype=float)
    return np.maximum(
        0.0, x + 0.5 * log_inv - np.sqrt(0.25 * log_inv * log_inv + 2.0 * log_inv * x)
    )


def chernoff_count_lower(mean, epsilon: float):
    """X ≥ m − √(2Lm) (≥ 0) except with probability ε, for a count of mean m."""
    log_inv = _log_inverse(epsilon)
    m = np.asarray(mean, dtype=float)
    return np.maximum(0.0, m - np.sqrt(2.0 * log_inv * m))


def chernoff_count_upper(mean, epsilon: float):
    """X ≤ m + (L + √(L² + 8Lm))/2 except with probability ε, for a count of mean m."""
    log_inv = _log_inverse(epsilon)
    m = np.asarray(mean, dtype=float)
    return m + 0.5 * (log_inv + np.sqrt(log_inv * log_inv + 8.0 * log_inv * m))


def _log_inverse(epsilon: float) -> float:
    # ε = 1 is allowed here: L = 0, no margin (the asymptotic limit, for comparisons).
    if not 0.0 < epsilon <= 1.0:
        raise ValueError(f"epsilon must be in (0, 1], got {epsilon}")
    return math.log(1.0 / epsilon)


def _check_epsilon(epsilon: float) -> None:
    if not 0.0 < epsilon < 1.0:
        raise ValueError(f"epsilon must be in (0, 1), got {epsilon}")
