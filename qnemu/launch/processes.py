"""Build and run one process of a run (broker, station or node) from its run plan."""

import argparse
import asyncio
import gc
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np

from qnemu.launch.plan import (
    BROKER_NAME,
    RunPlan,
    add_layout_arguments,
    arm_lengths_km,
    delay_s,
    process_seed,
    with_layout,
)
from qnemu.runtime import EmulatedClock, Service, ServiceAddress
from qnemu.runtime.curve import process_identity
from qnemu.topology.models import LinkConfig, Topology

# Each role imports only what it runs (inside build_service): a station or the broker
# that imported the node's KME, MQTT and routing libraries would carry ~30 MB it never
# uses, in every one of a large network's processes.

__all__ = ["build_service", "node_extensions", "serve"]


def node_extensions(topology) -> list:
    """Builders of node extensions: (node, topology, plan) -> NodeExtension | None. The
    MQTT control (and its client library) only where the topology names a broker."""
    from qnemu.node import apps, qkd

    builders = [apps.extension, qkd.extension]
    if topology.mqtt is not None:
        from qnemu.node import mqtt

        builders.append(mqtt.extension)
    return builders


def build_service(plan: RunPlan, name: str, run_dir: Path | None = None) -> Service:
    """The service object for process `name`, wired to its peers with fibre delays."""
    me = plan.process(name)
    topology = plan.topology_model()
    clock = EmulatedClock(plan.epoch_wall_s, plan.time_scale)
    address = ServiceAddress(
        me.bind_endpoint or me.endpoint, me.metrics_bind_host or me.metrics_host, me.metrics_port
    )
    endpoints = {process.name: process.endpoint for process in plan.processes}
    seed = process_seed(plan.seed, name)
    common = {"network": plan.network, "curve": _curve_identity(plan, run_dir, name, topology)}
    if me.role == "broker":
        from qnemu.broker.server import BrokerService
        from qnemu.broker.store import StateStore

        stations = {station for station, _ in topology.stations()}
        return BrokerService(
            name, address, clock, store=StateStore(seed=seed), pair_creators=stations, **common
        )
    if me.role == "station":
        from qnemu.station.station import MemoryParameters, StationService

        link = next(link for station, link in topology.stations() if station == name)
        arms = arm_lengths_km(link)
        memories = {
            node: MemoryParameters(topology.nodes[node].t1_s, topology.nodes[node].t2_s)
            for node in link.nodes
        }
        return StationService(
            name,
            address,
            clock,
            link_name=f"{link.nodes[0]}-{link.nodes[1]}",
            nodes=tuple(link.nodes),
            physics=link.physics(),
            link=link,
            memories=memories,
            broker=BROKER_NAME,
            seed=seed,
            peers={node: endpoints[node] for node in link.nodes}
            | {BROKER_NAME: endpoints[BROKER_NAME]},
            delays_s={node: delay_s(arm) for node, arm in zip(link.nodes, arms, strict=True)},
            **common,
        )
    from qnemu.node.routing import Routing
    from qnemu.node.service import Neighbour, NodeService

    neighbours: dict[str, Neighbour] = {}
    peers = {BROKER_NAME: endpoints[BROKER_NAME]}
    delays: dict[str, float] = {}
    for peer in topology.neighbours(name):
        link = topology.link_between(name, peer)
        peers[peer] = endpoints[peer]
        if not isinstance(link, LinkConfig):
            # A prepare-and-measure fibre (bb84_decoy): classical messages, no link layer.
            delays[peer] = delay_s(link.length_km)
            continue
        station = link.station_name
        physics = link.physics()
        neighbours[peer] = Neighbour(
            peer,
            station,
            f"{link.nodes[0]}-{link.nodes[1]}",
            physics.fidelity,
            phi_plus_coefficients(physics),
        )
        peers[station] = endpoints[station]
        arms = dict(zip(link.nodes, arm_lengths_km(link), strict=True))
        delays[peer] = delay_s(sum(arms.values()))
        delays[station] = delay_s(arms[name])
    routing = Routing(
        [
            (
                link.nodes[0],
                link.nodes[1],
                physics.fidelity,
                physics.expected_rate_hz,
                length,
                phi_plus_coefficients(physics),
            )
            for link in topology.entanglement_links()
            for physics, length in [(link.physics(), sum(arm_lengths_km(link)))]
        ],
        memory={node: topology.nodes[node].qubits for node in topology.nodes},
    )
    # Nodes further away are reached over the shortest fibre of any kind, when a path
    # (of entanglement or of key relay) needs them.
    for other, other_delay_s in fibre_delays_s(topology, name).items():
        delays.setdefault(other, other_delay_s)
    nodes = {p.name: p.endpoint for p in plan.processes if p.role == "node" and p.name != name}
    node = NodeService(
        name,
        address,
        clock,
        hardware=topology.nodes[name],
        neighbours=neighbours,
        workloads=list(topology.workloads),
        routing=routing,
        broker=BROKER_NAME,
        seed=seed,
        peers=peers,
        directory=nodes,
        delays_s=delays,
        **common,
    )
    node.run_dir = run_dir
    # Each extension decides from the topology whether this node needs it.
    for build in node_extensions(topology):
        extension = build(node, topology, plan)
        if extension is not None:
            node.add_extension(extension)
    return node


def _curve_identity(plan: RunPlan, run_dir: Path | None, name: str, topology) -> Any:
    """Whom process `name` reaches and accepts: the processes the topology lets talk to it
    (the broker: every station and node; a station: its two nodes; a node: every node,
    its stations) and the run's clients."""
    if not plan.secure:
        return None
    if run_dir is None:
        raise ValueError("a secure run needs its run directory (the Curve keys are there)")
    role = plan.process(name).role
    nodes = [p.name for p in plan.processes if p.role == "node"]
    stations = [p.name for p in plan.processes if p.role == "station"]
    if role == "broker":
        peers, accepts = [], nodes + stations
    elif role == "station":
        link = next(link for station, link in topology.stations() if station == name)
        peers, accepts = [*link.nodes, BROKER_NAME], list(link.nodes)
    else:
        own_stations = [
            link.station_name for link in topology.entanglement_links() if name in link.nodes
        ]
        others = [node for node in nodes if node != name]
        peers, accepts = [BROKER_NAME, *others, *own_stations], others + own_stations
    return process_identity(run_dir, name, peers, accepts, plan.secrets_dir, plan.public_keys)


def fibre_delays_s(topology: Topology, name: str) -> dict[str, float]:
    """Classical delay from node `name` to every node it can reach, over the shortest fibre."""
    import networkx as nx  # imported here, as in Routing: only nodes pay for it

    lengths = nx.single_source_dijkstra_path_length(topology.graph(), name, weight="length_km")
    return {node: delay_s(km) for node, km in lengths.items()}


def phi_plus_coefficients(physics) -> tuple[float, float, float, float]:
    """Bell-diagonal weights of the link's pair after the frame update to Φ+ (averaged
    over the Bell states it heralds): what purification starts from."""
    from qnemu.physics.purification import bell_diagonal_coefficients

    weights = []
    for state in physics.herald_bell_states:
        frame = np.kron(np.eye(2), _PAULI_FRAME[int(state)])
        corrected = frame @ physics.delivered_state(state) @ frame.conj().T
        weights.append(bell_diagonal_coefficients(corrected))
    return tuple(float(w) for w in np.mean(weights, axis=0))


# The Pauli on the second qubit that takes each Bell state to Φ+ (value: x<<1 | z).
_X = np.array([[0, 1], [1, 0]])
_Z = np.diag([1, -1])
_PAULI_FRAME = {0: np.eye(2), 1: _X, 2: _Z, 3: _Z @ _X}


def serve(
    run_dir: Path, name: str, secrets_dir: str | None = None, state_dir: str | None = None
) -> int:
    """Run one process until SIGTERM; returns the exit code."""
    # Imports and set-up objects live for the whole run: keep the collector off them.
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)
    logging.basicConfig(
        level=logging.INFO,
        format=f"%(asctime)s {name} %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    plan = with_layout(RunPlan.read(run_dir), secrets_dir, state_dir)
    service = build_service(plan, name, run_dir)
    asyncio.run(service.run())
    return 0


def main(argv: list[str]) -> int:
    """`qnemu broker | station NAME | node NAME --run-dir DIR` without the CLI's imports."""
    parser = argparse.ArgumentParser(prog="qnemu")
    parser.add_argument("role", choices=["broker", "station", "node"])
    parser.add_argument("name", nargs="?")
    parser.add_argument("--run-dir", required=True)
    add_layout_arguments(parser)
    args = parser.parse_args(argv)
    if args.role == "broker":
        name = args.name or BROKER_NAME
    elif args.name is None:
        parser.error(f"{args.role} needs a NAME")
    else:
        name = args.name
    try:
        plan = RunPlan.read(Path(args.run_dir))
        role = plan.process(name).role
    except (FileNotFoundError, KeyError) as error:
        print(f"error: {error.args[0] if error.args else error}", file=sys.stderr)
        return 2
    if role != args.role:
        print(f"error: {name!r} is a {role} in this run, not a {args.role}", file=sys.stderr)
        return 2
    return serve(Path(args.run_dir), name, args.secrets_dir, args.state_dir)
