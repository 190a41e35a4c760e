"""A run's plan: which processes exist, where they listen, and the shared clock.

The launcher writes it to `RUN_DIR/run.json`; every process reads it to find its own
configuration and its peers, so the same command works under `qnemu up` or by hand.
"""

import argparse
import json
import os
import socket
import time
import zlib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from qnemu.physics.fibre import SPEED_OF_LIGHT_IN_FIBRE_KM_PER_S
from qnemu.topology import LinkConfig, Topology, parse_topology

__all__ = [
    "BROKER_NAME",
    "PLAN_FILE",
    "ProcessPlan",
    "RunPlan",
    "add_layout_arguments",
    "arm_lengths_km",
    "free_port",
    "free_ports",
    "make_plan",
    "process_seed",
    "with_layout",
]

BROKER_NAME = "broker"
PLAN_FILE = "run.json"
Role = Literal["broker", "station", "node"]


class ProcessPlan(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    role: Role
    endpoint: str
    metrics_host: str
    metrics_port: int
    # Where the process listens, when that is not where peers reach it (in a container:
    # the container's wildcard, while peers use the service name). None: the same.
    bind_endpoint: str | None = None
    metrics_bind_host: str | None = None
    # A node's ETSI 014 KME port (on the metrics bind host); None: any free port.
    kme_port: int | None = None

    @property
    def metrics_url(self) -> str:
        return f"http://{self.metrics_host}:{self.metrics_port}/metrics"


class RunPlan(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    network: str
    epoch_wall_s: float
    time_scale: float
    seed: int | None
    topology: dict
    processes: list[ProcessPlan]
    secure: bool = True  # CurveZMQ on every socket (keys in RUN_DIR/zmq); False: --insecure
    # Containers: each process finds its own secrets (Curve secret key, KME TLS key) here,
    # mounted as a secret, and the run directory holds only public material (public keys,
    # certificates). None: everything is in the run directory, as under `qnemu up`.
    secrets_dir: str | None = None
    # Where processes write (key stores, KME address files); None: the run directory.
    state_dir: str | None = None
    # Curve public keys (z85) by process name and for the clients, when the run directory
    # has no zmq/ folder (containers): public, so they travel in the plan itself.
    public_keys: dict[str, str] | None = None

    def process(self, name: str) -> ProcessPlan:
        for process in self.processes:
            if process.name == name:
                return process
        known = ", ".join(p.name for p in self.processes)
        raise KeyError(f"no process {name!r} in this run (processes: {known})")

    def state_path(self, run_dir: Path) -> Path:
        return Path(self.state_dir) if self.state_dir is not None else Path(run_dir)

    def topology_model(self) -> Topology:
        return parse_topology(self.topology, origin="run.json")

    def write(self, run_dir: Path) -> Path:
        path = Path(run_dir) / PLAN_FILE
        temporary = path.with_suffix(".tmp")
        temporary.write_text(self.model_dump_json(indent=2))
        temporary.replace(path)
        return path

    @classmethod
    def read(cls, run_dir: Path) -> "RunPlan":
        path = Path(run_dir) / PLAN_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{run_dir} is not a qnemu run directory (no {PLAN_FILE})")
        return cls.model_validate(json.loads(path.read_text()))


def with_layout(plan: RunPlan, secrets_dir: str | None, state_dir: str | None) -> RunPlan:
    """The plan with this host's own secrets and state folders, where given: on a host of
    its own a process is told where they are (flag or environment), as a container is
    told by its mounts."""
    update = {"secrets_dir": secrets_dir, "state_dir": state_dir}
    return plan.model_copy(update={key: value for key, value in update.items() if value})


def add_layout_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--secrets-dir",
        default=os.environ.get("QNEMU_SECRETS_DIR"),
        help="this process's own keys (default: the plan's, else RUN_DIR; $QNEMU_SECRETS_DIR)",
    )
    parser.add_argument(
        "--state-dir",
        default=os.environ.get("QNEMU_STATE_DIR"),
        help="where it writes its key store (default: the plan's, else RUN_DIR; $QNEMU_STATE_DIR)",
    )


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port the OS says is free now (tiny race with other programs, as usual)."""
    return free_ports(1, host)[0]


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """`count` distinct free ports: every probe stays open until all are chosen, so the
    OS cannot hand the same port out twice."""
    probes = []
    try:
        for _ in range(count):
            probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            probes.append(probe)
            probe.bind((host, 0))
        return [probe.getsockname()[1] for probe in probes]
    finally:
        for probe in probes:
            probe.close()


def make_plan(
    topology: Topology,
    *,
    host: str = "127.0.0.1",
    epoch_wall_s: float | None = None,
    secure: bool = True,
):
    names = [BROKER_NAME]
    roles: list[Role] = ["broker"]
    for station, _link in topology.stations():
        names.append(station)
        roles.append("station")
    for node in topology.node_names:
        names.append(node)
        roles.append("node")
    if names.count(BROKER_NAME) > 1:
        raise ValueError(f"the name {BROKER_NAME!r} is reserved for the state broker")
    ports = iter(free_ports(2 * len(names), host))
    processes = [
        ProcessPlan(
            name=name,
            role=role,
            endpoint=f"tcp://{host}:{next(ports)}",
            metrics_host=host,
            metrics_port=next(ports),
        )
        for name, role in zip(names, roles, strict=True)
    ]
    return RunPlan(
        network=topology.name,
        epoch_wall_s=time.time() if epoch_wall_s is None else epoch_wall_s,
        time_scale=topology.time_scale,
        seed=topology.seed,
        topology=topology.to_dict(),
        processes=processes,
        secure=secure,
    )


def arm_lengths_km(link: LinkConfig) -> tuple[float, float]:
    """Fibre from each end of the link (its `nodes` order) to its station."""
    length = float(getattr(link, "length_km", 0.0))
    position = getattr(link, "station_position_km", None)
    arm_a = length / 2 if position is None else float(position)
    return arm_a, length - arm_a


def delay_s(length_km: float) -> float:
    return length_km / SPEED_OF_LIGHT_IN_FIBRE_KM_PER_S


def process_seed(seed: int | None, name: str) -> int | None:
    """Each process its own reproducible stream, derived from the topology's seed."""
    if seed is None:
        return None
    return (seed * 1_000_003 + zlib.crc32(name.encode())) % 2**63
