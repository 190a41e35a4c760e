"""Start-up of a network: wall time of `qnemu up --detach` and RSS per process.

Each topology (default `line,16`: 16 nodes, 15 stations, one broker; `--scale`: 16, 64
and 128 nodes) is written to a temp YAML and started with the real CLI, exactly as a
user would; RSS (now and peak) is read from /proc/<pid>/status once the network is
ready. The run is stopped with `qnemu down`, and any process still alive afterwards is
killed by pid.

    .venv/bin/python bench/startup.py [--quick] [--scale] [--topology line,16 ...] [--repeat N]
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
        timeout=600,
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


SCALE_SPECS = ("line,16", "line,64", "line,128")


def measure(spec: str, repeat: int) -> dict:
    """`repeat` starts of topology `spec`; wall times and RSS by role of the last."""
    topology = build_topology(spec)
    runs = []
    with tempfile.TemporaryDirectory(prefix="qnemu-bench-") as temp:
        topology_file = Path(temp) / "topology.yaml"
        topology_file.write_text(topology.to_yaml())
        for index in range(repeat):
            runs.append(start_once(topology_file, Path(temp) / f"run-{index}"))
    last = runs[-1]["processes"]
    by_role: dict[str, list[float]] = {}
    pss_by_role: dict[str, list[float]] = {}
    for figures in last.values():
        by_role.setdefault(figures["role"], []).append(figures["rss_mb"])
        pss_by_role.setdefault(figures["role"], []).append(figures.get("pss_mb", float("nan")))
    walls = [run["wall_s"] for run in runs]
    return {
        "topology": spec,
        "nodes": len(topology.nodes),
        "processes": len(last),
        "runs": runs,
        "wall_s_median": statistics.median(walls),
        "wall_s_max": max(walls),
        "rss_mb_total": sum(sum(values) for values in by_role.values()),
        "pss_mb_total": sum(sum(values) for values in pss_by_role.values()),
        "pss_mb_by_role": {role: statistics.fmean(v) for role, v in sorted(pss_by_role.items())},
        "rss_mb_by_role": {
            role: {"count": len(v), "mean": statistics.fmean(v), "max": max(v)}
            for role, v in sorted(by_role.items())
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one start instead of three")
    parser.add_argument(
        "--topology", action="append", help="builder spec, repeatable (default line,16)"
    )
    parser.add_argument(
        "--scale", action="store_true", help=f"one start each of {', '.join(SCALE_SPECS)}"
    )
    parser.add_argument("--repeat", type=int, help="starts to time (default 3; quick, scale 1)")
    args = parser.parse_args(argv)
    specs = args.topology or (list(SCALE_SPECS) if args.scale else ["line,16"])
    repeat = args.repeat or (1 if args.quick or args.scale else 3)
    sizes = []
    for spec in specs:
        print(f"starting {spec} ...", flush=True)
        sizes.append(measure(spec, repeat))
    print_table(
        f"`qnemu up --detach`, {repeat} start(s) each; memory when ready (means per role)",
        [
            *("topology", "processes", "wall s (median)", "wall s (max)", "PSS total MB"),
            *("node RSS MB", "node PSS MB", "station RSS MB", "station PSS MB", "broker RSS MB"),
        ],
        [
            [
                size["topology"],
                size["processes"],
                size["wall_s_median"],
                size["wall_s_max"],
                size["pss_mb_total"],
                size["rss_mb_by_role"]["node"]["mean"],
                size["pss_mb_by_role"]["node"],
                size["rss_mb_by_role"].get("station", {"mean": 0.0})["mean"],
                size["pss_mb_by_role"].get("station", 0.0),
                size["rss_mb_by_role"]["broker"]["mean"],
            ]
            for size in sizes
        ],
    )
    results: dict = {"sizes": sizes}
    sixteen = next((size for size in sizes if size["nodes"] == 16), None)
    if sixteen is not None:  # the targets are stated for 16 nodes
        node_max = sixteen["rss_mb_by_role"]["node"]["max"]
        wall_max = sixteen["wall_s_max"]
        results["targets"] = {
            "wall_s": TARGET_S,
            "wall_met": wall_max < TARGET_S,
            "node_rss_mb": TARGET_NODE_RSS_MB,
            "node_rss_met": node_max < TARGET_NODE_RSS_MB,
        }
        print(
            f"\n16 nodes: target < {TARGET_S:.0f} s: {wall_max:.1f} s "
            f"({'met' if wall_max < TARGET_S else 'NOT met'}); "
            f"target < {TARGET_NODE_RSS_MB:.0f} MB per node: {node_max:.1f} MB "
            f"({'met' if node_max < TARGET_NODE_RSS_MB else 'NOT met'})"
        )
    write_results("startup_scale" if len(sizes) > 1 else "startup", results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
