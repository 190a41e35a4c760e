"""The bb84_decoy link model: validation with located errors, no station, GYS defaults."""

import pytest

from qnemu.launch.faults import resolve_link
from qnemu.launch.plan import make_plan
from qnemu.qkd.decoy_bb84 import GOBBY_YUAN_SHIELDS
from qnemu.topology import TopologyError, parse_topology


def spec(**link) -> dict:
    return {
        "name": "decoy",
        "time_scale": 1.0,
        "nodes": {"a": {"saes": ["a_app"]}, "b": {"saes": ["b_app"]}, "c": {}},
        "links": [
            {"nodes": ["a", "b"], "model": "bb84_decoy", "length_km": 25.0, **link},
            {"nodes": ["b", "c"], "model": "perfect"},
        ],
    }


def problems(data: dict) -> list[str]:
    with pytest.raises(TopologyError) as caught:
        parse_topology(data, "test")
    return caught.value.problems


def test_defaults_are_the_gys_parameters_and_no_station_runs():
    topology = parse_topology(spec(), "test")
    decoy = topology.links[0]
    assert decoy.params() == GOBBY_YUAN_SHIELDS.at_length(25.0)
    assert [station for station, _ in topology.stations()] == ["station-b-c"]
    assert topology.entanglement_links() == [topology.links[1]]
    plan = make_plan(topology, secure=False)
    assert [p.name for p in plan.processes if p.role == "station"] == ["station-b-c"]
    assert resolve_link(plan, "b-a") == ("a", "b", None)
    assert resolve_link(plan, "b-c") == ("b", "c", "station-b-c")


def test_parameters_reach_the_physics():
    data = spec(
        intensities={"signal": 0.6, "decoy": 0.2, "vacuum": 0.0},
        intensity_probabilities={"signal": 0.7, "decoy": 0.2, "vacuum": 0.1},
        source_rate_hz=2.5e9,
        coexisting_classical_dbm=0.0,
    )
    params = parse_topology(data, "test").links[0].params()
    assert (params.signal_intensity, params.decoy_intensity) == (0.6, 0.2)
    assert params.intensity_probabilities.tolist() == [0.7, 0.2, 0.1]
    assert params.source_rate_hz == 2.5e9 and params.coexisting_classical_dbm == 0.0
    assert params.background_probability > params.dark_count_probability  # Raman adds


@pytest.mark.parametrize(
    ("link", "expected"),
    [
        ({"intensities": {"signal": 0.1, "decoy": 0.3}}, "links[0].intensities: need signal >"),
        ({"intensities": {"signal": 0.5, "decoy": 0.1, "vacuum": 0.05}},
         "links[0].intensities: vacuum must be 0"),
        ({"intensity_probabilities": {"signal": 0.8, "decoy": 0.1, "vacuum": 0.2}},
         "links[0].intensity_probabilities: must sum to 1"),
        ({"intensity_probabilities": {"signal": 0.9, "decoy": 0.1, "vacuum": 0.0}},
         "links[0].intensity_probabilities: every class needs"),
        ({"misalignment_error": 0.5}, "links[0].misalignment_error"),
        ({"detector_efficiency": 0.0}, "links[0].detector_efficiency"),
        ({"source_rate_hz": "1e9"}, "links[0].source_rate_hz"),
        ({"station": "s"}, "links[0]: unknown parameter 'station' for model bb84_decoy"),
        ({"block_pulses": 10}, "links[0].block_pulses"),
    ],
)  # fmt: skip
def test_bad_parameters_are_located(link, expected):
    found = problems(spec(**link))
    assert any(problem.startswith(expected) for problem in found), found


def test_both_ends_must_keep_keys():
    data = spec()
    data["links"][0]["nodes"] = ["a", "c"]
    found = problems(data)
    assert any(p.startswith("links[0].nodes[1]: node 'c' must declare saes") for p in found)
