"""Shipped topologies of published experiments give the figures the papers report.

Each test computes a published figure from the link physics alone (no processes) and
checks it against the paper's error bar or a stated tolerance. A figure the models cannot
reproduce gets a strict xfail that states why; the bound that does hold is asserted next
to it. Provenance of every number is in the YAML headers and docs/topologies.md.
"""

import math

import networkx as nx
import numpy as np
import pytest

from qnemu.node.routing import swapped_fidelity
from qnemu.physics.bell import BellState, bell_vector
from qnemu.physics.fibre import transmittance
from qnemu.physics.links import heralded_single_click
from qnemu.topology import load_topology


def _link(topology_name: str, a: str, b: str):
    topology = load_topology(topology_name)
    link = topology.link_between(a, b)
    assert link is not None
    return topology, link, link.physics()


def _locally_depolarised(fidelity: float, p_a: float, p_b: float) -> float:
    """Bell fidelity after independent depolarising channels on each half of the pair."""
    return 0.25 + (1.0 - p_a) * (1.0 - p_b) * (fidelity - 0.25)


def _swap_fidelity(rho_1, state_1, rho_2, state_2) -> float:
    """Mean fidelity of an ideal swap of pairs (A,B1) and (B2,C) to the ideal outcome state."""
    rho = np.kron(rho_1, rho_2)  # qubits A, B1, B2, C
    psi = np.kron(bell_vector(state_1), bell_vector(state_2))
    total = 0.0
    for outcome in BellState:
        bell = bell_vector(outcome)
        projector = np.kron(np.kron(np.eye(2), np.outer(bell, bell.conj())), np.eye(2))
        # What A and C would share had both inputs been pure: the reference for this outcome.
        ideal = np.einsum("abcd,bc->ad", (projector @ psi).reshape(2, 2, 2, 2),
                          bell.conj().reshape(2, 2)).reshape(4)  # fmt: skip
        ideal /= np.linalg.norm(ideal)
        projected = (projector @ rho @ projector).reshape((2,) * 8)
        rho_ac = np.einsum("abcdebcf->adef", projected).reshape(4, 4)
        total += float(np.real(ideal.conj() @ rho_ac @ ideal))
    return total


# --- Delft – The Hague (Stolk et al., Sci. Adv. 2024) ---------------------------------------

STOLK_FIDELITY, STOLK_FIDELITY_SIGMA = 0.534, 0.015
STOLK_RATE_HZ = 0.022
STOLK_P_ATTEMPT = 7.2e-6


def test_delft_hague_heralded_fidelity_within_published_error_bar():
    _, _, physics = _link("delft-hague-2024", "delft", "hague")
    assert abs(physics.fidelity - STOLK_FIDELITY) <= STOLK_FIDELITY_SIGMA


def test_delft_hague_rate_and_success_probability_within_one_percent():
    # The paper quotes two significant figures; the YAML rounds its fits to three.
    _, _, physics = _link("delft-hague-2024", "delft", "hague")
    assert physics.success_probability == pytest.approx(STOLK_P_ATTEMPT, rel=0.01)
    assert physics.expected_rate_hz == pytest.approx(STOLK_RATE_HZ, rel=0.01)


def test_delft_hague_attempt_period_is_not_below_the_herald_round_trip():
    _, link, physics = _link("delft-hague-2024", "delft", "hague")
    long_arm_km = link.length_km - link.station_position_km
    assert physics.attempt_period_s >= 2 * long_arm_km / 200_000.0


def test_delft_hague_measured_visibility_alone_is_an_upper_bound():
    # Without the fitted noise counts the model only knows α and the measured V = 0.79:
    # that bound (≈0.70) lies far above the published 0.534 ± 0.015.
    _, link, physics = _link("delft-hague-2024", "delft", "hague")
    params = {**link.physics_params(), "dark_count_probability": 0.0}
    noiseless = heralded_single_click(**params)
    assert noiseless.fidelity == pytest.approx(0.698, abs=0.002)
    assert noiseless.fidelity > STOLK_FIDELITY + 5 * STOLK_FIDELITY_SIGMA
    assert physics.fidelity < noiseless.fidelity <= 1.0 - link.bright_state_alpha


# --- QuTech three-node network (Pompili et al., Science 2021) ------------------------------

HUMPHREYS_POINTS = {0.05: (0.81, 0.02), 0.3: (0.60, 0.02)}  # α: (F, σ), Humphreys 2018
POMPILI_RATES_HZ = {("alice", "bob"): 9.0, ("bob", "charlie"): 7.0}
POMPILI_SWAP_FIDELITY, POMPILI_SWAP_SIGMA = 0.587, 0.028


@pytest.mark.parametrize("ends", list(POMPILI_RATES_HZ))
def test_three_node_link_fidelity_above_published_bound(ends):
    _, _, physics = _link("qutech-three-node-2021", *ends)
    fidelity, sigma = HUMPHREYS_POINTS[0.05]
    assert physics.fidelity > 0.8  # Pompili: "above 0.8" on both links
    assert abs(physics.fidelity - fidelity) <= sigma


@pytest.mark.parametrize("ends", list(POMPILI_RATES_HZ))
def test_three_node_link_rates_within_five_percent(ends):
    # The published rates are given to one significant figure ("9 Hz", "7 Hz").
    _, _, physics = _link("qutech-three-node-2021", *ends)
    assert physics.expected_rate_hz == pytest.approx(POMPILI_RATES_HZ[ends], rel=0.05)


def test_effective_visibility_predicts_the_second_bright_state_point():
    # The effective visibility was fitted at α = 0.05 alone; α = 0.3 is a prediction.
    _, link, _ = _link("qutech-three-node-2021", "alice", "bob")
    params = {**link.physics_params(), "bright_state_alpha": 0.3}
    fidelity, sigma = HUMPHREYS_POINTS[0.3]
    assert abs(heralded_single_click(**params).fidelity - fidelity) <= sigma


def _three_node_swap_fidelity() -> float:
    _, _, left = _link("qutech-three-node-2021", "alice", "bob")
    topology, _, right = _link("qutech-three-node-2021", "bob", "charlie")
    state = BellState.PSI_PLUS
    ideal = _swap_fidelity(left.delivered_state(state), state, right.delivered_state(state), state)
    # Bob's Bell measurement: one two-qubit gate's depolarising noise on his two qubits
    # lowers the Werner-like parameter once more.
    p_gate = topology.nodes["bob"].two_qubit_gate_depolar_prob
    return 0.25 + (1.0 - p_gate) * (ideal - 0.25)


def test_three_node_swap_is_an_upper_bound_on_the_published_swap():
    fidelity = _three_node_swap_fidelity()
    # Sanity of the exact swap against the Werner formula the router uses (same links).
    _, _, link = _link("qutech-three-node-2021", "alice", "bob")
    assert fidelity == pytest.approx(0.664, abs=0.005)
    assert swapped_fidelity([link.fidelity] * 2) == pytest.approx(0.668, abs=0.005)
    assert fidelity > POMPILI_SWAP_FIDELITY


@pytest.mark.xfail(
    strict=True,
    reason="Pompili's swap includes the 13C memory dephasing per entanglement attempt "
    "(N_1/e ≈ 1800) while Bob–Charlie is generated and the electron→carbon SWAP; qnemu's "
    "memory decays in time (T1/T2), not per attempt, so its swap (0.664) is 2.8σ above "
    "0.587 ± 0.028",
)
def test_three_node_swap_reproduces_published_fidelity():
    assert abs(_three_node_swap_fidelity() - POMPILI_SWAP_FIDELITY) <= POMPILI_SWAP_SIGMA


# --- Boston SiV (Knaut et al., Nature 2024) ------------------------------------------------

KNAUT_ELECTRON_FIDELITY, KNAUT_ELECTRON_SIGMA = 0.86, 0.03
KNAUT_NUCLEAR_FIDELITY, KNAUT_NUCLEAR_SIGMA = 0.69, 0.07
KNAUT_LOOP_LOSS_DB = 17.0


def test_boston_electron_pair_fidelity_within_published_error_bar():
    _, _, physics = _link("boston-siv-2024", "node-a", "node-b")
    assert abs(physics.fidelity - KNAUT_ELECTRON_FIDELITY) <= KNAUT_ELECTRON_SIGMA


def test_boston_nuclear_pair_fidelity_within_two_sigma():
    # Transfer electron → 29Si nucleus on both nodes with the CeNOTn gate noise. The result
    # (0.781) is 1.3σ above 0.69 ± 0.07: the model lacks the loop's extra phase and
    # polarisation noise, so it stays above the published value.
    topology, _, physics = _link("boston-siv-2024", "node-a", "node-b")
    p_a = topology.nodes["node-a"].two_qubit_gate_depolar_prob
    p_b = topology.nodes["node-b"].two_qubit_gate_depolar_prob
    nuclear = _locally_depolarised(physics.fidelity, p_a, p_b)
    assert nuclear == pytest.approx(0.781, abs=0.002)
    assert nuclear >= KNAUT_NUCLEAR_FIDELITY
    assert abs(nuclear - KNAUT_NUCLEAR_FIDELITY) <= 2 * KNAUT_NUCLEAR_SIGMA


def test_boston_loop_costs_seventeen_db_of_success_probability():
    # Double-click success ∝ η_a·η_b = η_node²·T(whole loop): the deployed loop divides the
    # success probability by 10^1.7 relative to the same nodes with no fibre.
    _, link, physics = _link("boston-siv-2024", "node-a", "node-b")
    assert transmittance(link.length_km, link.attenuation_db_per_km) == pytest.approx(
        10 ** (-KNAUT_LOOP_LOSS_DB / 10), rel=0.01
    )
    no_fibre = type(link).model_validate({**link.model_dump(), "length_km": 0.0}).physics()
    ratio = physics.success_probability / no_fibre.success_probability
    assert ratio == pytest.approx(10 ** (-KNAUT_LOOP_LOSS_DB / 10), rel=0.01)
    # The herald flies through the whole loop once: 35 km at 200 000 km/s.
    assert physics.attempt_period_s == pytest.approx(link.length_km / 200_000.0)


# --- Near-term Randstad ring (stated parameters, no publication) ---------------------------


def test_randstad_ring_is_an_eight_node_ring():
    topology = load_topology("randstad-ring")
    graph = topology.graph()
    assert graph.number_of_nodes() == 8
    assert all(degree == 2 for _, degree in graph.degree())
    assert len(graph.edges) == 8


def test_randstad_ring_link_figures_as_stated():
    topology = load_topology("randstad-ring")
    rates = {}
    for link in topology.links:
        physics = link.physics()
        assert physics.fidelity == pytest.approx(0.925, abs=0.001)
        rates[link.length_km] = physics.expected_rate_hz
    assert rates[12] == pytest.approx(11.8, abs=0.1)
    assert rates[45] == pytest.approx(1.2, abs=0.1)


def test_randstad_ring_farthest_pair_stays_entangled():
    topology = load_topology("randstad-ring")
    graph = topology.graph()
    hops = max(
        len(path) - 1
        for targets in nx.all_pairs_shortest_path(graph)
        for path in targets[1].values()
    )
    assert hops == 4
    fidelities = [link.physics().fidelity for link in topology.links][:hops]
    end_to_end = swapped_fidelity(fidelities)
    assert end_to_end == pytest.approx(0.74, abs=0.01)
    assert end_to_end > 0.5
    # Cutoff: a pair kept 0.5 s keeps e^(−0.5/T2) of its coherence (about 60 %).
    node = topology.nodes["delft"]
    assert math.exp(-node.cutoff_s / node.t2_s) == pytest.approx(0.61, abs=0.01)
