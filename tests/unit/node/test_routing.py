import math

import pytest

from qnemu.node.routing import MAX_ROUNDS, Routing, swapped_fidelity, werner_parameter
from qnemu.physics.purification import (
    bbpssw,
    purified,
    swapped_coefficients,
    werner_coefficients,
)


def test_swapped_fidelity_multiplies_werner_parameters():
    assert swapped_fidelity([0.9]) == pytest.approx(0.9)
    f1, f2 = 0.95, 0.9
    expected = f1 * f2 + (1 - f1) * (1 - f2) / 3  # the closed form for two Werner pairs
    assert swapped_fidelity([f1, f2]) == pytest.approx(expected, abs=1e-12)
    assert werner_parameter(0.25) == 0.0


def test_the_best_route_prefers_fidelity_then_rate():
    # a-b-d is short but noisy; a-c-d is longer and clean.
    routing = Routing(
        [
            ("a", "b", 0.8, 1000.0, 5.0),
            ("b", "d", 0.8, 1000.0, 5.0),
            ("a", "c", 0.99, 10.0, 20.0),
            ("c", "d", 0.99, 10.0, 20.0),
        ]
    )
    route = routing.best_route("a", "d")
    assert route.path == ("a", "c", "d")
    assert route.estimated_fidelity == pytest.approx(swapped_fidelity([0.99, 0.99]))
    assert route.fibre_km == 40.0
    assert routing.best_route("a", "zz") is None
    delays = routing.fibre_delays_s("a")
    assert delays["d"] == pytest.approx(
        10.0 / 200_000
    )  # the classical channel takes the short fibre
    assert math.isclose(delays["a"], 0.0)


def test_unconnected_nodes_have_no_route():
    routing = Routing([("a", "b", 0.9, 1.0, 1.0), ("c", "d", 0.9, 1.0, 1.0)])
    assert routing.best_route("a", "d") is None


def test_the_planner_purifies_only_when_the_raw_links_fall_short():
    routing = Routing([("a", "b", 0.9, 100.0, 1.0), ("b", "c", 0.9, 100.0, 1.0)])
    raw = swapped_fidelity([0.9, 0.9])
    route = routing.plan("a", "c", raw)
    assert route.path == ("a", "b", "c") and not route.purifies
    assert route.estimated_fidelity == pytest.approx(raw)

    one_round, success = bbpssw(0.9)  # = the first DEJMPS round on Werner links
    target = swapped_fidelity([one_round, 0.9]) - 1e-9
    route = routing.plan("a", "c", target, "bbpssw")
    assert sorted(route.rounds) == [0, 1]  # one round on one link is enough
    assert route.estimated_fidelity == pytest.approx(target, abs=1e-8)
    assert route.expected_rate_hz == pytest.approx(100.0 * success / 2)

    both = routing.plan("a", "c", swapped_fidelity([one_round, one_round]), "bbpssw")
    assert both.rounds == (1, 1)
    assert both.estimated_fidelity == pytest.approx(swapped_fidelity([one_round] * 2))


def test_dejmps_paths_are_estimated_with_the_non_werner_weights_it_makes():
    routing = Routing([("a", "b", 0.8, 100.0, 1.0), ("b", "c", 0.8, 100.0, 1.0)])
    weights, _ = purified(werner_coefficients(0.8), "dejmps", 2)
    route = routing.plan("a", "c", 0.85, "dejmps")
    assert route.rounds == (2, 2)
    assert route.estimated_fidelity == pytest.approx(swapped_coefficients([weights] * 2)[0])
    # Werner formula on the purified fidelities: close, but not the same number.
    assert route.estimated_fidelity != pytest.approx(swapped_fidelity([weights[0]] * 2), abs=1e-6)


def test_an_unreachable_target_returns_the_best_plan_below_it():
    routing = Routing([("a", "b", 0.8, 100.0, 1.0), ("b", "c", 0.8, 100.0, 1.0)])
    route = routing.plan("a", "c", 0.999, "dejmps")
    assert route.estimated_fidelity < 0.999
    assert route.rounds == (MAX_ROUNDS, MAX_ROUNDS)
    no_purification = routing.plan("a", "c", 0.999, max_rounds=0)
    assert no_purification.estimated_fidelity == pytest.approx(swapped_fidelity([0.8, 0.8]))
    # Below F = 1/2 purification does not help: no rounds are spent on it.
    weak = Routing([("a", "b", 0.45, 100.0, 1.0)])
    assert weak.plan("a", "b", 0.9, "bbpssw", direct=True).rounds == (0,)


def test_memory_bounds_the_rounds_a_node_takes_part_in():
    links = [("a", "b", 0.8, 100.0, 1.0), ("b", "c", 0.8, 100.0, 1.0)]
    roomy = Routing(links, memory={"a": 8, "b": 8, "c": 8}).plan("a", "c", 0.999)
    assert roomy.rounds == (3, 3)
    tight = Routing(links, memory={"a": 8, "b": 5, "c": 8}).plan("a", "c", 0.999)
    assert sum(r + 1 for r in tight.rounds) <= 5  # the repeater holds both links' trees


def test_paths_are_compared_after_purification_and_direct_means_the_link():
    links = [
        ("a", "d", 0.85, 1000.0, 1.0),  # one noisy link
        ("a", "b", 0.97, 1000.0, 1.0),
        ("b", "c", 0.97, 1000.0, 1.0),
        ("c", "d", 0.97, 1000.0, 1.0),
    ]
    routing = Routing(links)
    assert routing.plan("a", "d", 0.0).path == ("a", "b", "c", "d")  # raw: the better one
    # 0.95 is beyond the raw chain (0.9135); the noisy link purified twice gets there.
    route = routing.plan("a", "d", 0.95)
    assert route.estimated_fidelity >= 0.95 and route.purifies
    assert routing.plan("a", "d", 0.95, direct=True).path == ("a", "d")
    assert routing.plan("a", "b", 0.99, direct=True).path == ("a", "b")
    assert routing.plan("a", "zz", 0.5) is None


def test_once_a_round_reaches_the_target_the_planner_takes_the_one_needing_fewest_pairs():
    routing = Routing([("a", "b", 0.9, 100.0, 1.0), ("b", "c", 0.9, 100.0, 1.0)])
    # From (1, 0), both (2, 0) and (1, 1) reach 0.85 with DEJMPS; (1, 1) needs fewer pairs.
    route = routing.plan("a", "c", 0.85, "dejmps")
    assert route.rounds == (1, 1)
