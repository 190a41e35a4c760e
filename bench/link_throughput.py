"""Pairs per second through the whole stack: QnemuClient → nodes → station → broker.

Two nodes on a `perfect` link (topologies/perfect-pair.yaml), run in a temp dir:
  measure   one CREATE of N pairs measured in Z at both ends (the link layer's measure mode)
  keep      one CREATE of N pairs kept in memory; each OK's two halves are then measured
            through the broker (client.measure on each node) while generation goes on
  latency   single-pair measure CREATEs one after the other: wall time request → OK
Reported: pairs per wall-second (first request sent → last OK, or last measurement in
keep mode), emulated latency delivered_at − created_at per pair, and wall latency.

    .venv/bin/python bench/link_throughput.py [--quick] [--pairs N] [--profile DIR]
"""

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    REPO,
    Network,
    cpu_s,
    keep_and_measure,
    percentiles,
    print_table,
    single_pair_latency,
    write_results,
)

from qnemu.client import QnemuClient
from qnemu.topology import load_topology

__all__ = ["main"]

TOPOLOGY = REPO / "topologies" / "perfect-pair.yaml"
SRC, DST = "alice", "bob"
TARGET_PAIRS_PER_S = 2_000
MODE_LABELS = (("measure", "measure"), ("keep", "keep + measure"))


async def measure_mode(client: QnemuClient, pairs: int) -> dict:
    emulated, since_request = [], []
    agree = 0
    started = time.perf_counter()
    async for ok in client.entangle(SRC, DST, pairs=pairs, measure="Z", timeout_s=600.0):
        since_request.append(time.perf_counter() - started)
        emulated.append(ok.delivered_at - ok.created_at)
        agree += ok.outcomes[0] == ok.outcomes[1]
    wall_s = time.perf_counter() - started
    return {
        "pairs": len(emulated),
        "wall_s": wall_s,
        "pairs_per_s": len(emulated) / wall_s,
        "first_pair_wall_s": since_request[0],
        "emulated_latency_s": percentiles(emulated),
        "outcomes_agree": agree / len(emulated),  # Φ+ measured in Z: always equal
    }


async def run(network: Network, pairs: int, latency_requests: int, modes: list[str]) -> dict:
    pids = {**network.pids(), "client (this process)": os.getpid()}
    results = {}
    async with QnemuClient(network.run_dir, name="bench-link") as client:
        for mode, work in (
            ("measure", lambda: measure_mode(client, pairs)),
            ("keep", lambda: keep_and_measure(client, SRC, DST, pairs)),
            ("latency", lambda: single_pair_latency(client, SRC, DST, latency_requests)),
        ):
            if mode not in modes:
                continue
            cpu_before = {name: cpu_s(pid) for name, pid in pids.items()}
            started = time.perf_counter()
            results[mode] = await work()
            elapsed_s = time.perf_counter() - started
            results[mode]["cpu_share"] = {
                name: (cpu_s(pid) - cpu_before[name]) / elapsed_s for name, pid in pids.items()
            }
    return results


def report(results: dict, pairs: int) -> None:
    """Print the figures of whichever modes ran."""
    ms, points = 1e3, ("p50", "p90", "p99")
    throughput = [(label, results[mode]) for mode, label in MODE_LABELS if mode in results]
    if throughput:
        print_table(
            f"{SRC}–{DST} on a perfect link, one CREATE of {pairs} pairs",
            ["mode", "pairs/s", "wall s", "emu p50 ms", "emu p90 ms", "emu p99 ms", "agree"],
            [
                [
                    label,
                    figures["pairs_per_s"],
                    figures["wall_s"],
                    *(ms * figures["emulated_latency_s"][p] for p in points),
                    figures["outcomes_agree"],
                ]
                for label, figures in throughput
            ],
        )
    if "latency" in results:
        latency = results["latency"]
        print_table(
            f"single-pair measure CREATEs, one after another ({latency['requests']})",
            ["latency", "p50 ms", "p90 ms", "p99 ms"],
            [
                ["wall, request → OK", *(ms * latency["wall_latency_s"][p] for p in points)],
                [
                    "emulated, created → delivered",
                    *(ms * latency["emulated_latency_s"][p] for p in points),
                ],
            ],
        )
    modes = list(results)
    print_table(
        "CPU share per process (1.0 = one core busy)",
        ["process", *modes],
        [
            [name, *(results[mode]["cpu_share"][name] for mode in modes)]
            for name in results[modes[0]]["cpu_share"]
        ],
    )
    if "measure" in results:
        rate = results["measure"]["pairs_per_s"]
        verdict = "met" if rate >= TARGET_PAIRS_PER_S else "NOT met"
        print(f"\ntarget ≥ {TARGET_PAIRS_PER_S:,} measured pairs/s: {rate:,.0f} ({verdict})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short run (a few seconds)")
    parser.add_argument("--pairs", type=int, help="pairs per CREATE (default 20 000; quick 2 000)")
    parser.add_argument(
        "--modes", default="measure,keep,latency", help="comma-separated subset to run"
    )
    parser.add_argument("--profile", type=Path, help="run every process under cProfile into DIR")
    args = parser.parse_args(argv)
    pairs = args.pairs or (2_000 if args.quick else 20_000)
    latency_requests = 50 if args.quick else 300
    topology = load_topology(TOPOLOGY)
    with (
        tempfile.TemporaryDirectory(prefix="qnemu-bench-") as temp,
        Network(topology, Path(temp), profile_dir=args.profile) as network,
    ):
        results = asyncio.run(run(network, pairs, latency_requests, args.modes.split(",")))
    report(results, pairs)
    results["parameters"] = {"pairs": pairs, "latency_requests": latency_requests}
    if "measure" in results:
        met = results["measure"]["pairs_per_s"] >= TARGET_PAIRS_PER_S
        results["target"] = {"pairs_per_s": TARGET_PAIRS_PER_S, "met": met}
    write_results("link_throughput", results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
