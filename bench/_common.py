"""Shared pieces of the benchmarks: a private network in a temp dir, tables, JSON results.

Every benchmark starts its own processes (free ports, a fresh run directory) and stops
them by pid when it ends, however it ends. `--profile DIR` runs each process under
cProfile and leaves `DIR/<process>.prof` behind for `python -m pstats`.
"""

import asyncio
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from qnemu.client import QnemuClient
from qnemu.launch.launcher import stop_pids
from qnemu.launch.plan import make_plan
from qnemu.physics.bell import BellState
from qnemu.runtime.curve import generate_keys
from qnemu.topology import Topology

__all__ = [
    "REPO",
    "RESULTS_DIR",
    "Network",
    "cpu_s",
    "keep_and_measure",
    "machine",
    "percentiles",
    "print_table",
    "rss_mb",
    "single_pair_latency",
    "write_results",
    "z_consistent",
]

REPO = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO / "bench" / "results"
READY_TIMEOUT_S = 60.0


class Network:
    """The processes of one topology (or some of them), started like `qnemu up` does."""

    def __init__(
        self,
        topology: Topology,
        run_dir: Path,
        *,
        only: Iterable[str] | None = None,
        profile_dir: Path | None = None,
        secure: bool = True,
    ):
        self.topology = topology
        self.run_dir = Path(run_dir)
        plan = make_plan(topology, secure=secure)  # secure=False: to see what Curve costs
        if only is not None:
            keep = set(only)
            plan = plan.model_copy(
                update={"processes": [p for p in plan.processes if p.name in keep]}
            )
        self.plan = plan
        self.profile_dir = profile_dir
        self.children: dict[str, subprocess.Popen] = {}

    def endpoint(self, name: str) -> str:
        return self.plan.process(name).endpoint

    def pids(self) -> dict[str, int]:
        return {name: child.pid for name, child in self.children.items()}

    def start(self) -> None:
        (self.run_dir / "logs").mkdir(parents=True, exist_ok=True)
        (self.run_dir / "topology.yaml").write_text(self.topology.to_yaml())
        self.plan.write(self.run_dir)
        if self.plan.secure:
            generate_keys(self.run_dir, [process.name for process in self.plan.processes])
        for process in self.plan.processes:
            command = [sys.executable]
            if self.profile_dir is not None:
                self.profile_dir.mkdir(parents=True, exist_ok=True)
                command += ["-m", "cProfile", "-o", str(self.profile_dir / f"{process.name}.prof")]
            command += ["-m", "qnemu", process.role]
            if process.role != "broker":
                command.append(process.name)
            command += ["--run-dir", str(self.run_dir)]
            with open(self.run_dir / "logs" / f"{process.name}.log", "ab") as log:
                self.children[process.name] = subprocess.Popen(
                    command,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                )

    async def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> float:
        """Wall seconds until every process answers a ping as ready."""
        started = time.perf_counter()
        waiting = {p.name for p in self.plan.processes}
        async with QnemuClient(self.run_dir, name=f"bench-{os.getpid()}") as client:
            while waiting:
                for name, child in self.children.items():
                    if child.poll() is not None:
                        log = (self.run_dir / "logs" / f"{name}.log").read_text(errors="replace")
                        raise RuntimeError(f"{name} exited ({child.returncode}):\n{log[-2000:]}")
                if time.perf_counter() - started > timeout_s:
                    raise RuntimeError(f"not ready after {timeout_s} s: {sorted(waiting)}")
                for name in sorted(waiting):
                    try:
                        reply = await client.ping(name, timeout_s=0.2)
                    except Exception:  # not listening yet
                        continue
                    if reply.ready:
                        waiting.discard(name)
        return time.perf_counter() - started

    def stop(self) -> dict[str, int | None]:
        """SIGTERM (then SIGKILL) every process we started, by pid."""
        return stop_pids(self.pids(), grace_s=10.0, children=self.children)

    def __enter__(self) -> "Network":
        try:
            self.start()
            asyncio.run(self.wait_ready())
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def rss_mb(pid: int) -> dict[str, float]:
    """Resident set size now and at its peak, and the proportional set size (PSS: shared
    library pages divided among the processes sharing them, which is what a machine full
    of qnemu processes pays for each), in MB, from /proc/<pid>/status and smaps_rollup."""
    figures = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            figures[{"VmRSS": "rss_mb", "VmHWM": "peak_rss_mb"}[key]] = int(value.split()[0]) / 1024
    rollup = Path(f"/proc/{pid}/smaps_rollup")
    if rollup.is_file():
        for line in rollup.read_text().splitlines():
            key, _, value = line.partition(":")
            if key == "Pss":
                figures["pss_mb"] = int(value.split()[0]) / 1024
    return figures


def cpu_s(pid: int) -> float:
    """User + system CPU seconds a process has used (from /proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentiles(values: Sequence[float], points: Sequence[int] = (50, 90, 99)) -> dict[str, float]:
    if len(values) == 0:
        return {f"p{p}": float("nan") for p in points}
    found = np.percentile(np.asarray(values, dtype=float), points)
    return {f"p{p}": float(v) for p, v in zip(points, found, strict=True)}


def machine() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def print_table(title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """A plain aligned text table (right-aligned numbers)."""

    def show(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}"
        return str(value)

    cells = [[show(v) for v in row] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    print(f"\n{title}")
    print(
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(columns, widths, strict=True))
        )
    )
    print("  ".join("-" * w for w in widths))
    for row in cells:
        print(
            "  ".join(
                v.ljust(w) if i == 0 else v.rjust(w)
                for i, (v, w) in enumerate(zip(row, widths, strict=True))
            )
        )


def write_results(name: str, data: dict[str, Any]) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps({"benchmark": name, "machine": machine(), **data}, indent=2) + "\n")
    print(f"\nresults: {path}")
    return path


def z_consistent(bell_state: str, outcome_src: int, outcome_dst: int) -> bool:
    """Z outcomes as the heralded Bell state says: equal for Φ±, opposite for Ψ±.

    Outcomes are raw (the frame is in `bell_state`, as the link layer's OK reports it),
    so on perfect links every pair must pass this check."""
    return (outcome_src == outcome_dst) == (BellState.from_label(bell_state).value & 1 == 0)


async def keep_and_measure(client: QnemuClient, src: str, dst: str, pairs: int) -> dict:
    """Keep pairs; measure (and so free) both halves of each as soon as its OK arrives."""
    emulated, measured_after = [], []
    agree = 0

    async def measure_both(ok) -> None:
        nonlocal agree
        src_qubit, dst_qubit = ok.qubits
        outcome_src, outcome_dst = await asyncio.gather(
            client.measure(src, src_qubit, "Z"), client.measure(dst, dst_qubit, "Z")
        )
        agree += z_consistent(ok.bell_state, outcome_src, outcome_dst)
        measured_after.append(time.perf_counter() - started)

    started = time.perf_counter()
    async with asyncio.TaskGroup() as tasks:
        async for ok in client.entangle(src, dst, pairs=pairs, measure=None, timeout_s=600.0):
            emulated.append(ok.delivered_at - ok.created_at)
            tasks.create_task(measure_both(ok))
    wall_s = time.perf_counter() - started
    return {
        "pairs": len(measured_after),
        "wall_s": wall_s,
        "pairs_per_s": len(measured_after) / wall_s,
        "emulated_latency_s": percentiles(emulated),
        "outcomes_agree": agree / max(1, len(measured_after)),
    }


async def single_pair_latency(client: QnemuClient, src: str, dst: str, requests: int) -> dict:
    """One measured pair per request, one request after another."""
    walls, emulated = [], []
    for _ in range(requests):
        started = time.perf_counter()
        async for ok in client.entangle(src, dst, pairs=1, measure="Z", timeout_s=10.0):
            walls.append(time.perf_counter() - started)
            emulated.append(ok.delivered_at - ok.created_at)
    return {
        "requests": len(walls),
        "wall_latency_s": percentiles(walls),
        "emulated_latency_s": percentiles(emulated),
    }
