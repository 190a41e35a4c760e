"""Routing over the topology graph: which path serves an end-to-end request, and how
many purification rounds each of its links needs.

A plan's cost is what one end-to-end pair costs: −ln w of its fidelity (w = (4F − 1)/3,
so for Werner links it adds up along the path) plus RATE_WEIGHT_S per second of expected
generation time (raw pairs needed ÷ link rate, summed over links), so fidelity counts
first and rate breaks near-ties. When the raw links do not reach a request's
`minimum_fidelity`, the planner purifies link pairs before they are swapped
("purify-then-swap"): it adds one round at a time — to the link where it helps the
path's fidelity most, or, once one more round reaches the target, where that needs the
fewest raw pairs — until the target is met, the rounds run out (MAX_ROUNDS per link) or
the nodes' memories could not hold them (r + 1 qubits per purified link at each end).
The estimates assume perfect gates and no memory decay, so they are upper bounds.
"""

import itertools
import math
from dataclasses import dataclass

from qnemu.physics.fibre import SPEED_OF_LIGHT_IN_FIBRE_KM_PER_S
from qnemu.physics.purification import purified, swapped_coefficients, werner_coefficients

__all__ = [
    "MAX_ROUNDS",
    "Hop",
    "Route",
    "Routing",
    "plan_rounds",
    "swapped_fidelity",
    "werner_parameter",
]

RATE_WEIGHT_S = 1e-3  # cost of one second of expected waiting, in units of −ln w
MAX_ROUNDS = 3  # purification rounds per link (2^3 raw pairs at least per purified pair)
CANDIDATE_PATHS = 8  # cheapest simple paths the planner looks at


def werner_parameter(fidelity: float) -> float:
    return (4.0 * fidelity - 1.0) / 3.0


def swapped_fidelity(fidelities: list[float]) -> float:
    """Fidelity after swapping Werner pairs of these fidelities with perfect operations."""
    product = math.prod(werner_parameter(f) for f in fidelities)
    return (3.0 * product + 1.0) / 4.0


@dataclass(frozen=True)
class Hop:
    """One link as the planner sees it."""

    fidelity: float
    rate_hz: float
    coefficients: tuple[float, float, float, float]  # Bell-diagonal weights after the frame


@dataclass(frozen=True)
class Route:
    path: tuple[str, ...]
    estimated_fidelity: float
    fibre_km: float
    rounds: tuple[int, ...] = ()  # purification rounds per link; () or all 0: none
    protocol: str = "dejmps"
    expected_rate_hz: float = math.inf

    @property
    def purifies(self) -> bool:
        return any(self.rounds)


@dataclass(frozen=True)
class _Plan:
    rounds: tuple[int, ...]
    fidelity: float
    rate_hz: float
    seconds: float  # expected generation time of one end-to-end pair, summed over links
    cost: float


def _evaluate(hops: list[Hop], rounds: list[int], protocol: str) -> _Plan:
    links, seconds, slowest = [], 0.0, math.inf
    for hop, r in zip(hops, rounds, strict=True):
        weights, successes = purified(hop.coefficients, protocol, r)
        if r == 0:
            weights = hop.coefficients  # not purified: not twirled either
        raw_pairs = 1.0
        for success in successes:  # two pairs of the round below per attempt
            raw_pairs = 2.0 * raw_pairs / max(success, 1e-12)
        links.append(weights)
        seconds += raw_pairs / max(hop.rate_hz, 1e-12)
        slowest = min(slowest, max(hop.rate_hz, 1e-12) / raw_pairs)
    fidelity = swapped_coefficients(links)[0]
    cost = -math.log(max(werner_parameter(fidelity), 1e-12)) + RATE_WEIGHT_S * seconds
    return _Plan(tuple(rounds), fidelity, slowest, seconds, cost)


def plan_rounds(
    hops: list[Hop],
    target: float,
    protocol: str = "dejmps",
    max_rounds: int = MAX_ROUNDS,
    memory: list[int] | None = None,
) -> _Plan:
    """Rounds per hop that reach `target` (or, failing that, the best fidelity reachable).

    Args:
        memory: qubits of each node along the path (len(hops) + 1); a node needs r + 1
            per purified link it is an end of (r + 1 = one pair per level, plus one).
    """
    rounds = [0] * len(hops)
    plan = _evaluate(hops, rounds, protocol)

    def fits(candidate: list[int]) -> bool:
        if memory is None:
            return True
        for node, qubits in enumerate(memory):
            touching = [candidate[h] + 1 for h in (node - 1, node) if 0 <= h < len(hops)]
            if sum(touching) > qubits:
                return False
        return True

    while plan.fidelity < target - 1e-12:
        options = []
        for hop in range(len(hops)):
            candidate = rounds.copy()
            candidate[hop] += 1
            if candidate[hop] <= max_rounds and fits(candidate):
                options.append((_evaluate(hops, candidate, protocol), candidate))
        better = [(p, c) for p, c in options if p.fidelity > plan.fidelity + 1e-12]
        if not better:
            break  # purification cannot help further (or has no room)
        reaching = [(p, c) for p, c in better if p.fidelity >= target - 1e-12]
        if reaching:  # no more purification than the target needs
            plan, rounds = min(reaching, key=lambda option: option[0].seconds)
        else:
            plan, rounds = max(better, key=lambda option: option[0].fidelity)
    return plan


class Routing:
    """Paths between the nodes of a network, from each link's fidelity, rate and length.

    Args:
        links: (node_a, node_b, fidelity, expected_rate_hz, length_km) per link, with
            optionally a sixth item, the Bell-diagonal weights (Φ+, Ψ−, Ψ+, Φ−) of a pair
            after the frame update (default: the Werner state of that fidelity).
        memory: qubits per node, so that a plan never purifies more than a node can hold.
    """

    def __init__(self, links: list[tuple], memory: dict[str, int] | None = None):
        import networkx as nx  # imported here: only nodes that route pay for it

        self._nx = nx
        self.memory = dict(memory or {})
        self.graph = nx.Graph()
        for a, b, fidelity, rate_hz, length_km, *rest in links:
            w = max(werner_parameter(fidelity), 1e-12)
            self.graph.add_edge(
                a,
                b,
                hop=Hop(fidelity, rate_hz, rest[0] if rest else werner_coefficients(fidelity)),
                fidelity=fidelity,
                length_km=length_km,
                cost=-math.log(w) + RATE_WEIGHT_S / max(rate_hz, 1e-12),
            )

    def best_route(self, src: str, dst: str) -> Route | None:
        """The cheapest path with raw links, or None when the nodes are not connected."""
        return self.plan(src, dst, 0.0)

    def plan(
        self,
        src: str,
        dst: str,
        minimum_fidelity: float,
        protocol: str = "dejmps",
        *,
        max_rounds: int = MAX_ROUNDS,
        direct: bool = False,
        within_memory: bool = True,
    ) -> Route | None:
        """The cheapest plan (path and rounds per link) that reaches `minimum_fidelity`;
        when none does, the plan with the best fidelity (below it: the caller refuses).
        None when the nodes are not connected.

        Args:
            direct: only the link between src and dst (a request to a neighbour).
            within_memory: False to ignore the nodes' memories (to tell NORES from NOTIME).
        """
        candidates = self._paths(src, dst, direct)
        best: tuple[_Plan, tuple[str, ...]] | None = None
        reaching: list[tuple[_Plan, tuple[str, ...]]] = []
        for path in candidates:
            hops = [self.graph.edges[a, b]["hop"] for a, b in itertools.pairwise(path)]
            known = within_memory and set(path) <= set(self.memory)
            memory = [self.memory[n] for n in path] if known else None
            plan = plan_rounds(hops, minimum_fidelity, protocol, max_rounds, memory)
            if plan.fidelity >= minimum_fidelity - 1e-12:
                reaching.append((plan, path))
            elif best is None or plan.fidelity > best[0].fidelity:
                best = (plan, path)
        if reaching:
            best = min(reaching, key=lambda option: option[0].cost)
        if best is None:
            return None
        plan, path = best
        return Route(
            path,
            plan.fidelity,
            sum(self.graph.edges[a, b]["length_km"] for a, b in itertools.pairwise(path)),
            plan.rounds,
            protocol,
            plan.rate_hz,
        )

    def _paths(self, src: str, dst: str, direct: bool) -> list[tuple[str, ...]]:
        nx = self._nx
        if src not in self.graph or dst not in self.graph or src == dst:
            return []
        if direct:
            return [(src, dst)] if self.graph.has_edge(src, dst) else []
        try:
            paths = nx.shortest_simple_paths(self.graph, src, dst, weight="cost")
            return [tuple(p) for p in itertools.islice(paths, CANDIDATE_PATHS)]
        except nx.NetworkXNoPath:
            return []

    def fibre_delays_s(self, src: str) -> dict[str, float]:
        """Classical delay from `src` to every reachable node, over the shortest fibre."""
        lengths = self._nx.single_source_dijkstra_path_length(self.graph, src, weight="length_km")
        return {node: km / SPEED_OF_LIGHT_IN_FIBRE_KM_PER_S for node, km in lengths.items()}
