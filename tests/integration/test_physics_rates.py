"""Success rates and delivered states of real links match the link physics.

Attempt counts and creation times are emulated quantities sampled by the station, so
these checks do not depend on the host's speed: a link whose nodes keep up runs at its
physical rate p / T_attempt whatever the machine.
"""

import itertools
import math

import numpy as np
import pytest

from qnemu.client import QnemuClient
from qnemu.physics.bell import BellState
from qnemu.physics.links import depolarise, heralded_double_click, heralded_single_click

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

SLOW = {"fidelity": 0.9, "prob_success": 0.1, "t_cycle_s": 1e-3}  # 100 pairs/s
SINGLE_CLICK = {"length_km": 2.0, "node_efficiency": 0.5, "bright_state_alpha": 0.1}
DOUBLE_CLICK = {"length_km": 2.0, "node_efficiency": 0.5, "visibility": 0.9}

TOPOLOGY = {
    "name": "integration-physics",
    "time_scale": 1.0,
    "seed": 11,
    "defaults": {"node": {"qubits": 8, "t1_s": None, "t2_s": None}},
    "nodes": {"x": {}, "y": {}, "u": {}},
    "links": [
        {"nodes": ["x", "y"], "model": "depolarise", **SLOW},
        {"nodes": ["y", "u"], "model": "heralded_single_click", **SINGLE_CLICK},
        {"nodes": ["x", "u"], "model": "heralded_double_click", **DOUBLE_CLICK},
    ],
}


@pytest.fixture
async def client(network):
    async with QnemuClient(network.run_dir) as client:
        yield client


async def measured(client: QnemuClient, src: str, dst: str, pairs: int, basis: str = "Z"):
    delivered = [p async for p in client.entangle(src, dst, pairs=pairs, measure=basis)]
    assert len(delivered) == pairs
    return delivered


def assert_geometric_mean(attempts: list[int], p: float, sigmas: float = 5.0) -> None:
    """Mean attempts to success is 1/p, with standard error sqrt(1 - p)/p/sqrt(N)."""
    n = len(attempts)
    assert min(attempts) >= 1
    standard_error = math.sqrt(1 - p) / p / math.sqrt(n)
    mean = sum(attempts) / n
    assert abs(mean - 1 / p) <= sigmas * standard_error, (mean, 1 / p, standard_error)


def assert_binomial(count: int, trials: int, p: float, sigmas: float = 5.0) -> None:
    sigma = math.sqrt(trials * p * (1 - p))
    assert abs(count - trials * p) <= sigmas * sigma, (count, trials * p, sigma)


async def test_depolarise_link_attempts_and_pair_rate_match_p_and_t_cycle(client):
    physics = depolarise(**SLOW)
    pairs = await measured(client, "x", "y", 300)
    attempts = [pair.attempts for pair in pairs]
    assert_geometric_mean(attempts, SLOW["prob_success"])
    # The link is the bottleneck (100 pairs/s): each pair follows the previous one by its
    # own attempts times the attempt period, exactly, in emulated time.
    created = [pair.created_at for pair in pairs]
    spacings = np.diff(created)
    np.testing.assert_allclose(spacings, np.array(attempts[1:]) * SLOW["t_cycle_s"], atol=1e-9)
    # Hence pairs per emulated second = p / T within the geometric spread of the spacings.
    mean_spacing_s = float(spacings.mean())
    p, period_s = physics.success_probability, physics.attempt_period_s
    standard_error_s = period_s * math.sqrt(1 - p) / p / math.sqrt(len(spacings))
    assert abs(mean_spacing_s - period_s / p) <= 5 * standard_error_s
    rate_hz = len(spacings) / (created[-1] - created[0])
    assert rate_hz == pytest.approx(
        physics.expected_rate_hz, rel=5 * standard_error_s * p / period_s
    )
    for pair in pairs:
        assert pair.fidelity == pytest.approx(SLOW["fidelity"], abs=1e-9)
        assert pair.delivered_at >= pair.created_at


async def test_single_click_link_attempts_states_and_fidelity_match_its_physics(client):
    physics = heralded_single_click(**SINGLE_CLICK)
    assert 0.05 < physics.success_probability < 0.15  # the regime these bounds assume
    pairs = await measured(client, "y", "u", 600)
    assert_geometric_mean([pair.attempts for pair in pairs], physics.success_probability)
    labels = [pair.bell_state for pair in pairs]
    assert set(labels) <= {"psi+", "psi-"}
    assert_binomial(labels.count("psi+"), len(labels), 0.5)  # which detector clicked
    for pair in pairs:
        assert pair.fidelity == pytest.approx(physics.fidelity, abs=1e-9)
    # Z outcomes agree only on the |00> (both emitted) error: weight <00|rho|00> + <11|rho|11>.
    rho = physics.delivered_state(BellState.PSI_PLUS)
    agree_p = float(rho[0, 0].real + rho[3, 3].real)
    agreements = sum(pair.outcomes[0] == pair.outcomes[1] for pair in pairs)
    assert_binomial(agreements, len(pairs), agree_p)


async def test_double_click_link_attempts_match_its_physics(client):
    physics = heralded_double_click(**DOUBLE_CLICK)
    eta = DOUBLE_CLICK["node_efficiency"] * 10 ** (-0.2 * 1.0 / 10)  # 1 km arm each
    assert physics.success_probability == pytest.approx(eta**2 / 2, rel=1e-12)
    pairs = await measured(client, "x", "u", 400)
    assert_geometric_mean([pair.attempts for pair in pairs], physics.success_probability)


@pytest.mark.parametrize(
    "src, dst, physics",
    [
        ("y", "u", heralded_single_click(**SINGLE_CLICK)),
        ("x", "u", heralded_double_click(**DOUBLE_CLICK)),
        ("x", "y", depolarise(**SLOW)),
    ],
    ids=["single-click", "double-click", "depolarise"],
)
async def test_kept_pairs_have_the_fidelity_of_the_link_physics(client, src, dst, physics):
    pairs = [pair async for pair in client.entangle(src, dst, pairs=4)]
    heralded = {state.label for state in physics.herald_bell_states}
    for pair in pairs:
        assert pair.bell_state in heralded
        # The oracle fidelity to the heralded state: exact, as no memory decays here.
        assert pair.fidelity == pytest.approx(physics.fidelity, abs=1e-9)
        await client.free(src, [pair.qubits[0]])
        await client.free(dst, [pair.qubits[1]])
    sequence = [pair.sequence_number for pair in pairs]
    assert sequence == list(range(4))
    assert all(a.created_at <= b.created_at for a, b in itertools.pairwise(pairs))


async def test_station_counters_add_up(client, network):
    for station, link in network.topology.stations():
        stats = await client.stats(station)
        assert stats["link"] == f"{link.nodes[0]}-{link.nodes[1]}"
        assert stats["success_probability"] == pytest.approx(
            link.physics().success_probability, rel=1e-12
        )
        assert stats["attempts"] >= stats["pairs"]
