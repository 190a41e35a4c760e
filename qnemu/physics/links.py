"""Link models: how often an entanglement attempt succeeds and which two-qubit state it delivers.

Conventions shared by every model:
- qubit order (node_a, node_b); computational basis |00>, |01>, |10>, |11>;
- for the heralded models |0> is the *bright* spin state (the one that emits a photon) and
  |1> the dark one, so the single-click "both emitted" error is |00><00|;
- `visibility` V is the two-photon (Hong–Ou–Mandel) interference visibility,
  V = |<φ_a|φ_b>|² for the photon wave packets φ_a, φ_b of the two nodes. Single-photon
  interference (single-click) therefore keeps a coherence √V, two-photon interference
  (double-click) a coherence V, and two photons meeting at the beam splitter bunch with
  probability (1 + V)/2;
- detectors are threshold detectors; a herald is "exactly one of the two detectors clicked"
  (per round for double-click); `dark_count_probability` is per detector per detection window.

The dark-count, visibility and unequal-arm terms are not taken from a paper: they are derived
here by enumerating which photons reach the station and which detectors click (each branch
commented below); with p_dc = 0, V = 1 and equal arms they reduce to the cited formulas.
"""

import inspect
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from numbers import Real
from types import MappingProxyType

import numpy as np

from qnemu.physics.bell import BellState, bell_vector, werner_state
from qnemu.physics.fibre import SPEED_OF_LIGHT_IN_FIBRE_KM_PER_S, transmittance

__all__ = [
    "MODELS",
    "LinkPhysics",
    "depolarise",
    "heralded_double_click",
    "heralded_single_click",
    "link_physics",
    "perfect",
]

_STATE_TOLERANCE = 1e-9
# Z on node_a: maps Ψ+ to Ψ− (and Φ+ to Φ−) by flipping the sign of the |01><10| coherence.
_Z_ON_A = np.diag([1.0, 1.0, -1.0, -1.0]).astype(complex)


@dataclass(frozen=True, eq=False)
class LinkPhysics:
    """What one attempt on a link does: success probability, attempt period, delivered states."""

    model: str
    success_probability: float
    attempt_period_s: float
    fidelity: float
    herald_bell_states: tuple[BellState, ...]
    delivered_states: Mapping[BellState, np.ndarray]

    def __post_init__(self) -> None:
        if not 0.0 < self.success_probability <= 1.0:
            raise ValueError(
                f"success_probability must be in (0, 1], got {self.success_probability}"
            )
        if not (math.isfinite(self.attempt_period_s) and self.attempt_period_s > 0.0):
            raise ValueError(f"attempt_period_s must be > 0, got {self.attempt_period_s}")
        heralds = tuple(BellState(state) for state in self.herald_bell_states)
        if not heralds:
            raise ValueError("herald_bell_states must not be empty")
        frozen: dict[BellState, np.ndarray] = {}
        for state in heralds:
            if state not in self.delivered_states:
                raise ValueError(f"delivered_states has no state for herald {state.name}")
            frozen[state] = _frozen_density_matrix(state.name, self.delivered_states[state])
        mean_fidelity = float(np.mean([_fidelity(frozen[state], state) for state in heralds]))
        if abs(mean_fidelity - self.fidelity) > _STATE_TOLERANCE:
            raise ValueError(
                f"fidelity {self.fidelity} does not match the delivered states ({mean_fidelity})"
            )
        # Frozen: bypass the dataclass guard once, to store normalised, read-only copies.
        object.__setattr__(self, "herald_bell_states", heralds)
        object.__setattr__(self, "delivered_states", MappingProxyType(frozen))

    def delivered_state(self, bell_state: BellState) -> np.ndarray:
        """A writable copy of the density matrix delivered when `bell_state` is heralded."""
        try:
            return self.delivered_states[BellState(bell_state)].copy()
        except KeyError:
            heralds = ", ".join(state.name for state in self.herald_bell_states)
            raise ValueError(
                f"link model {self.model!r} never heralds {BellState(bell_state).name} "
                f"(it heralds: {heralds})"
            ) from None

    def sample_bell_state(self, rng: np.random.Generator) -> BellState:
        """The Bell state announced by a successful attempt (heralds are equiprobable)."""
        return self.herald_bell_states[int(rng.integers(len(self.herald_bell_states)))]

    def sample_attempts(
        self, rng: np.random.Generator, size: int | None = None
    ) -> int | np.ndarray:
        """Number of attempts up to and including the next success (geometric, ≥ 1)."""
        attempts = rng.geometric(self.success_probability, size=size)
        return int(attempts) if size is None else attempts

    @property
    def expected_rate_hz(self) -> float:
        return self.success_probability / self.attempt_period_s


# --- constructors -------------------------------------------------------------------------


def perfect(*, t_cycle_s: float = 1e-6, length_km: float = 0.0) -> LinkPhysics:
    """Every attempt succeeds and delivers Φ+ exactly."""
    return _werner_link("perfect", 1.0, 1.0, t_cycle_s, length_km)


def depolarise(
    *, fidelity: float, prob_success: float, t_cycle_s: float = 1e-6, length_km: float = 0.0
) -> LinkPhysics:
    """Success with probability `prob_success`; the pair is a Werner state of fidelity F to Φ+."""
    return _werner_link("depolarise", fidelity, prob_success, t_cycle_s, length_km)


def _werner_link(
    model: str, fidelity: object, prob_success: object, t_cycle_s: object, length_km: object
) -> LinkPhysics:
    fidelity = _number("fidelity", fidelity, low=0.0, high=1.0)
    prob_success = _number("prob_success", prob_success, low=0.0, high=1.0, low_open=True)
    length_km = _number("length_km", length_km, low=0.0)
    # A source in the middle: the attempt period is the round trip over half the fibre.
    period_s = _attempt_period_s(t_cycle_s, length_km / 2.0, length_km / 2.0)
    state = werner_state(fidelity, BellState.PHI_PLUS)
    return LinkPhysics(
        model=model,
        success_probability=prob_success,
        attempt_period_s=period_s,
        fidelity=_fidelity(state, BellState.PHI_PLUS),
        herald_bell_states=(BellState.PHI_PLUS,),
        delivered_states={BellState.PHI_PLUS: state},
    )


def heralded_single_click(
    *,
    length_km: float,
    node_efficiency: float,
    bright_state_alpha: float,
    attenuation_db_per_km: float = 0.2,
    station_position_km: float | None = None,
    dark_count_probability: float = 0.0,
    visibility: float = 1.0,
    t_cycle_s: float = 1e-6,
) -> LinkPhysics:
    """Single-photon (single-click) heralding through a midpoint station.

    Each node prepares √α|0> + √(1−α)|1> and |0> emits a photon; one click behind the beam
    splitter heralds Ψ± (which detector clicked). Model after Humphreys et al., Nature 558,
    268 (2018) and Hermans et al., Nature 605, 663 (2022): with no dark counts, V = 1 and
    equal arms, p = 1 − (1 − αη)² and F = 2(1 − α)/(2 − αη) to Ψ±; the error is |00>
    (both nodes emitted, one photon detected, the other lost or bunched).
    """
    alpha = _number("bright_state_alpha", bright_state_alpha, low=0.0, high=1.0, low_open=True)
    arms = _heralded_arms(
        length_km, node_efficiency, attenuation_db_per_km, station_position_km, t_cycle_s
    )
    dark = _number(
        "dark_count_probability", dark_count_probability, low=0.0, high=1.0, high_open=True
    )
    visibility = _number("visibility", visibility, low=0.0, high=1.0)
    eta_a, eta_b, period_s = arms
    plus = _single_click_herald(eta_a, eta_b, alpha, dark, visibility)
    minus = _Z_ON_A @ plus @ _Z_ON_A
    return _from_heralds(
        "heralded_single_click",
        period_s,
        {BellState.PSI_PLUS: plus, BellState.PSI_MINUS: minus},
    )


def heralded_double_click(
    *,
    length_km: float,
    node_efficiency: float,
    attenuation_db_per_km: float = 0.2,
    station_position_km: float | None = None,
    dark_count_probability: float = 0.0,
    visibility: float = 1.0,
    t_cycle_s: float = 1e-6,
) -> LinkPhysics:
    """Barrett–Kok double-click heralding through a midpoint station.

    Barrett & Kok, PRA 71, 060310(R) (2005); Bernien et al., Nature 497, 86 (2013): each node
    prepares (|0> + |1>)/√2, emits, flips its spin (π pulse) and emits again; one click in each
    round heralds Ψ+ (same detector twice) or Ψ− (different detectors). With no dark counts
    p = η_a·η_b/2 and F = (1 + V)/2.
    """
    arms = _heralded_arms(
        length_km, node_efficiency, attenuation_db_per_km, station_position_km, t_cycle_s
    )
    dark = _number(
        "dark_count_probability", dark_count_probability, low=0.0, high=1.0, high_open=True
    )
    visibility = _number("visibility", visibility, low=0.0, high=1.0)
    eta_a, eta_b, period_s = arms
    plus = _double_click_herald(eta_a, eta_b, dark, visibility)
    minus = _Z_ON_A @ plus @ _Z_ON_A
    return _from_heralds(
        "heralded_double_click",
        period_s,
        {BellState.PSI_PLUS: plus, BellState.PSI_MINUS: minus},
    )


MODELS: Mapping[str, Callable[..., LinkPhysics]] = MappingProxyType(
    {
        "perfect": perfect,
        "depolarise": depolarise,
        "heralded_single_click": heralded_single_click,
        "heralded_double_click": heralded_double_click,
    }
)


def link_physics(model: str, **params: object) -> LinkPhysics:
    """Build the link model named `model` (a key of MODELS) from its keyword parameters."""
    if model not in MODELS:
        raise ValueError(f"unknown link model {model!r} (known: {', '.join(MODELS)})")
    constructor = MODELS[model]
    parameters = inspect.signature(constructor).parameters
    known = ", ".join(parameters)
    unknown = [name for name in params if name not in parameters]
    if unknown:
        raise ValueError(
            f"link model {model!r}: unknown parameter(s) {', '.join(unknown)} (known: {known})"
        )
    missing = [
        name
        for name, parameter in parameters.items()
        if parameter.default is inspect.Parameter.empty and name not in params
    ]
    if missing:
        raise ValueError(
            f"link model {model!r}: missing parameter(s) {', '.join(missing)} (known: {known})"
        )
    return constructor(**params)


# --- heralded physics -----------------------------------------------------------------------


def _single_click_herald(
    eta_a: float, eta_b: float, alpha: float, dark: float, visibility: float
) -> np.ndarray:
    """Unnormalised spin state for "only detector + clicked"; its trace is p(herald +)."""
    # Single photon detected: |01> (a emitted) and |10> (b emitted) stay coherent; the photon
    # reaches either detector with amplitude 1/√2. Coherence |<φ_a|φ_b>| = √V.
    one_photon = np.zeros((4, 4), dtype=complex)
    one_photon[1, 1] = eta_a
    one_photon[2, 2] = eta_b
    one_photon[1, 2] = one_photon[2, 1] = math.sqrt(visibility * eta_a * eta_b)
    one_photon *= alpha * (1.0 - alpha) / 2.0
    # Both emitted (|00>): one photon arrives and the other is lost, or both arrive and bunch
    # (probability (1 + V)/2; anti-bunched pairs click both detectors and are rejected).
    arrive_one = eta_a * (1.0 - eta_b) + (1.0 - eta_a) * eta_b
    arrive_both_bunched = eta_a * eta_b * (1.0 + visibility) / 2.0
    one_photon[0, 0] = alpha**2 * (arrive_one + arrive_both_bunched) / 2.0
    # No photon reached the station: the lost photons leave which-node information in the
    # fibre, so the spins are in this diagonal state; a dark count can still herald it.
    no_photon = np.diag(
        [
            alpha**2 * (1.0 - eta_a) * (1.0 - eta_b),
            alpha * (1.0 - alpha) * (1.0 - eta_a),
            alpha * (1.0 - alpha) * (1.0 - eta_b),
            (1.0 - alpha) ** 2,
        ]
    ).astype(complex)
    # Detector + clicks alone: photon(s) at + and no dark count at −, or a dark count at +
    # only when nothing arrived.
    return (1.0 - dark) * one_photon + dark * (1.0 - dark) * no_photon


def _double_click_herald(eta_a: float, eta_b: float, dark: float, visibility: float) -> np.ndarray:
    """Unnormalised spin state heralded as Ψ+ (same detector both rounds); trace = p(Ψ+)."""
    # Probability that one *given* detector clicks alone in a round in which n photons arrive.
    click_given_0 = dark * (1.0 - dark)
    click_given_1 = (1.0 - dark) / 2.0
    click_given_2 = (1.0 - dark) * (1.0 + visibility) / 4.0
    # Initial spins |s_a s_b>, each 1/4: a node emits in round 1 if its spin is 0, in round 2
    # if it is 1 (the π pulse in between). |00>, |11>: two photons in one round, none in the
    # other, so the empty round needs a dark count.
    two_photon_round = (
        (1.0 - eta_a) * (1.0 - eta_b) * click_given_0
        + (eta_a * (1.0 - eta_b) + (1.0 - eta_a) * eta_b) * click_given_1
        + eta_a * eta_b * click_given_2
    )
    same_spins = two_photon_round * click_given_0 / 4.0
    # |01>, |10>: one photon per round. Both detected is the coherent Barrett–Kok event
    # (coherence of two interfering photons: V); a lost photon plus a dark count leaves
    # which-path information in the fibre, so that part adds to the diagonal only.
    both_detected = eta_a * eta_b * click_given_1**2 / 4.0
    one_per_round = (
        (eta_a * click_given_1 + (1.0 - eta_a) * click_given_0)
        * (eta_b * click_given_1 + (1.0 - eta_b) * click_given_0)
        / 4.0
    )
    # Same outcome for (+, +) and (−, −); the final π pulses swap |00> <-> |11> and
    # |01> <-> |10>, which leaves this state unchanged.
    per_outcome = np.diag([same_spins, one_per_round, one_per_round, same_spins]).astype(complex)
    per_outcome[1, 2] = per_outcome[2, 1] = visibility * both_detected
    return 2.0 * per_outcome


def _heralded_arms(
    length_km: object,
    node_efficiency: object,
    attenuation_db_per_km: object,
    station_position_km: object,
    t_cycle_s: object,
) -> tuple[float, float, float]:
    """(η_a, η_b, attempt period) of a link whose heralding station sits at station_position_km."""
    length_km = _number("length_km", length_km, low=0.0)
    node_efficiency = _number("node_efficiency", node_efficiency, low=0.0, high=1.0, low_open=True)
    attenuation = _number("attenuation_db_per_km", attenuation_db_per_km, low=0.0)
    if station_position_km is None:
        arm_a_km = length_km / 2.0
    else:
        arm_a_km = _number("station_position_km", station_position_km, low=0.0)
        if arm_a_km > length_km:
            raise ValueError(
                f"station_position_km must be in [0, length_km={length_km}], got {arm_a_km}"
            )
    arm_b_km = length_km - arm_a_km
    eta_a = node_efficiency * transmittance(arm_a_km, attenuation)
    eta_b = node_efficiency * transmittance(arm_b_km, attenuation)
    return eta_a, eta_b, _attempt_period_s(t_cycle_s, arm_a_km, arm_b_km)


def _attempt_period_s(t_cycle_s: object, arm_a_km: float, arm_b_km: float) -> float:
    # The herald must come back from the station before the next attempt can use the result.
    t_cycle_s = _number("t_cycle_s", t_cycle_s, low=0.0, low_open=True)
    round_trip_s = 2.0 * max(arm_a_km, arm_b_km) / SPEED_OF_LIGHT_IN_FIBRE_KM_PER_S
    return max(t_cycle_s, round_trip_s)


def _from_heralds(
    model: str, period_s: float, unnormalised: dict[BellState, np.ndarray]
) -> LinkPhysics:
    success_probability = float(sum(np.trace(rho).real for rho in unnormalised.values()))
    if not success_probability > 0.0:
        raise ValueError(f"link model {model!r}: these parameters never herald a pair (p = 0)")
    states = {
        state: rho / np.trace(rho).real
        for state, rho in unnormalised.items()
        if np.trace(rho).real > 0
    }
    heralds = tuple(states)
    return LinkPhysics(
        model=model,
        success_probability=min(success_probability, 1.0),
        attempt_period_s=period_s,
        fidelity=float(np.mean([_fidelity(states[state], state) for state in heralds])),
        herald_bell_states=heralds,
        delivered_states=states,
    )


# --- helpers --------------------------------------------------------------------------------


def _fidelity(rho: np.ndarray, state: BellState) -> float:
    vector = bell_vector(state)
    # Clip rounding noise (1 + 1e-16) so callers can rely on 0 ≤ F ≤ 1.
    return min(max(float(np.real(vector.conj() @ rho @ vector)), 0.0), 1.0)


def _frozen_density_matrix(name: str, rho: np.ndarray) -> np.ndarray:
    rho = np.array(rho, dtype=complex)
    if rho.shape != (4, 4):
        raise ValueError(f"delivered state for {name} must be 4x4, got shape {rho.shape}")
    if not np.allclose(rho, rho.conj().T, atol=_STATE_TOLERANCE):
        raise ValueError(f"delivered state for {name} is not Hermitian")
    if abs(np.trace(rho).real - 1.0) > _STATE_TOLERANCE:
        raise ValueError(f"delivered state for {name} has trace {np.trace(rho).real}, not 1")
    if np.linalg.eigvalsh(rho).min() < -_STATE_TOLERANCE:
        raise ValueError(f"delivered state for {name} is not positive semidefinite")
    rho.setflags(write=False)
    return rho


def _number(
    name: str,
    value: object,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """`value` as a float, or a ValueError naming the parameter and its allowed range."""
    interval = (
        ("(" if low_open else "[")
        + ("-inf" if low is None else f"{low:g}")
        + ", "
        + ("inf" if high is None else f"{high:g}")
        + (")" if high_open else "]")
    )
    # bool is a Real subclass; `True` in a topology file is a mistake, not 1.0.
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number in {interval}, got {value!r}")
    number = float(value)
    below = low is not None and (number <= low if low_open else number < low)
    above = high is not None and (number >= high if high_open else number > high)
    if below or above:
        raise ValueError(f"{name} must be in {interval}, got {value!r}")
    return number
