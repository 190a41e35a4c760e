"""Typed topology: nodes (quantum memories), links (fibre + heralding physics) and workloads."""

from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator
from pydantic_core import PydanticCustomError

if TYPE_CHECKING:
    import networkx as nx

    from qnemu.physics.links import LinkPhysics

__all__ = [
    "LINK_MODELS",
    "NAME_PATTERN",
    "NETWORK_NAME_PATTERN",
    "AnyLinkConfig",
    "DepolariseLinkConfig",
    "DoubleClickLinkConfig",
    "LinkConfig",
    "MqttConfig",
    "NodeConfig",
    "PerfectLinkConfig",
    "SingleClickLinkConfig",
    "Topology",
    "WorkloadConfig",
    "reference_problems",
]

# Network names go into MQTT topics and run-directory names; node and station names also
# become ZeroMQ identities, file names and Prometheus label values.
NETWORK_NAME_PATTERN = r"^[a-z0-9-]+$"
NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]*$"

NetworkName = Annotated[str, StringConstraints(pattern=NETWORK_NAME_PATTERN, max_length=63)]
Name = Annotated[str, StringConstraints(pattern=NAME_PATTERN, max_length=63)]

# strict: a quoted "0.5" or a `true` in YAML is a mistake, not a number.
Probability = Annotated[float, Field(strict=True, ge=0.0, le=1.0, allow_inf_nan=False)]
PositiveFloat = Annotated[float, Field(strict=True, gt=0.0, allow_inf_nan=False)]
NonNegativeFloat = Annotated[float, Field(strict=True, ge=0.0, allow_inf_nan=False)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NodeConfig(_Strict):
    """A quantum node's memory: qubits, T1/T2 decay, gate and readout noise, pair cutoff."""

    qubits: Annotated[int, Field(strict=True, ge=1)] = 4
    t1_s: PositiveFloat | None = None  # None: no amplitude damping
    t2_s: PositiveFloat | None = None  # None: no dephasing
    single_qubit_gate_depolar_prob: Probability = 0.0
    two_qubit_gate_depolar_prob: Probability = 0.0
    readout_error: tuple[Probability, Probability] = (0.0, 0.0)  # [p(1|0), p(0|1)]
    cutoff_s: PositiveFloat | None = None  # None: an unused pair is kept forever
    # Secure application entities attached to this node's key manager (ETSI GS QKD 014).
    saes: tuple[Name, ...] = ()

    @model_validator(mode="after")
    def _t2_within_twice_t1(self) -> "NodeConfig":
        # Coherence cannot outlive twice the population lifetime (T2 ≤ 2·T1).
        if self.t1_s is not None and self.t2_s is not None and self.t2_s > 2.0 * self.t1_s:
            raise ValueError(f"t2_s ({self.t2_s:g}) must be <= 2 * t1_s ({2.0 * self.t1_s:g})")
        return self


class LinkConfig(_Strict):
    """A link between two nodes: fibre, heralding station and the physics model it runs."""

    model: str
    nodes: tuple[Name, Name]
    station: Name | None = None  # None: station-<a>-<b>
    t_cycle_s: PositiveFloat = 1e-6

    # Fields that describe the wiring rather than the physics.
    _WIRING: ClassVar[frozenset[str]] = frozenset({"model", "nodes", "station"})

    @property
    def station_name(self) -> str:
        """The heralding station's process name."""
        return self.station or f"station-{self.nodes[0]}-{self.nodes[1]}"

    def joins(self, a: str, b: str) -> bool:
        """True if this link joins `a` and `b` (in either order)."""
        return {a, b} == set(self.nodes)

    def other(self, name: str) -> str:
        """The node at the other end of the link from `name`."""
        if name not in self.nodes:
            raise KeyError(f"{name!r} is not an end of the link {self.nodes[0]}-{self.nodes[1]}")
        return self.nodes[1] if name == self.nodes[0] else self.nodes[0]

    @classmethod
    def parameter_names(cls) -> tuple[str, ...]:
        """Keyword parameters this model passes to `qnemu.physics.links.link_physics`."""
        return tuple(name for name in cls.model_fields if name not in cls._WIRING)

    def physics_params(self) -> dict[str, Any]:
        """Keyword arguments for `link_physics(self.model, **params)`."""
        return {name: getattr(self, name) for name in self.parameter_names()}

    def physics(self) -> "LinkPhysics":
        """The link's physics (success probability, attempt period, delivered states)."""
        # Imported here so the topology can be validated without the physics stack.
        from qnemu.physics.links import link_physics

        return link_physics(self.model, **self.physics_params())


class PerfectLinkConfig(LinkConfig):
    """Every attempt succeeds with an exact Φ+ pair."""

    model: Literal["perfect"]
    length_km: NonNegativeFloat = 0.0


class DepolariseLinkConfig(LinkConfig):
    """Success with probability `prob_success`; a Werner pair of fidelity `fidelity`."""

    model: Literal["depolarise"]
    fidelity: Probability
    prob_success: Annotated[float, Field(strict=True, gt=0.0, le=1.0, allow_inf_nan=False)]
    length_km: NonNegativeFloat = 0.0


class _HeraldedLinkConfig(LinkConfig):
    length_km: NonNegativeFloat
    node_efficiency: Annotated[float, Field(strict=True, gt=0.0, le=1.0, allow_inf_nan=False)]
    attenuation_db_per_km: NonNegativeFloat = 0.2
    station_position_km: NonNegativeFloat | None = None  # None: in the middle
    dark_count_probability: Annotated[
        float, Field(strict=True, ge=0.0, lt=1.0, allow_inf_nan=False)
    ] = 0.0
    visibility: Probability = 1.0

    @model_validator(mode="after")
    def _station_on_the_fibre(self) -> "_HeraldedLinkConfig":
        position = self.station_position_km
        if position is not None and position > self.length_km:
            raise ValueError(
                f"station_position_km ({position:g}) must be <= length_km ({self.length_km:g})"
            )
        return self


class SingleClickLinkConfig(_HeraldedLinkConfig):
    """Single-click (bright-state α) heralding through a station: p ≈ 2αη, F ≈ 1 − α."""

    model: Literal["heralded_single_click"]
    bright_state_alpha: Annotated[float, Field(strict=True, gt=0.0, le=1.0, allow_inf_nan=False)]


class DoubleClickLinkConfig(_HeraldedLinkConfig):
    """Barrett–Kok double-click heralding through a station: p ≈ η²/2."""

    model: Literal["heralded_double_click"]


LINK_MODELS: dict[str, type[LinkConfig]] = {
    "perfect": PerfectLinkConfig,
    "depolarise": DepolariseLinkConfig,
    "heralded_single_click": SingleClickLinkConfig,
    "heralded_double_click": DoubleClickLinkConfig,
}

AnyLinkConfig = Annotated[
    PerfectLinkConfig | DepolariseLinkConfig | SingleClickLinkConfig | DoubleClickLinkConfig,
    Field(discriminator="model"),
]


class WorkloadConfig(_Strict):
    """Background requests a node runs by itself: `number` pairs (0 = forever) to `dst`."""

    src: Name
    dst: Name
    type: Literal["keep", "measure"]
    basis: Literal["Z", "X", "Y", "random"] | None = None  # measure only; default random
    number: Annotated[int, Field(strict=True, ge=0)] = 0
    minimum_fidelity: Probability = 0.0
    # Above what the links give: purify link pairs (dejmps, bbpssw) or refuse (none).
    purify: Literal["dejmps", "bbpssw", "none"] = "dejmps"
    pause_s: NonNegativeFloat = 0.0  # between requests

    @model_validator(mode="before")
    @classmethod
    def _measure_basis_defaults_to_random(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("type") == "measure" and data.get("basis") is None:
            return {**data, "basis": "random"}
        return data

    @model_validator(mode="after")
    def _basis_only_for_measure(self) -> "WorkloadConfig":
        if self.type == "keep" and self.basis is not None:
            raise ValueError("basis applies only to type measure")
        return self


class MqttConfig(_Strict):
    """Where the network's northbound MQTT interface connects."""

    url: Annotated[str, StringConstraints(pattern=r"^mqtts?://[^\s/]+(:[0-9]+)?/?$")]


class Topology(_Strict):
    """A quantum network: named nodes, the links between them and background workloads."""

    name: NetworkName
    time_scale: PositiveFloat  # emulated time = wall time / time_scale
    seed: Annotated[int, Field(strict=True, ge=0)] | None = None
    nodes: Annotated[dict[Name, NodeConfig], Field(min_length=1)]
    links: tuple[AnyLinkConfig, ...] = ()
    workloads: tuple[WorkloadConfig, ...] = ()
    mqtt: MqttConfig | None = None  # northbound control over MQTT, when given

    @model_validator(mode="after")
    def _references_resolve(self) -> "Topology":
        problems = reference_problems(self.nodes, self.links, self.workloads)
        if problems:
            summary = "; ".join(f"{where}: {what}" for where, what in problems)
            raise PydanticCustomError(
                "topology_references", "{summary}", {"summary": summary, "problems": problems}
            )
        return self

    @property
    def node_names(self) -> tuple[str, ...]:
        return tuple(self.nodes)

    def link_between(self, a: str, b: str) -> LinkConfig | None:
        """The link joining `a` and `b` (either order), or None."""
        return next((link for link in self.links if link.joins(a, b)), None)

    def neighbours(self, name: str) -> list[str]:
        """Nodes linked directly to `name`, in file order."""
        if name not in self.nodes:
            raise KeyError(f"unknown node {name!r} (known: {', '.join(self.nodes)})")
        return [link.other(name) for link in self.links if name in link.nodes]

    def stations(self) -> list[tuple[str, LinkConfig]]:
        """Every heralding station with the link it serves (one per link)."""
        return [(link.station_name, link) for link in self.links]

    def graph(self) -> "nx.Graph":
        """The network as a graph: node attribute `config`, edge attributes `length_km`, `link`."""
        import networkx as nx  # imported here: node processes never need it

        graph = nx.Graph(name=self.name)
        for name, config in self.nodes.items():
            graph.add_node(name, config=config)
        for link in self.links:
            graph.add_edge(*link.nodes, length_km=link.length_km, link=link)
        return graph

    def to_dict(self) -> dict[str, Any]:
        """Plain data (defaults already applied) that `parse_topology` reads back."""
        return self.model_dump(mode="json")

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def _field(item: Any, key: str) -> Any:
    return item.get(key) if isinstance(item, dict) else getattr(item, key, None)


def _pair(item: Any) -> tuple[str, str] | None:
    """The two node names of a raw or validated link, or None when they are malformed."""
    nodes = _field(item, "nodes")
    if (
        isinstance(nodes, list | tuple)
        and len(nodes) == 2
        and all(isinstance(n, str) for n in nodes)
    ):
        return nodes[0], nodes[1]
    return None


def reference_problems(
    node_names: Collection[str], links: Sequence[Any], workloads: Sequence[Any]
) -> list[tuple[str, str]]:
    """(location, problem) for every name that does not resolve; works on raw dicts too.

    Checks what a single field cannot: link ends and workload ends name known nodes,
    no self-links, one link per pair, unique station names, workloads on adjacent nodes.
    """
    known = ", ".join(node_names)
    problems: list[tuple[str, str]] = []
    first_link_of_pair: dict[frozenset[str], int] = {}
    station_owner: dict[str, str] = {name: f"node {name}" for name in node_names}
    # A broken link may be the one a workload needs: then "not linked" would mislead.
    all_links_resolve = True
    for index, link in enumerate(links):
        pair = _pair(link)
        if pair is None:
            all_links_resolve = False
            continue
        for end, name in enumerate(pair):
            if name not in node_names:
                all_links_resolve = False
                problems.append(
                    (f"links[{index}].nodes[{end}]", f"unknown node {name!r} (known: {known})")
                )
        if pair[0] == pair[1]:
            problems.append(
                (
                    f"links[{index}].nodes",
                    f"a link joins two different nodes (got {pair[0]!r} twice)",
                )
            )
            continue
        key = frozenset(pair)
        if key in first_link_of_pair:
            problems.append(
                (
                    f"links[{index}]",
                    f"duplicate link between {pair[0]} and {pair[1]}"
                    f" (first at links[{first_link_of_pair[key]}])",
                )
            )
            continue
        first_link_of_pair[key] = index
        station = _field(link, "station")
        station = station if isinstance(station, str) else f"station-{pair[0]}-{pair[1]}"
        if station in station_owner:
            problems.append(
                (
                    f"links[{index}].station",
                    f"name {station!r} is already used by {station_owner[station]}",
                )
            )
        else:
            station_owner[station] = f"links[{index}]"
    for index, workload in enumerate(workloads):
        ends = [_field(workload, "src"), _field(workload, "dst")]
        unknown = False
        for key, name in zip(("src", "dst"), ends, strict=True):
            if isinstance(name, str) and name not in node_names:
                problems.append(
                    (f"workloads[{index}].{key}", f"unknown node {name!r} (known: {known})")
                )
                unknown = True
        if unknown or not all(isinstance(name, str) for name in ends):
            continue
        if ends[0] == ends[1]:
            problems.append((f"workloads[{index}]", f"src and dst are the same node ({ends[0]!r})"))
        elif all_links_resolve and frozenset(ends) not in first_link_of_pair:
            # Multi-hop requests need the network layer; until then a workload runs on one link.
            problems.append(
                (f"workloads[{index}]", f"{ends[0]} and {ends[1]} are not linked directly")
            )
    return problems
