"""`qnemu up` / `qnemu down`: start every process of a run, watch it, stop it cleanly.

Each process is `python -m qnemu <role> [NAME] --run-dir RUN_DIR` in a session of its
own, with its output in `RUN_DIR/logs/<name>.log`. The launcher waits until every
process answers a ping as ready, then (unless detached) shows the live view until the
duration ends or Ctrl-C, and stops everything: SIGTERM, then SIGKILL after a grace.
"""

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from qnemu.client import QnemuClient
from qnemu.launch.grafana import (
    find_grafana,
    start_grafana,
    wait_grafana_ready,
    write_grafana_files,
)
from qnemu.launch.monitoring import (
    start_logged,
    start_prometheus,
    stop_prometheus,
    wait_prometheus_ready,
    write_prometheus_files,
)
from qnemu.launch.pki import ensure_pki
from qnemu.launch.plan import ProcessPlan, RunPlan, free_port, make_plan
from qnemu.launch.rundir import STATUS_FILE, process_alive, read_status, write_json
from qnemu.runtime.curve import generate_keys
from qnemu.topology import Topology

__all__ = ["LaunchError", "Launcher", "stop_run"]

READY_TIMEOUT_S = 60.0
READY_S_PER_PROCESS = 0.5
STOP_GRACE_S = 5.0


class LaunchError(Exception):
    """The network could not be started; the message says which process and why."""


class Launcher:
    """Starts and stops the processes of one run."""

    def __init__(
        self, topology: Topology, run_dir: Path, *, host: str = "127.0.0.1", secure: bool = True
    ):
        self.topology = topology
        self.run_dir = Path(run_dir).resolve()
        self.plan = make_plan(topology, host=host, secure=secure)
        self.processes: dict[str, subprocess.Popen] = {}
        self.services: dict[str, subprocess.Popen] = {}  # beside the network: prometheus

    def start(self) -> None:
        (self.run_dir / "logs").mkdir(parents=True, exist_ok=True)
        (self.run_dir / "topology.yaml").write_text(self.topology.to_yaml())
        self.plan.write(self.run_dir)
        if self.plan.secure:  # a Curve key pair per process and for the clients
            generate_keys(self.run_dir, [process.name for process in self.plan.processes])
        write_prometheus_files(self.run_dir, self.plan)
        kme_nodes = [name for name, node in self.topology.nodes.items() if node.saes]
        if kme_nodes:  # a CA, and a certificate + key per KME and per SAE, in RUN_DIR/pki
            saes = [sae for node in self.topology.nodes.values() for sae in node.saes]
            ensure_pki(self.run_dir, kme_nodes, saes)
        for process in self.plan.processes:
            self.processes[process.name] = start_process(self.run_dir, process)
        self.write_status("starting")

    def write_status(self, state: str) -> None:
        write_json(
            self.run_dir / STATUS_FILE,
            {
                "network": self.plan.network,
                "state": state,
                "launcher_pid": os.getpid(),
                "run_dir": str(self.run_dir),
                "updated_at": time.time(),
                "processes": [
                    {
                        "name": process.name,
                        "role": process.role,
                        "pid": self.processes[process.name].pid,
                        "endpoint": process.endpoint,
                        "metrics_url": process.metrics_url,
                    }
                    for process in self.plan.processes
                    if process.name in self.processes
                ]
                + [
                    {"name": name, "role": "monitoring", "pid": child.pid}
                    for name, child in self.services.items()
                ],
            },
        )

    def dead_processes(self) -> dict[str, int]:
        return {
            name: code
            for name, process in self.processes.items()
            if (code := process.poll()) is not None
        }

    async def wait_ready(self, timeout_s: float | None = None) -> None:
        if timeout_s is None:  # every process imports and starts on the machine's few cores
            timeout_s = READY_TIMEOUT_S + READY_S_PER_PROCESS * len(self.plan.processes)
        deadline = time.monotonic() + timeout_s
        waiting = {process.name for process in self.plan.processes}
        async with QnemuClient(self.run_dir, name=f"launcher-{os.getpid()}") as client:
            while waiting:
                dead = self.dead_processes()
                if dead:
                    name, code = next(iter(dead.items()))
                    log = self.run_dir / "logs" / f"{name}.log"
                    tail = log.read_text(errors="replace").strip().splitlines()[-5:]
                    raise LaunchError(
                        f"{name} exited with code {code} while starting; end of {log}:\n  "
                        + "\n  ".join(tail)
                    )
                if time.monotonic() > deadline:
                    raise LaunchError(
                        f"not ready after {timeout_s} s: {', '.join(sorted(waiting))}"
                    )
                # All at once: one by one, a large network's silent processes would each
                # cost a whole ping timeout per round.
                names = sorted(waiting)
                replies = await asyncio.gather(
                    *(client.ping(name, timeout_s=0.5) for name in names), return_exceptions=True
                )
                for name, reply in zip(names, replies, strict=True):
                    # An exception: not listening yet; its queued ping is ignored later.
                    if not isinstance(reply, BaseException) and reply.ready:
                        waiting.discard(name)
        self.write_status("running")

    def start_monitoring(self) -> dict[str, str | None]:
        """A local Prometheus scraping this run (`qnemu up --monitoring`), and a Grafana
        showing it when Grafana is installed; their URLs (grafana: None without one)."""
        port = free_port()
        child = start_prometheus(self.run_dir, port)
        self.services["prometheus"] = child
        self.write_status("running")
        prometheus_url = f"http://127.0.0.1:{port}"
        wait_prometheus_ready(prometheus_url, process=child)
        urls: dict[str, str | None] = {"prometheus": prometheus_url, "grafana": None}
        install = find_grafana()
        if install is not None:
            grafana_port = free_port()
            ini = write_grafana_files(self.run_dir, prometheus_url, grafana_port)
            grafana = start_grafana(self.run_dir, install, ini)
            self.services["grafana"] = grafana
            self.write_status("running")
            urls["grafana"] = f"http://127.0.0.1:{grafana_port}"
            wait_grafana_ready(urls["grafana"], process=grafana)
        return urls

    def stop(self, grace_s: float = STOP_GRACE_S) -> dict[str, int | None]:
        """SIGTERM every process, SIGKILL what is left after the grace; returns exit codes."""
        for child in self.services.values():
            stop_prometheus(child)
        codes = stop_pids(
            {name: p.pid for name, p in self.processes.items()}, grace_s, self.processes
        )
        self.write_status("stopped")
        return codes


def start_process(run_dir: Path, process: ProcessPlan) -> subprocess.Popen:
    """`python -m qnemu <role> [NAME] --run-dir RUN_DIR`, in a session of its own, its
    output appended to RUN_DIR/logs/<name>.log."""
    command = [sys.executable, "-m", "qnemu", process.role]
    if process.role != "broker":
        command.append(process.name)
    command += ["--run-dir", str(run_dir)]
    return start_logged(command, run_dir, process.name)


def stop_pids(
    pids: dict[str, int], grace_s: float, children: dict[str, subprocess.Popen] | None = None
) -> dict[str, int | None]:
    children = children or {}

    def alive(name: str) -> bool:
        child = children.get(name)
        if child is not None:
            return child.poll() is None
        return pid_running(pids[name])

    for name, pid in pids.items():
        if alive(name):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while any(alive(name) for name in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    for name, pid in pids.items():
        if alive(name):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    codes: dict[str, int | None] = {}
    for name in pids:
        child = children.get(name)
        codes[name] = child.wait(timeout=5) if child is not None else None
    return codes


def pid_running(pid: int) -> bool:
    """True if the pid runs; a zombie (exited, not yet reaped by its parent) does not."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def stop_run(run_dir: Path, grace_s: float = STOP_GRACE_S) -> list[str]:
    """`qnemu down`: stop the processes of a run started elsewhere (detached)."""
    status = read_status(run_dir)
    pids = {
        entry["name"]: entry["pid"]
        for entry in status["processes"]
        if process_alive(entry["pid"], run_dir)
    }
    stop_pids(pids, grace_s)
    status["state"] = "stopped"
    write_json(run_dir / STATUS_FILE, status)
    return sorted(pids)


async def collect_stats(client: QnemuClient, plan: RunPlan) -> dict[str, dict[str, Any]]:
    """Every process's stats (missing when it does not answer)."""

    async def one(name: str) -> tuple[str, dict[str, Any] | None]:
        try:
            return name, await client.stats(name, timeout_s=0.5)
        except Exception:
            return name, None

    results = await asyncio.gather(*(one(p.name) for p in plan.processes))
    return {name: stats for name, stats in results if stats is not None}
