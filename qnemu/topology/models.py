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
    "BaseLinkConfig",
    "DecoyBB84LinkConfig",
    "DecoyIntensities",
    "DepolariseLinkConfig",
    "DoubleClickLinkConfig",
    "IntensityProbabilities",
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


class BaseLinkConfig(_Strict):
    """A fibre between two nodes; subclasses say what runs over it."""

    model: str
    nodes: tuple[Name, Name]

    # True for entanglement links (a heralding station process serves them).
    has_station: ClassVar[bool] = False

    @property
    def name(self) -> str:
        """`<a>-<b>` in the file's order: the link's label in metrics, stats and faults."""
        return f"{self.nodes[0]}-{self.nodes[1]}"

    def joins(self, a: str, b: str) -> bool:
        """True if this link joins `a` and `b` (in either order)."""
        return {a, b} == set(self.nodes)

    def other(self, name: str) -> str:
        """The node at the other end of the link from `name`."""
        if name not in self.nodes:
            raise KeyError(f"{name!r} is not an end of the link {self.nodes[0]}-{self.nodes[1]}")
        return self.nodes[1] if name == self.nodes[0] else self.nodes[0]


class LinkConfig(BaseLinkConfig):
    """An entanglement link: fibre, heralding station and the physics model it runs."""

    station: Name | None = None  # None: station-<a>-<b>
    t_cycle_s: PositiveFloat = 1e-6
    # Which QKD runs over the link's pairs: auto (BBM92 when both nodes declare SAEs),
    # bbm92 (required: both nodes must declare SAEs) or none (never). docs/qkd.md.
    qkd: Literal["auto", "bbm92", "none"] = "auto"

    has_station: ClassVar[bool] = True
    # Fields that are not physics parameters: the wiring, and what runs over the link.
    _WIRING: ClassVar[frozenset[str]] = frozenset({"model", "nodes", "station", "qkd"})

    @property
    def station_name(self) -> str:
        """The heralding station's process name."""
        return self.station or f"station-{self.nodes[0]}-{self.nodes[1]}"

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


class DecoyIntensities(_Strict):
    """Mean photon numbers of the three pulse classes of a decoy-state BB84 source."""

    signal: PositiveFloat = 0.48
    decoy: PositiveFloat = 0.1
    # The estimators (MQZL section IV.B) need a true vacuum decoy: only 0 is accepted.
    vacuum: NonNegativeFloat = 0.0

    @model_validator(mode="after")
    def _ordered(self) -> "DecoyIntensities":
        if not self.signal > self.decoy > self.vacuum:
            raise ValueError(
                f"need signal > decoy > vacuum (got {self.signal:g}, {self.decoy:g},"
                f" {self.vacuum:g})"
            )
        if self.vacuum != 0.0:
            raise ValueError(
                f"vacuum must be 0 (got {self.vacuum:g}): the decoy estimators use a true vacuum"
            )
        return self


class IntensityProbabilities(_Strict):
    """How often the source sends each pulse class (they sum to 1)."""

    signal: Probability = 0.8
    decoy: Probability = 0.1
    vacuum: Probability = 0.1

    @model_validator(mode="after")
    def _sum_to_one(self) -> "IntensityProbabilities":
        total = self.signal + self.decoy + self.vacuum
        if abs(total - 1.0) > 1e-9:
            raise ValueError(
                f"must sum to 1 (got {self.signal:g} + {self.decoy:g} + {self.vacuum:g}"
                f" = {total:g})"
            )
        if self.signal == 0.0 or self.decoy == 0.0 or self.vacuum == 0.0:
            raise ValueError("every class needs a probability > 0 (the estimators use all three)")
        return self


class DecoyBB84LinkConfig(BaseLinkConfig):
    """Prepare-and-measure decoy-state BB84 over a direct fibre: no station, no broker qubits.

    Defaults are the Gobby–Yuan–Shields parameters used by Ma, Qi, Zhao, Lo, PRA 72,
    012326 (2005): α 0.21 dB/km, η_Bob 4.5 %, Y0 1.7e-6, e_d 3.3 %, μ 0.48, 1 GHz.
    """

    model: Literal["bb84_decoy"]
    length_km: NonNegativeFloat
    attenuation_db_per_km: NonNegativeFloat = 0.21
    source_rate_hz: PositiveFloat = 1e9
    intensities: DecoyIntensities = DecoyIntensities()
    intensity_probabilities: IntensityProbabilities = IntensityProbabilities()
    detector_efficiency: Annotated[
        float, Field(strict=True, gt=0.0, le=1.0, allow_inf_nan=False)
    ] = 0.045
    dark_count_probability: Annotated[
        float, Field(strict=True, ge=0.0, lt=1.0, allow_inf_nan=False)
    ] = 1.7e-6
    misalignment_error: Annotated[
        float, Field(strict=True, ge=0.0, lt=0.5, allow_inf_nan=False)
    ] = 0.033
    # Launch power of classical channels sharing the fibre (their Raman noise adds to
    # the dark counts); None: a dark fibre.
    coexisting_classical_dbm: (
        Annotated[float, Field(strict=True, ge=-60.0, le=30.0, allow_inf_nan=False)] | None
    ) = None
    # Pulses per post-processing block; None: enough for about 2^18 detections.
    block_pulses: Annotated[int, Field(strict=True, ge=1000, le=10**12)] | None = None

    def params(self):
        """The link as `qnemu.qkd.decoy_bb84.DecoyBB84Params` (closed forms, sampler)."""
        # Imported here so the topology can be validated without numpy's QKD stack.
        from qnemu.qkd.decoy_bb84 import DecoyBB84Params

        return DecoyBB84Params(
            length_km=self.length_km,
            source_rate_hz=self.source_rate_hz,
            signal_intensity=self.intensities.signal,
            decoy_intensity=self.intensities.decoy,
            signal_probability=self.intensity_probabilities.signal,
            decoy_probability=self.intensity_probabilities.decoy,
            vacuum_probability=self.intensity_probabilities.vacuum,
            detector_efficiency=self.detector_efficiency,
            dark_count_probability=self.dark_count_probability,
            misalignment_error=self.misalignment_error,
            attenuation_db_per_km=self.attenuation_db_per_km,
            coexisting_classical_dbm=self.coexisting_classical_dbm,
        )


LINK_MODELS: dict[str, type[BaseLinkConfig]] = {
    "perfect": PerfectLinkConfig,
    "depolarise": DepolariseLinkConfig,
    "heralded_single_click": SingleClickLinkConfig,
    "heralded_double_click": DoubleClickLinkConfig,
    "bb84_decoy": DecoyBB84LinkConfig,
}

AnyLinkConfig = Annotated[
    PerfectLinkConfig
    | DepolariseLinkConfig
    | SingleClickLinkConfig
    | DoubleClickLinkConfig
    | DecoyBB84LinkConfig,
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
    # key_pool_low when a node's key with a peer falls below this; told again only after
    # the pool was back at twice as much (docs/mqtt-api.md)
    key_pool_low_bits: Annotated[int, Field(strict=True, gt=0)] = 4096


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
        key_managers = [name for name, node in self.nodes.items() if node.saes]
        problems = reference_problems(self.nodes, self.links, self.workloads, key_managers)
        if problems:
            summary = "; ".join(f"{where}: {what}" for where, what in problems)
            raise PydanticCustomError(
                "topology_references", "{summary}", {"summary": summary, "problems": problems}
            )
        return self

    @property
    def node_names(self) -> tuple[str, ...]:
        return tuple(self.nodes)

    def link_between(self, a: str, b: str) -> BaseLinkConfig | None:
        """The link joining `a` and `b` (either order), or None."""
        return next((link for link in self.links if link.joins(a, b)), None)

    def neighbours(self, name: str) -> list[str]:
        """Nodes linked directly to `name`, in file order."""
        if name not in self.nodes:
            raise KeyError(f"unknown node {name!r} (known: {', '.join(self.nodes)})")
        return [link.other(name) for link in self.links if name in link.nodes]

    def stations(self) -> list[tuple[str, LinkConfig]]:
        """Every heralding station with the link it serves (one per entanglement link)."""
        return [(link.station_name, link) for link in self.links if isinstance(link, LinkConfig)]

    def qkd_protocol(self, link: BaseLinkConfig) -> str | None:
        """The QKD `link` runs: "bbm92", "bb84_decoy" or None (docs/qkd.md).

        A bb84_decoy link always runs decoy-state BB84; an entanglement link runs BBM92
        when its `qkd` is bbm92, or auto and both its nodes declare SAEs.
        """
        if isinstance(link, DecoyBB84LinkConfig):
            return "bb84_decoy"
        if not isinstance(link, LinkConfig) or link.qkd == "none":
            return None
        if link.qkd == "bbm92" or all(self.nodes[name].saes for name in link.nodes):
            return "bbm92"
        return None

    def qkd_links(self) -> list[BaseLinkConfig]:
        """Every link that runs QKD, in file order."""
        return [link for link in self.links if self.qkd_protocol(link) is not None]

    def entanglement_links(self) -> list[LinkConfig]:
        """The links that make Bell pairs (through a station); not prepare-and-measure ones."""
        return [link for link in self.links if isinstance(link, LinkConfig)]

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
    node_names: Collection[str],
    links: Sequence[Any],
    workloads: Sequence[Any],
    key_managers: Collection[str] | None = None,
) -> list[tuple[str, str]]:
    """(location, problem) for every name that does not resolve; works on raw dicts too.

    Checks what a single field cannot: link ends and workload ends name known nodes,
    no self-links, one link per pair, unique station names, workloads on adjacent nodes,
    and (given `key_managers`, the nodes that declare SAEs) that both ends of a bb84_decoy
    link, or of a link with `qkd: bbm92`, keep keys: such a link makes key for them.
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
        if _field(link, "model") == "bb84_decoy":
            # No station to name: an unknown `station` key is reported by the model.
            for end, name in enumerate(pair):
                if key_managers is not None and name in node_names and name not in key_managers:
                    problems.append(
                        (
                            f"links[{index}].nodes[{end}]",
                            f"node {name!r} must declare saes: a bb84_decoy link only makes"
                            " key, for the key managers at both ends",
                        )
                    )
            continue
        if _field(link, "qkd") == "bbm92" and key_managers is not None:
            missing = [name for name in pair if name in node_names and name not in key_managers]
            if missing:
                problems.append(
                    (
                        f"links[{index}].qkd",
                        f"link {pair[0]}-{pair[1]} runs bbm92, which needs saes on both"
                        f" nodes; none declared on {', '.join(repr(n) for n in missing)}",
                    )
                )
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
