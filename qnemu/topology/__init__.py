"""Topologies: the network as typed data, read from YAML or built from a family.

Models: know what a valid node, link and workload is (`models.py`).
Loading: turns a file into models, or into a list of problems with their places (`load.py`).
Builders: make the usual families (line, ring, star, grid) from a spec like `line,5`.
A topology file is parsed, never executed; it names nothing outside itself.
"""

from qnemu.topology.builders import BUILDERS, build_topology
from qnemu.topology.load import (
    TopologyError,
    load_topology,
    parse_topology,
    shipped_topologies,
    validate_file,
)
from qnemu.topology.models import (
    LINK_MODELS,
    AnyLinkConfig,
    BaseLinkConfig,
    DecoyBB84LinkConfig,
    DepolariseLinkConfig,
    DoubleClickLinkConfig,
    LinkConfig,
    MqttConfig,
    NodeConfig,
    PerfectLinkConfig,
    SingleClickLinkConfig,
    Topology,
    WorkloadConfig,
)

__all__ = [
    "BUILDERS",
    "LINK_MODELS",
    "AnyLinkConfig",
    "BaseLinkConfig",
    "DecoyBB84LinkConfig",
    "DepolariseLinkConfig",
    "DoubleClickLinkConfig",
    "LinkConfig",
    "MqttConfig",
    "NodeConfig",
    "PerfectLinkConfig",
    "SingleClickLinkConfig",
    "Topology",
    "TopologyError",
    "WorkloadConfig",
    "build_topology",
    "load_topology",
    "parse_topology",
    "shipped_topologies",
    "validate_file",
]
