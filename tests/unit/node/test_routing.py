import math

import pytest

from qnemu.node.routing import Routing, swapped_fidelity, werner_parameter


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
