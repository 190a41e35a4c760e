"""Topology models: field constraints, cross-references, helpers and round-trips."""

import inspect

import networkx as nx
import pytest
from pydantic import ValidationError

from qnemu.topology import (
    LINK_MODELS,
    NodeConfig,
    PerfectLinkConfig,
    SingleClickLinkConfig,
    Topology,
    WorkloadConfig,
    parse_topology,
)


def _ring() -> Topology:
    return Topology.model_validate(
        {
            "name": "tri",
            "time_scale": 2.0,
            "nodes": {"a": {}, "b": {"t1_s": 2.0, "t2_s": 4.0}, "c": {"qubits": 8}},
            "links": [
                {"nodes": ["a", "b"], "model": "perfect", "length_km": 3},
                {"nodes": ["b", "c"], "model": "depolarise", "fidelity": 0.9, "prob_success": 0.5},
                {
                    "nodes": ["c", "a"],
                    "model": "heralded_double_click",
                    "length_km": 7.5,
                    "node_efficiency": 0.2,
                    "station": "mid",
                },
            ],
            "workloads": [{"src": "a", "dst": "b", "type": "measure"}],
        }
    )


def test_node_defaults_are_a_noiseless_memory():
    node = NodeConfig()
    assert (node.qubits, node.t1_s, node.t2_s, node.cutoff_s) == (4, None, None, None)
    assert node.readout_error == (0.0, 0.0)
    assert node.single_qubit_gate_depolar_prob == node.two_qubit_gate_depolar_prob == 0.0


@pytest.mark.parametrize(
    "fields",
    [
        {"qubits": 0},
        {"qubits": 2.5},
        {"qubits": "4"},
        {"t1_s": 0.0},
        {"t2_s": -1.0},
        {"cutoff_s": 0},
        {"readout_error": [0.1]},
        {"readout_error": [0.1, 1.5]},
        {"two_qubit_gate_depolar_prob": -0.1},
        {"single_qubit_gate_depolar_prob": True},
        {"t2_s": float("nan")},
        {"t1_s": 1.0, "t2_s": 2.5},  # T2 > 2·T1
        {"t3_s": 1.0},
    ],
)
def test_node_rejects(fields):
    with pytest.raises(ValidationError):
        NodeConfig.model_validate(fields)


def test_node_allows_t2_equal_to_twice_t1():
    assert NodeConfig(t1_s=1.0, t2_s=2.0).t2_s == 2.0


def test_physics_params_are_exactly_the_link_physics_keywords():
    links = pytest.importorskip("qnemu.physics.links")
    for model, cls in LINK_MODELS.items():
        if not cls.has_station:  # prepare-and-measure: no heralded physics
            continue
        expected = set(inspect.signature(links.MODELS[model]).parameters)
        assert set(cls.parameter_names()) == expected, model


def test_physics_params_carry_the_values():
    link = SingleClickLinkConfig(
        model="heralded_single_click",
        nodes=("a", "b"),
        length_km=10,
        node_efficiency=0.1,
        bright_state_alpha=0.05,
    )
    assert link.physics_params() == {
        "t_cycle_s": 1e-6,
        "length_km": 10.0,
        "node_efficiency": 0.1,
        "attenuation_db_per_km": 0.2,
        "station_position_km": None,
        "dark_count_probability": 0.0,
        "visibility": 1.0,
        "bright_state_alpha": 0.05,
    }
    assert link.station_name == "station-a-b"


def test_physics_builds_the_model():
    pytest.importorskip("qnemu.physics.links")
    physics = PerfectLinkConfig(model="perfect", nodes=("a", "b"), t_cycle_s=2e-6).physics()
    assert physics.success_probability == 1.0
    assert physics.attempt_period_s == pytest.approx(2e-6, rel=1e-12)


def test_station_must_sit_on_the_fibre():
    with pytest.raises(ValidationError, match="station_position_km"):
        SingleClickLinkConfig(
            model="heralded_single_click",
            nodes=("a", "b"),
            length_km=10,
            node_efficiency=0.1,
            bright_state_alpha=0.05,
            station_position_km=10.5,
        )


def test_workload_basis_defaults_to_random_for_measure_only():
    assert WorkloadConfig(src="a", dst="b", type="measure").basis == "random"
    assert WorkloadConfig(src="a", dst="b", type="keep").basis is None
    with pytest.raises(ValidationError, match="basis applies only to type measure"):
        WorkloadConfig(src="a", dst="b", type="keep", basis="Z")
    with pytest.raises(ValidationError):
        WorkloadConfig(src="a", dst="b", type="measure", basis="W")


def test_models_are_frozen():
    with pytest.raises(ValidationError):
        NodeConfig().qubits = 9


def test_helpers():
    topology = _ring()
    assert topology.node_names == ("a", "b", "c")
    assert topology.link_between("b", "a") is topology.links[0]
    assert topology.link_between("a", "a") is None
    assert topology.neighbours("a") == ["b", "c"]
    assert topology.neighbours("c") == ["b", "a"]
    with pytest.raises(KeyError):
        topology.neighbours("z")
    assert [name for name, _ in topology.stations()] == ["station-a-b", "station-b-c", "mid"]
    assert topology.stations()[2][1] is topology.links[2]


def test_graph():
    graph = _ring().graph()
    assert isinstance(graph, nx.Graph)
    assert sorted(graph.nodes) == ["a", "b", "c"]
    assert graph.number_of_edges() == 3
    assert graph.edges["a", "c"]["length_km"] == 7.5
    assert graph.edges["b", "c"]["length_km"] == 0.0
    assert graph.edges["a", "b"]["link"].model == "perfect"
    assert graph.nodes["c"]["config"].qubits == 8
    assert nx.shortest_path(graph, "a", "c", weight="length_km") == ["a", "b", "c"]


def test_round_trip_through_dict_and_yaml():
    import yaml

    topology = _ring()
    assert parse_topology(topology.to_dict(), "dict") == topology
    assert parse_topology(yaml.safe_load(topology.to_yaml()), "yaml") == topology


def test_direct_construction_checks_references():
    with pytest.raises(ValidationError, match=r"links\[0\].nodes\[1\]: unknown node 'z'"):
        Topology.model_validate(
            {
                "name": "x",
                "time_scale": 1,
                "nodes": {"a": {}},
                "links": [{"nodes": ["a", "z"], "model": "perfect"}],
            }
        )
