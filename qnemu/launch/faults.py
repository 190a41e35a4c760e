"""`qnemu fault`: break a running network on purpose, and mend it.

Link faults go to the processes of the link (both nodes and the station) as
`fault_request` messages; process faults (kill, stop, pause, resume, restart) are
signals to the pids in `status.json`.
"""

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from qnemu.client import QnemuClient
from qnemu.launch.launcher import pid_running, start_process
from qnemu.launch.plan import RunPlan
from qnemu.launch.rundir import STATUS_FILE, read_status, write_json
from qnemu.topology.models import LinkConfig

__all__ = ["LINK_FAULTS", "PROCESS_FAULTS", "link_fault", "process_fault", "resolve_link"]

LINK_FAULTS = ("cut", "restore", "set", "eavesdrop")
PROCESS_FAULTS = ("kill", "stop", "pause", "resume", "restart")
_SIGNALS = {"kill": signal.SIGKILL, "stop": signal.SIGTERM, "pause": signal.SIGSTOP,
            "resume": signal.SIGCONT}  # fmt: skip


def resolve_link(plan: RunPlan, spec: str) -> tuple[str, str, str | None]:
    """'a-b' (either order) → (node a, node b, station); station None for a bb84_decoy link."""
    topology = plan.topology_model()
    for link in topology.links:
        a, b = link.nodes
        station = link.station_name if isinstance(link, LinkConfig) else None
        if spec in (f"{a}-{b}", f"{b}-{a}") or (station is not None and spec == station):
            return a, b, station
    known = ", ".join(f"{link.nodes[0]}-{link.nodes[1]}" for link in topology.links)
    raise ValueError(f"unknown link {spec!r} (links: {known})")


async def link_fault(
    run_dir: Path, spec: str, kind: str, parameters: dict[str, Any]
) -> dict[str, Any]:
    """Apply a link fault; returns each involved process's active faults."""
    plan = RunPlan.read(run_dir)
    a, b, station = resolve_link(plan, spec)
    if station is None:
        return await _fibre_fault(run_dir, spec, a, b, kind, parameters)
    async with QnemuClient(run_dir) as client:
        if kind in ("cut", "restore"):
            results = {a: await client.fault(a, kind, b), b: await client.fault(b, kind, a)}
            results[station] = await client.fault(station, kind)
            return results
        if kind == "set":
            return {station: await client.fault(station, "set_link", None, parameters)}
        if kind == "eavesdrop":
            return {station: await client.fault(station, "eavesdrop", None, parameters)}
    raise ValueError(f"unknown link fault {kind!r} (known: {', '.join(LINK_FAULTS)})")


async def _fibre_fault(
    run_dir: Path, spec: str, a: str, b: str, kind: str, parameters: dict[str, Any]
) -> dict[str, Any]:
    """A fault on a bb84_decoy link (a direct fibre, no station): cut and restore go to
    both nodes; the eavesdropper sits at the sender of the pulses (Alice: the name that
    sorts first), who samples what Bob detects."""
    async with QnemuClient(run_dir) as client:
        if kind in ("cut", "restore"):
            return {a: await client.fault(a, kind, b), b: await client.fault(b, kind, a)}
        if kind == "eavesdrop":
            alice, bob = sorted((a, b))
            return {alice: await client.fault(alice, "eavesdrop", bob, parameters)}
    if kind == "set":
        raise ValueError(f"link {spec} is a bb84_decoy fibre: `set` changes entanglement links")
    raise ValueError(f"unknown link fault {kind!r} (known: {', '.join(LINK_FAULTS)})")


async def classical_fault(run_dir: Path, node: str, drop: float, delay_s: float) -> dict:
    async with QnemuClient(run_dir) as client:
        parameters = {"drop_fraction": drop, "extra_delay_s": delay_s}
        return {node: await client.fault(node, "classical", None, parameters)}


async def clear_faults(run_dir: Path) -> dict[str, Any]:
    """Clear every process's faults (a paused process is resumed first)."""
    plan = RunPlan.read(run_dir)
    results: dict[str, Any] = {}
    async with QnemuClient(run_dir) as client:
        for process in plan.processes:
            try:
                results[process.name] = await client.fault(process.name, "clear", timeout_s=2.0)
            except Exception as error:  # a dead or paused process: say so, go on
                results[process.name] = f"not cleared: {error}"
    return results


def process_fault(
    run_dir: Path,
    name: str,
    kind: str,
    grace_s: float = 5.0,
    started: Callable[[str, subprocess.Popen], None] | None = None,
) -> str:
    """Signal (or restart) one process of the run; returns what was done.

    `started` is told of a restarted process (the launcher keeps its children)."""
    plan = RunPlan.read(run_dir)
    process = plan.process(name)  # KeyError names the known processes
    status = read_status(run_dir)
    entry = next(e for e in status["processes"] if e["name"] == name)
    pid = entry["pid"]
    running = pid_running(pid)
    if kind in _SIGNALS:
        if not running:
            raise ValueError(f"{name} (pid {pid}) is not running")
        os.kill(pid, _SIGNALS[kind])
        return f"{kind}: sent {_SIGNALS[kind].name} to {name} (pid {pid})"
    if kind != "restart":
        raise ValueError(f"unknown process fault {kind!r} (known: {', '.join(PROCESS_FAULTS)})")
    if running:
        os.kill(pid, signal.SIGCONT)  # a paused process must be able to stop
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while pid_running(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if pid_running(pid):
            os.kill(pid, signal.SIGKILL)
    child = start_process(run_dir, process)
    entry["pid"] = child.pid
    write_json(Path(run_dir) / STATUS_FILE, status)
    if started is not None:
        started(name, child)
    return f"restart: {name} runs again as pid {child.pid}"
