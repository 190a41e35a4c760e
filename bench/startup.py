"""Start-up of a 16-node network: wall time of `qnemu up --detach` and RSS per process.

The topology (default `line,16`: 16 nodes, 15 stations, one broker) is written to a
temp YAML and started with the real CLI, exactly as a user would; RSS (now and peak)
is read from /proc/<pid>/status once the network is ready. The run is stopped with
`qnemu down`, and any process still alive afterwards is killed by pid.

    .venv/bin/python bench/startup.py [--quick] [--topology line,16] [--repeat N]
"""

import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import print_table, rss_mb, write_results

from qnemu.topology import build_topology

__all__ = ["main"]

QNEMU = [sys.executable, "-m", "qnemu"]
TARGET_S = 10.0
TARGET_NODE_RSS_MB = 80.0


def start_once(topology_file: Path, run_dir: Path) -> dict:
    """One `qnemu up --detach`: its wall time and every process's RSS when ready."""
    started = time.perf_counter()
    up = subprocess.run(
        [*QNEMU, "up", str(topology_file), "--detach", "--run-dir", str(run_dir)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    wall_s = time.perf_counter() - started
    status_file = run_dir / "status.json"
    pids = {}
    if status_file.is_file():
        pids = {
            p["name"]: (p["role"], p["pid"])
            for p in json.loads(status_file.read_text())["processes"]
        }
    try:
        if up.returncode != 0:
            raise RuntimeError(f"qnemu up failed ({up.returncode}):\n{up.stderr[-2000:]}")
        memory = {name: {"role": role, **rss_mb(pid)} for name, (role, pid) in pids.items()}
    finally:
        subprocess.run([*QNEMU, "down", "--run-dir", str(run_dir)], capture_output=True, timeout=60)
        for _role, pid in pids.values():  # belt and braces: nothing of ours outlives the run
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    ready_line = next((line for line in up.stderr.splitlines() if "ready in" in line), "")
    return {"wall_s": wall_s, "cli_says": ready_line.strip(), "processes": memory}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one start instead of three")
    parser.add_argument("--topology", default="line,16", help="builder spec (default line,16)")
    parser.add_argument("--repeat", type=int, help="starts to time (default 3; quick 1)")
    args = parser.parse_args(argv)
    repeat = args.repeat or (1 if args.quick else 3)
    topology = build_topology(args.topology)
    runs = []
    with tempfile.TemporaryDirectory(prefix="qnemu-bench-") as temp:
        topology_file = Path(temp) / "topology.yaml"
        topology_file.write_text(topology.to_yaml())
        for index in range(repeat):
            runs.append(start_once(topology_file, Path(temp) / f"run-{index}"))
    last = runs[-1]["processes"]
    by_role: dict[str, list[float]] = {}
    for figures in last.values():
        by_role.setdefault(figures["role"], []).append(figures["rss_mb"])
    walls = [run["wall_s"] for run in runs]
    print_table(
        f"`qnemu up --detach` of {topology.name} ({len(last)} processes), {repeat} start(s)",
        ["figure", "value"],
        [
            ["wall s (median)", statistics.median(walls)],
            ["wall s (max)", max(walls)],
            ["CLI says", runs[-1]["cli_says"]],
        ],
    )
    print_table(
        "RSS per process when ready (MB)",
        ["role", "processes", "mean", "max"],
        [
            [role, len(values), statistics.fmean(values), max(values)]
            for role, values in sorted(by_role.items())
        ],
    )
    node_max = max(by_role.get("node", [0.0]))
    results = {
        "topology": args.topology,
        "runs": runs,
        "wall_s_median": statistics.median(walls),
        "rss_mb_by_role": {
            role: {"mean": statistics.fmean(v), "max": max(v)} for role, v in by_role.items()
        },
        "targets": {
            "wall_s": TARGET_S,
            "wall_met": max(walls) < TARGET_S,
            "node_rss_mb": TARGET_NODE_RSS_MB,
            "node_rss_met": node_max < TARGET_NODE_RSS_MB,
        },
    }
    print(
        f"\ntarget < {TARGET_S:.0f} s: {max(walls):.1f} s "
        f"({'met' if max(walls) < TARGET_S else 'NOT met'}); "
        f"target < {TARGET_NODE_RSS_MB:.0f} MB per node: {node_max:.1f} MB "
        f"({'met' if node_max < TARGET_NODE_RSS_MB else 'NOT met'})"
    )
    write_results("startup", results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
