"""Optical fibre: propagation delay and loss (standard telecom fibre at 1550 nm)."""

import math
from numbers import Real

__all__ = [
    "DEFAULT_ATTENUATION_DB_PER_KM",
    "SPEED_OF_LIGHT_IN_FIBRE_KM_PER_S",
    "fibre_delay_s",
    "transmittance",
]

# c / n with a group index n ≈ 1.5 for silica fibre.
SPEED_OF_LIGHT_IN_FIBRE_KM_PER_S = 200_000.0
# Typical loss of SMF-28 fibre at 1550 nm.
DEFAULT_ATTENUATION_DB_PER_KM = 0.2


def _check_non_negative(name: str, value: float) -> float:
    # bool is an int subclass; a True length is a topology bug, not 1 km.
    if isinstance(value, bool) or not isinstance(value, Real):
        raise ValueError(f"{name} must be a number, got {value!r}")
    if not math.isfinite(value) or value < 0.0:
        raise ValueError(f"{name} must be a finite number ≥ 0, got {value}")
    return float(value)


def fibre_delay_s(length_km: float) -> float:
    """One-way time of flight of light through `length_km` of fibre."""
    return _check_non_negative("length_km", length_km) / SPEED_OF_LIGHT_IN_FIBRE_KM_PER_S


def transmittance(
    length_km: float, attenuation_db_per_km: float = DEFAULT_ATTENUATION_DB_PER_KM
) -> float:
    """Probability that a photon survives `length_km` of fibre: 10^(−attenuation·L/10)."""
    length_km = _check_non_negative("length_km", length_km)
    attenuation_db_per_km = _check_non_negative("attenuation_db_per_km", attenuation_db_per_km)
    return 10.0 ** (-attenuation_db_per_km * length_km / 10.0)
