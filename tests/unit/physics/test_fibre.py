"""Fibre delay and loss against their closed forms."""

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qnemu.physics.fibre import (
    DEFAULT_ATTENUATION_DB_PER_KM,
    SPEED_OF_LIGHT_IN_FIBRE_KM_PER_S,
    fibre_delay_s,
    transmittance,
)


def test_constants():
    assert SPEED_OF_LIGHT_IN_FIBRE_KM_PER_S == 200_000.0
    assert DEFAULT_ATTENUATION_DB_PER_KM == 0.2


@pytest.mark.parametrize(("length_km", "delay_s"), [(0, 0.0), (200.0, 1e-3), (10, 5e-5)])
def test_delay_is_length_over_speed(length_km, delay_s):
    assert fibre_delay_s(length_km) == pytest.approx(delay_s, rel=1e-12, abs=0.0)


@pytest.mark.parametrize(
    ("length_km", "attenuation_db_per_km", "expected"),
    [(0.0, 0.2, 1.0), (50.0, 0.2, 0.1), (100.0, 0.2, 0.01), (10.0, 0.3, 10**-0.3), (5.0, 0.0, 1.0)],
)
def test_transmittance_is_ten_to_minus_loss_over_ten(length_km, attenuation_db_per_km, expected):
    assert transmittance(length_km, attenuation_db_per_km) == pytest.approx(expected, rel=1e-12)


def test_transmittance_default_attenuation_is_0_2_db_per_km():
    assert transmittance(25.0) == pytest.approx(10**-0.5, rel=1e-12)


@given(
    st.floats(min_value=0, max_value=500),
    st.floats(min_value=0, max_value=500),
    st.floats(min_value=0, max_value=1),
)
def test_loss_adds_in_db_over_concatenated_fibres(first_km, second_km, attenuation_db_per_km):
    joined = transmittance(first_km + second_km, attenuation_db_per_km)
    product = transmittance(first_km, attenuation_db_per_km) * transmittance(
        second_km, attenuation_db_per_km
    )
    assert joined == pytest.approx(product, rel=1e-9, abs=1e-300)


@pytest.mark.parametrize("bad", [-1.0, -1e-9, math.nan, math.inf, True, "10", None])
def test_bad_length_is_rejected_by_name(bad):
    with pytest.raises(ValueError, match="length_km"):
        fibre_delay_s(bad)
    with pytest.raises(ValueError, match="length_km"):
        transmittance(bad)


def test_negative_attenuation_is_rejected_by_name():
    with pytest.raises(ValueError, match="attenuation_db_per_km"):
        transmittance(1.0, -0.1)
