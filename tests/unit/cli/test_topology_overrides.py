"""`qnemu up TOPOLOGY --link ... --node ... --time-scale ...` builds the topology asked for."""

import argparse

import pytest

from qnemu.cli import UsageError, topology_from_args
from qnemu.topology import TopologyError


def args(topology: str, link=None, node=None, time_scale=None) -> argparse.Namespace:
    return argparse.Namespace(topology=topology, link=link, node=node, time_scale=time_scale)


def test_builder_specs_take_link_and_node_parameters():
    topology = topology_from_args(
        args("line,4", "model=depolarise,fidelity=0.95,prob_success=0.1", "qubits=8", 10.0)
    )
    assert len(topology.links) == 3 and topology.time_scale == 10.0
    assert all(link.model == "depolarise" and link.fidelity == 0.95 for link in topology.links)
    assert all(node.qubits == 8 for node in topology.nodes.values())


def test_a_file_gets_the_overrides_on_every_link_and_node():
    topology = topology_from_args(args("two-node-metro", "model=perfect", "t2_s=null"))
    (link,) = topology.links
    assert link.model == "perfect" and link.nodes == ("delft", "hague")
    assert link.length_km == 10  # where the link is stays
    assert all(node.t2_s is None for node in topology.nodes.values())


def test_bad_overrides_are_refused_with_their_place():
    with pytest.raises(TopologyError, match="unknown link model"):
        topology_from_args(args("line,3", "model=nonsense"))
    with pytest.raises(UsageError, match="key=value"):
        topology_from_args(args("line,3", "fidelity"))
