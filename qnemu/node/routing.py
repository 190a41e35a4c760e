"""Routing over the topology graph: which path serves an end-to-end request.

Each link is weighted by what it costs an end-to-end pair: mostly fidelity, then rate.
Swapping Werner states multiplies their Werner parameters w = (4F − 1)/3, so
−ln w adds up along a path and the shortest path under it has the best fidelity;
a small 1/rate term breaks ties in favour of faster links. The estimate ignores
memory decoherence and gate noise, so it is an upper bound on what the path gives.
"""

import itertools
import math
from dataclasses import dataclass

from qnemu.physics.fibre import SPEED_OF_LIGHT_IN_FIBRE_KM_PER_S

__all__ = ["Route", "Routing", "swapped_fidelity", "werner_parameter"]

RATE_WEIGHT_S = 1e-3  # cost of one second of expected waiting, in units of −ln w


def werner_parameter(fidelity: float) -> float:
    return (4.0 * fidelity - 1.0) / 3.0


def swapped_fidelity(fidelities: list[float]) -> float:
    """Fidelity after swapping Werner pairs of these fidelities with perfect operations."""
    product = math.prod(werner_parameter(f) for f in fidelities)
    return (3.0 * product + 1.0) / 4.0


@dataclass(frozen=True)
class Route:
    path: tuple[str, ...]
    estimated_fidelity: float
    fibre_km: float


class Routing:
    """Paths between the nodes of a network, from each link's fidelity, rate and length.

    Args:
        links: (node_a, node_b, fidelity, expected_rate_hz, length_km) per link.
    """

    def __init__(self, links: list[tuple[str, str, float, float, float]]):
        import networkx as nx  # imported here: only nodes that route pay for it

        self._nx = nx
        self.graph = nx.Graph()
        for a, b, fidelity, rate_hz, length_km in links:
            w = max(werner_parameter(fidelity), 1e-12)
            self.graph.add_edge(
                a,
                b,
                fidelity=fidelity,
                length_km=length_km,
                cost=-math.log(w) + RATE_WEIGHT_S / max(rate_hz, 1e-12),
            )

    def best_route(self, src: str, dst: str) -> Route | None:
        """The cheapest path, or None when the nodes are not connected."""
        nx = self._nx
        if src not in self.graph or dst not in self.graph:
            return None
        try:
            path = nx.shortest_path(self.graph, src, dst, weight="cost")
        except nx.NetworkXNoPath:
            return None
        edges = [self.graph.edges[a, b] for a, b in itertools.pairwise(path)]
        return Route(
            tuple(path),
            swapped_fidelity([edge["fidelity"] for edge in edges]),
            sum(edge["length_km"] for edge in edges),
        )

    def fibre_delays_s(self, src: str) -> dict[str, float]:
        """Classical delay from `src` to every reachable node, over the shortest fibre."""
        lengths = self._nx.single_source_dijkstra_path_length(self.graph, src, weight="length_km")
        return {node: km / SPEED_OF_LIGHT_IN_FIBRE_KM_PER_S for node, km in lengths.items()}
