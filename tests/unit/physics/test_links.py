"""Link models against their closed forms, limits and sampling statistics."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qnemu.physics.bell import BellState, bell_density, werner_state
from qnemu.physics.links import (
    MODELS,
    LinkPhysics,
    depolarise,
    heralded_double_click,
    heralded_single_click,
    link_physics,
    perfect,
)

C_KM_PER_S = 200_000.0
REL = 1e-12  # closed forms are evaluated exactly; only float rounding separates them


def eta(node_efficiency, arm_km, attenuation_db_per_km=0.2):
    return node_efficiency * 10 ** (-attenuation_db_per_km * arm_km / 10)


def assert_density_matrix(rho):
    assert rho.shape == (4, 4)
    np.testing.assert_allclose(rho, rho.conj().T, atol=1e-12)
    assert np.trace(rho).real == pytest.approx(1.0, abs=1e-12)
    assert np.linalg.eigvalsh(rho).min() >= -1e-12


def bell_fidelity(rho, state):
    return float(np.real(np.trace(rho @ bell_density(state))))


# --- perfect and depolarise ----------------------------------------------------------------


def test_perfect_always_succeeds_with_phi_plus():
    link = perfect()
    assert link.model == "perfect"
    assert link.success_probability == 1.0
    assert link.fidelity == pytest.approx(1.0, abs=1e-12)
    assert link.herald_bell_states == (BellState.PHI_PLUS,)
    np.testing.assert_allclose(
        link.delivered_state(BellState.PHI_PLUS), bell_density(BellState.PHI_PLUS), atol=1e-12
    )
    assert link.attempt_period_s == 1e-6
    assert link.expected_rate_hz == pytest.approx(1e6, rel=REL)
    assert link.sample_attempts(np.random.default_rng(1)) == 1


def test_perfect_attempt_period_is_the_round_trip_to_a_midpoint_source():
    # max(t_cycle, 2 · (L/2) / c): 100 km → 0.5 ms.
    assert perfect(length_km=100).attempt_period_s == pytest.approx(100 / C_KM_PER_S, rel=REL)
    assert perfect(length_km=100, t_cycle_s=0.01).attempt_period_s == 0.01


def test_depolarise_delivers_a_werner_state():
    link = depolarise(fidelity=0.8, prob_success=0.25, t_cycle_s=1e-3)
    assert link.model == "depolarise"
    assert link.success_probability == 0.25
    assert link.fidelity == pytest.approx(0.8, rel=REL)
    np.testing.assert_allclose(link.delivered_state(BellState.PHI_PLUS), werner_state(0.8))
    assert link.expected_rate_hz == pytest.approx(250.0, rel=REL)


@pytest.mark.parametrize(
    ("params", "name"),
    [
        ({"fidelity": 1.1, "prob_success": 0.5}, "fidelity"),
        ({"fidelity": 0.9, "prob_success": 0.0}, "prob_success"),
        ({"fidelity": 0.9, "prob_success": 1.5}, "prob_success"),
        ({"fidelity": 0.9, "prob_success": 0.5, "t_cycle_s": 0.0}, "t_cycle_s"),
        ({"fidelity": 0.9, "prob_success": 0.5, "length_km": -1}, "length_km"),
        ({"fidelity": True, "prob_success": 0.5}, "fidelity"),
    ],
)
def test_depolarise_rejects_bad_parameters_by_name(params, name):
    with pytest.raises(ValueError, match=name):
        depolarise(**params)


# --- heralded single-click ---------------------------------------------------------------


def test_single_click_matches_the_issue_formulas():
    alpha, efficiency, length_km = 0.05, 0.1, 10.0
    link = heralded_single_click(
        length_km=length_km, node_efficiency=efficiency, bright_state_alpha=alpha
    )
    e = eta(efficiency, length_km / 2)
    assert link.success_probability == pytest.approx(1 - (1 - alpha * e) ** 2, rel=REL)
    assert link.fidelity == pytest.approx(2 * (1 - alpha) / (2 - alpha * e), rel=REL)
    assert link.herald_bell_states == (BellState.PSI_PLUS, BellState.PSI_MINUS)
    for state in link.herald_bell_states:
        rho = link.delivered_state(state)
        assert bell_fidelity(rho, state) == pytest.approx(link.fidelity, rel=REL)
        # The only error with V = 1 and no dark counts: both nodes bright, |00>.
        assert rho[0, 0].real == pytest.approx(1 - link.fidelity, rel=1e-9)
        assert abs(rho[3, 3]) < 1e-15
    # Ψ− is Ψ+ with a Z on node_a: same populations, opposite coherence.
    plus, minus = (link.delivered_state(s) for s in link.herald_bell_states)
    np.testing.assert_allclose(np.diag(plus), np.diag(minus), atol=1e-15)
    assert minus[1, 2] == pytest.approx(-plus[1, 2], rel=REL)


def test_single_click_with_unequal_arms():
    alpha, efficiency = 0.1, 0.5
    link = heralded_single_click(
        length_km=30, station_position_km=5, node_efficiency=efficiency, bright_state_alpha=alpha
    )
    eta_a, eta_b = eta(efficiency, 5), eta(efficiency, 25)
    p = 1 - (1 - alpha * eta_a) * (1 - alpha * eta_b)
    assert link.success_probability == pytest.approx(p, rel=REL)
    # Unbalanced arms give an unbalanced Ψ: F = α(1−α)(√η_a + √η_b)² / (2p).
    expected_f = alpha * (1 - alpha) * (math.sqrt(eta_a) + math.sqrt(eta_b)) ** 2 / (2 * p)
    assert link.fidelity == pytest.approx(expected_f, rel=REL)
    assert link.attempt_period_s == pytest.approx(2 * 25 / C_KM_PER_S, rel=REL)


def test_single_click_visibility_scales_the_coherence_by_sqrt_v():
    alpha, e, v = 0.1, 0.3, 0.81
    ideal = heralded_single_click(length_km=0, node_efficiency=e, bright_state_alpha=alpha)
    link = heralded_single_click(
        length_km=0, node_efficiency=e, bright_state_alpha=alpha, visibility=v
    )
    # Single-photon interference keeps |<φa|φb>| = √V of the |01><10| coherence …
    rho = link.delivered_state(BellState.PSI_PLUS)
    assert rho[1, 2].real / rho[1, 1].real == pytest.approx(math.sqrt(v), rel=1e-9)
    # … and two bright photons bunch only with probability (1 + V)/2 (else both detectors click).
    psi_weight = alpha * (1 - alpha) * e  # per detector
    both_weight = alpha**2 * (e * (1 - e) + e**2 * (1 + v) / 4)  # per detector
    p = 2 * (psi_weight + both_weight)
    assert link.success_probability == pytest.approx(p, rel=REL)
    assert link.fidelity == pytest.approx(psi_weight * (1 + math.sqrt(v)) / p, rel=REL)
    assert link.fidelity < ideal.fidelity


def test_single_click_fidelity_falls_monotonically_with_visibility():
    fidelities = [
        heralded_single_click(
            length_km=10, node_efficiency=0.2, bright_state_alpha=0.1, visibility=v
        ).fidelity
        for v in (1.0, 0.9, 0.5, 0.0)
    ]
    assert fidelities == sorted(fidelities, reverse=True)
    assert len(set(fidelities)) == 4


def test_single_click_dark_counts_match_closed_form():
    alpha, e, d = 0.1, 0.05, 1e-3
    link = heralded_single_click(
        length_km=0, node_efficiency=e, bright_state_alpha=alpha, dark_count_probability=d
    )
    # A herald is exactly one click: a photon at one detector and no dark count at the other,
    # or no photon at all (probability (1 − αη)², both nodes) and a dark count at one detector.
    no_photon = (1 - alpha * e) ** 2
    p = (1 - d) * (1 - no_photon) + 2 * d * (1 - d) * no_photon
    assert link.success_probability == pytest.approx(p, rel=REL)
    # With no photon the spins are a diagonal mixture whose |01>, |10> weights are α(1−α)(1−η).
    good = (1 - d) * alpha * (1 - alpha) * e + d * (1 - d) * alpha * (1 - alpha) * (1 - e)
    assert link.fidelity == pytest.approx(good / (p / 2), rel=REL)


def test_single_click_dark_count_limits():
    base = {"length_km": 20, "node_efficiency": 0.1, "bright_state_alpha": 0.05}
    clean = heralded_single_click(**base)
    zero = heralded_single_click(**base, dark_count_probability=0.0)
    assert zero.success_probability == clean.success_probability
    assert zero.fidelity == clean.fidelity
    links = [heralded_single_click(**base, dark_count_probability=d) for d in (1e-5, 1e-3, 0.1)]
    fidelities = [clean.fidelity] + [link.fidelity for link in links]
    assert fidelities == sorted(fidelities, reverse=True)
    assert len(set(fidelities)) == 4
    # Dark counts dominate the heralds: the pair is mostly the no-photon state |11>.
    assert links[-1].fidelity < 0.2
    assert links[0].success_probability > clean.success_probability


# --- heralded double-click (Barrett–Kok) ---------------------------------------------------


def test_double_click_matches_the_issue_formulas():
    link = heralded_double_click(length_km=10, node_efficiency=0.4)
    e = eta(0.4, 5)
    assert link.success_probability == pytest.approx(e**2 / 2, rel=REL)
    assert link.fidelity == pytest.approx(1.0, abs=1e-12)
    for state in (BellState.PSI_PLUS, BellState.PSI_MINUS):
        np.testing.assert_allclose(link.delivered_state(state), bell_density(state), atol=1e-12)


def test_double_click_with_unequal_arms():
    link = heralded_double_click(length_km=40, station_position_km=30, node_efficiency=0.5)
    assert link.success_probability == pytest.approx(eta(0.5, 30) * eta(0.5, 10) / 2, rel=REL)
    assert link.fidelity == pytest.approx(1.0, abs=1e-12)
    assert link.attempt_period_s == pytest.approx(2 * 30 / C_KM_PER_S, rel=REL)


@pytest.mark.parametrize("v", [1.0, 0.9, 0.5, 0.0])
def test_double_click_visibility_gives_fidelity_one_plus_v_over_two(v):
    link = heralded_double_click(length_km=10, node_efficiency=0.4, visibility=v)
    assert link.fidelity == pytest.approx((1 + v) / 2, rel=REL)
    rho = link.delivered_state(BellState.PSI_PLUS)
    assert rho[1, 2].real == pytest.approx(v / 2, rel=REL, abs=1e-15)
    # One photon per round: visibility does not change the rate.
    assert link.success_probability == pytest.approx(eta(0.4, 5) ** 2 / 2, rel=REL)


def test_double_click_dark_counts_match_per_round_click_counting():
    e, d = 0.2, 2e-3
    link = heralded_double_click(length_km=0, node_efficiency=e, dark_count_probability=d)
    # Probability that exactly one detector (either) clicks in a round with n photons (V = 1).
    q0, q1 = 2 * d * (1 - d), 1 - d
    # Spins |00>/|11>: both photons in one round, none in the other.
    same = ((1 - e) ** 2 * q0 + (1 - (1 - e) ** 2) * q1) * q0
    # Spins |01>/|10>: one photon per round.
    one = e * q1 + (1 - e) * q0
    p = (same + one**2) / 2
    assert link.success_probability == pytest.approx(p, rel=REL)
    # Only |01>/|10> with both photons detected is coherent; other |01>/|10> heralds give 1/2.
    coherent = e**2 * q1**2 / 2
    incoherent = (one**2 - e**2 * q1**2) / 2
    assert link.fidelity == pytest.approx((coherent + incoherent / 2) / p, rel=REL)


def test_double_click_dark_count_limits():
    base = {"length_km": 50, "node_efficiency": 0.3}
    clean = heralded_double_click(**base)
    zero = heralded_double_click(**base, dark_count_probability=0.0)
    assert zero.success_probability == clean.success_probability
    assert zero.fidelity == clean.fidelity
    links = [heralded_double_click(**base, dark_count_probability=d) for d in (1e-6, 1e-4, 1e-2)]
    fidelities = [clean.fidelity] + [link.fidelity for link in links]
    assert fidelities == sorted(fidelities, reverse=True)
    assert len(set(fidelities)) == 4
    assert links[-1].fidelity < 0.75
    assert links[0].success_probability > clean.success_probability
    # First order in p_dc: a lost photon replaced by a dark count (2 rounds × 2 lost photons),
    # or an empty round of |00>/|11> filled by one (the other round has ≥ 1 photon).
    d = 1e-6
    e = eta(0.3, 25)
    first_order = e**2 / 2 + d * (2 * e * (1 - e) + (1 - (1 - e) ** 2) - e**2)
    assert links[0].success_probability == pytest.approx(first_order, rel=1e-5)


# --- shared: attempt period, validation, dispatcher ----------------------------------------


@pytest.mark.parametrize("model", [heralded_single_click, heralded_double_click])
def test_attempt_period_is_the_round_trip_to_the_station(model):
    extra = {"bright_state_alpha": 0.1} if model is heralded_single_click else {}
    link = model(length_km=100, station_position_km=20, node_efficiency=0.5, **extra)
    assert link.attempt_period_s == pytest.approx(2 * 80 / C_KM_PER_S, rel=REL)
    slow = model(length_km=100, node_efficiency=0.5, t_cycle_s=1.0, **extra)
    assert slow.attempt_period_s == 1.0
    assert slow.expected_rate_hz == pytest.approx(slow.success_probability, rel=REL)


def test_station_position_default_is_the_middle():
    middle = heralded_double_click(length_km=30, station_position_km=15, node_efficiency=0.5)
    default = heralded_double_click(length_km=30, node_efficiency=0.5)
    assert default.success_probability == middle.success_probability
    assert default.attempt_period_s == middle.attempt_period_s


@pytest.mark.parametrize(
    ("override", "name"),
    [
        ({"station_position_km": 11}, "station_position_km"),
        ({"station_position_km": -1}, "station_position_km"),
        ({"length_km": -1}, "length_km"),
        ({"node_efficiency": 0}, "node_efficiency"),
        ({"node_efficiency": 1.2}, "node_efficiency"),
        ({"attenuation_db_per_km": -0.2}, "attenuation_db_per_km"),
        ({"dark_count_probability": 1.0}, "dark_count_probability"),
        ({"dark_count_probability": -0.1}, "dark_count_probability"),
        ({"visibility": 1.01}, "visibility"),
        ({"t_cycle_s": 0}, "t_cycle_s"),
        ({"bright_state_alpha": 0}, "bright_state_alpha"),
        ({"bright_state_alpha": math.nan}, "bright_state_alpha"),
        ({"bright_state_alpha": "0.1"}, "bright_state_alpha"),
    ],
)
def test_heralded_models_reject_bad_parameters_by_name(override, name):
    params = {"length_km": 10, "node_efficiency": 0.5, "bright_state_alpha": 0.1} | override
    with pytest.raises(ValueError, match=name):
        heralded_single_click(**params)
    if name != "bright_state_alpha":
        params.pop("bright_state_alpha")
        with pytest.raises(ValueError, match=name):
            heralded_double_click(**params)


def test_dispatcher_builds_every_model():
    known = {"perfect", "depolarise", "heralded_single_click", "heralded_double_click"}
    assert set(MODELS) == known
    assert link_physics("perfect").success_probability == 1.0
    link = link_physics("depolarise", fidelity=0.9, prob_success=0.5)
    assert link.fidelity == pytest.approx(0.9, rel=REL)
    single = link_physics(
        "heralded_single_click", length_km=10, node_efficiency=0.1, bright_state_alpha=0.05
    )
    assert single.model == "heralded_single_click"
    double = link_physics("heralded_double_click", length_km=10, node_efficiency=0.1)
    assert double.model == "heralded_double_click"


def test_dispatcher_names_an_unknown_model_and_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown link model 'magic'.*perfect.*double_click"):
        link_physics("magic")


def test_dispatcher_names_unknown_and_missing_parameters():
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) fidelty.*known: fidelity"):
        link_physics("depolarise", fidelty=0.9, prob_success=0.5)
    with pytest.raises(ValueError, match=r"missing parameter\(s\) node_efficiency"):
        link_physics("heralded_double_click", length_km=10)


# --- every delivered state is a density matrix ------------------------------------------------

unit = st.floats(min_value=0.0, max_value=1.0)
open_unit = st.floats(min_value=1e-6, max_value=1.0)
dark = st.floats(min_value=0.0, max_value=0.99)


@settings(max_examples=150, deadline=None)
@given(
    length_km=st.floats(min_value=0, max_value=200),
    station_fraction=unit,
    node_efficiency=open_unit,
    alpha=open_unit,
    dark_count_probability=dark,
    visibility=unit,
)
def test_single_click_states_are_density_matrices(
    length_km, station_fraction, node_efficiency, alpha, dark_count_probability, visibility
):
    link = heralded_single_click(
        length_km=length_km,
        station_position_km=station_fraction * length_km,
        node_efficiency=node_efficiency,
        bright_state_alpha=alpha,
        dark_count_probability=dark_count_probability,
        visibility=visibility,
    )
    assert_consistent(link)


@settings(max_examples=150, deadline=None)
@given(
    length_km=st.floats(min_value=0, max_value=200),
    station_fraction=unit,
    node_efficiency=open_unit,
    dark_count_probability=dark,
    visibility=unit,
)
def test_double_click_states_are_density_matrices(
    length_km, station_fraction, node_efficiency, dark_count_probability, visibility
):
    link = heralded_double_click(
        length_km=length_km,
        station_position_km=station_fraction * length_km,
        node_efficiency=node_efficiency,
        dark_count_probability=dark_count_probability,
        visibility=visibility,
    )
    assert_consistent(link)


def assert_consistent(link):
    assert 0.0 < link.success_probability <= 1.0
    assert 0.0 <= link.fidelity <= 1.0
    fidelities = []
    for state in link.herald_bell_states:
        rho = link.delivered_state(state)
        assert_density_matrix(rho)
        fidelities.append(bell_fidelity(rho, state))
    assert link.fidelity == pytest.approx(np.mean(fidelities), abs=1e-12)


# --- LinkPhysics itself --------------------------------------------------------------------


def test_delivered_states_cannot_be_mutated():
    link = heralded_double_click(length_km=10, node_efficiency=0.5)
    copy = link.delivered_state(BellState.PSI_PLUS)
    copy[:] = 0
    assert link.fidelity == pytest.approx(1.0, abs=1e-12)
    assert np.trace(link.delivered_state(BellState.PSI_PLUS)).real == pytest.approx(1.0)
    with pytest.raises(ValueError):
        link.delivered_states[BellState.PSI_PLUS][0, 0] = 1.0
    with pytest.raises(TypeError):
        link.delivered_states[BellState.PHI_PLUS] = copy  # type: ignore[index]


def test_delivered_state_of_a_state_never_heralded_is_an_error():
    with pytest.raises(ValueError, match="never heralds PSI_MINUS"):
        perfect().delivered_state(BellState.PSI_MINUS)


def test_link_physics_rejects_inconsistent_or_invalid_states():
    valid = {
        "model": "custom",
        "success_probability": 0.5,
        "attempt_period_s": 1e-6,
        "fidelity": 1.0,
        "herald_bell_states": (BellState.PHI_PLUS,),
        "delivered_states": {BellState.PHI_PLUS: bell_density(BellState.PHI_PLUS)},
    }
    assert LinkPhysics(**valid).fidelity == 1.0
    with pytest.raises(ValueError, match="does not match"):
        LinkPhysics(**valid | {"fidelity": 0.9})
    with pytest.raises(ValueError, match="trace"):
        LinkPhysics(**valid | {"delivered_states": {BellState.PHI_PLUS: np.eye(4)}})
    with pytest.raises(ValueError, match="positive semidefinite"):
        bad = np.diag([1.5, -0.5, 0.0, 0.0])
        LinkPhysics(**valid | {"fidelity": 0.75, "delivered_states": {BellState.PHI_PLUS: bad}})
    with pytest.raises(ValueError, match="no state for herald PSI_PLUS"):
        LinkPhysics(**valid | {"herald_bell_states": (BellState.PSI_PLUS,)})
    with pytest.raises(ValueError, match="success_probability"):
        LinkPhysics(**valid | {"success_probability": 0.0})
    with pytest.raises(ValueError, match="attempt_period_s"):
        LinkPhysics(**valid | {"attempt_period_s": 0.0})


def test_sample_attempts_is_geometric():
    p, n = 0.1, 20_000
    link = depolarise(fidelity=0.9, prob_success=p)
    attempts = link.sample_attempts(np.random.default_rng(2024), size=n)
    assert attempts.shape == (n,)
    assert attempts.min() >= 1
    mean, variance = 1 / p, (1 - p) / p**2
    assert abs(attempts.mean() - mean) <= 5 * math.sqrt(variance / n)
    # Standard error of a sample variance: σ²·√((kurtosis − 1)/n), geometric kurtosis 9 + p²/(1−p).
    variance_sigma = variance * math.sqrt((8 + p**2 / (1 - p)) / n)
    assert abs(attempts.var(ddof=1) - variance) <= 5 * variance_sigma
    one = link.sample_attempts(np.random.default_rng(7))
    assert isinstance(one, int)
    assert one >= 1


def test_sample_bell_state_is_equiprobable_over_the_heralds():
    link = heralded_single_click(length_km=10, node_efficiency=0.1, bright_state_alpha=0.05)
    rng = np.random.default_rng(99)
    n = 10_000
    samples = [link.sample_bell_state(rng) for _ in range(n)]
    assert set(samples) == {BellState.PSI_PLUS, BellState.PSI_MINUS}
    plus = samples.count(BellState.PSI_PLUS)
    assert abs(plus - n / 2) <= 5 * math.sqrt(n / 4)
    assert perfect().sample_bell_state(rng) is BellState.PHI_PLUS
