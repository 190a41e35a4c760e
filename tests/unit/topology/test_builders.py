"""Topology families: node and link counts, degrees, names and overrides."""

from collections import Counter

import pytest

from qnemu.topology import BUILDERS, TopologyError, build_topology, load_topology
from qnemu.topology.builders import grid, line, ring, star


def _degrees(topology):
    return Counter(dict(topology.graph().degree()).values())


def test_line():
    topology = build_topology("line,5")
    assert topology.name == "line-5"
    assert topology.node_names == ("n0", "n1", "n2", "n3", "n4")
    assert len(topology.links) == 4
    assert _degrees(topology) == {1: 2, 2: 3}
    assert topology.neighbours("n2") == ["n1", "n3"]


def test_ring():
    topology = build_topology("ring,6")
    assert len(topology.nodes) == 6
    assert len(topology.links) == 6
    assert _degrees(topology) == {2: 6}
    assert topology.link_between("n5", "n0") is not None


def test_star():
    topology = build_topology("star,4")
    assert topology.node_names == ("hub", "leaf0", "leaf1", "leaf2", "leaf3")
    assert len(topology.links) == 4
    assert _degrees(topology) == {4: 1, 1: 4}


def test_grid():
    topology = build_topology("grid,2,3")
    assert topology.name == "grid-2x3"
    assert len(topology.nodes) == 6
    # rows·(cols−1) + cols·(rows−1) = 2·2 + 3·1
    assert len(topology.links) == 7
    assert _degrees(topology) == {2: 4, 3: 2}
    assert sorted(topology.neighbours("n4")) == ["n1", "n3", "n5"]


def test_default_link_is_perfect_over_10_km():
    link = build_topology("ring,3").links[0]
    assert link.model == "perfect"
    assert link.length_km == 10.0


def test_overrides_apply_to_every_node_and_link():
    topology = build_topology(
        "line,3",
        link={"model": "depolarise", "fidelity": 0.95, "prob_success": 0.1},
        node={"qubits": 16, "t2_s": 0.5},
        seed=3,
        time_scale=10.0,
    )
    assert {link.model for link in topology.links} == {"depolarise"}
    assert {link.fidelity for link in topology.links} == {0.95}
    assert {link.length_km for link in topology.links} == {10.0}
    assert {node.qubits for node in topology.nodes.values()} == {16}
    assert (topology.seed, topology.time_scale) == (3, 10.0)


def test_bad_override_is_a_topology_error():
    with pytest.raises(TopologyError, match="unknown parameter 'fidelty'"):
        build_topology("line,2", link={"model": "depolarise", "fidelty": 0.9})
    with pytest.raises(TopologyError, match=r"qubits: must be >= 1 \(got 0\)"):
        line(2, node={"qubits": 0})


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("mesh,4", "unknown builder 'mesh'"),
        ("line", "line takes line,N"),
        ("line,x", "line takes line,N"),
        ("grid,2", "grid takes grid,ROWS,COLS"),
        ("line,1", "n must be an integer >= 2"),
        ("ring,2", "n must be an integer >= 3"),
        ("star,0", "n must be an integer >= 1"),
        ("grid,1,1", "at least 2 nodes"),
    ],
)
def test_bad_spec_names_the_builders(spec, expected):
    with pytest.raises(TopologyError, match=expected) as caught:
        build_topology(spec)
    if "takes" in expected or "unknown" in expected:
        assert "line,N; ring,N; star,LEAVES; grid,ROWS,COLS" in str(caught.value)


def test_builders_table_and_functions():
    assert set(BUILDERS) == {"line", "ring", "star", "grid"}
    assert len(ring(5).links) == 5
    assert len(star(2).nodes) == 3
    assert len(grid(3, 3).links) == 12


def test_load_topology_accepts_a_spec():
    assert load_topology("star,3").name == "star-3"
    with pytest.raises(TopologyError, match="unknown builder"):
        load_topology("tree,3")
