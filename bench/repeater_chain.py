"""End-to-end pairs per wall-second through swap-ASAP repeaters: line,3 and line,5.

Chains of `perfect` links (t_cycle 1 µs, no fibre, 16-qubit noiseless memories), started
in a temp dir; every request goes from n0 to the last node, through the repeaters:
  measure   one CREATE of N end-to-end pairs measured in Z at both ends
  keep      one CREATE of N pairs kept; each OK's two halves are measured (which frees them)
            as soon as it arrives, while generation goes on
  latency   single-pair measure CREATEs one after another: wall time request → OK
Reported: pairs per wall-second (request sent → last OK, or last measurement in keep
mode), emulated latency delivered_at − created_at per pair, wall latency, CPU shares.

    .venv/bin/python bench/repeater_chain.py [--quick] [--pairs N] [--chains 3,5]
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
    Network,
    cpu_s,
    keep_and_measure,
    percentiles,
    print_table,
    single_pair_latency,
    write_results,
    z_consistent,
)

from qnemu.client import QnemuClient
from qnemu.topology import Topology
from qnemu.topology.builders import build_topology

__all__ = ["chain_topology", "main"]

TARGET_PAIRS_PER_S = {3: 500, 5: 250}
SIMULAQRON_PAIRS_PER_S = {3: 3.25, 5: 1.88}  # SimulaQron 4.1.2, same kind of machine
MEMORY_QUBITS = 16
MODE_LABELS = (("measure", "measure"), ("keep", "keep + measure"))
POINTS = ("p50", "p90", "p99")


def chain_topology(nodes: int) -> Topology:
    """line,N of perfect links: instant exact Φ+, one attempt per µs, no fibre delay."""
    return build_topology(
        f"line,{nodes}",
        link={"model": "perfect", "t_cycle_s": 1e-6, "length_km": 0.0},
        node={"qubits": MEMORY_QUBITS},
        seed=1,
    )


async def measure_mode(client: QnemuClient, src: str, dst: str, pairs: int) -> dict:
    emulated, agree, path = [], 0, None
    started = time.perf_counter()
    first_s = None
    async for ok in client.entangle(src, dst, pairs=pairs, measure="Z", timeout_s=600.0):
        first_s = first_s if first_s is not None else time.perf_counter() - started
        emulated.append(ok.delivered_at - ok.created_at)
        agree += z_consistent(ok.bell_state, ok.outcomes[0], ok.outcomes[1])
        path = path or ok.path
    wall_s = time.perf_counter() - started
    return {
        "pairs": len(emulated),
        "wall_s": wall_s,
        "pairs_per_s": len(emulated) / wall_s,
        "first_pair_wall_s": first_s,
        "emulated_latency_s": percentiles(emulated),
        "outcomes_agree": agree / max(1, len(emulated)),
        "path": list(path) if path else None,
    }


async def run_chain(network: Network, pairs: int, requests: int, modes: list[str]) -> dict:
    names = network.topology.node_names
    src, dst = names[0], names[-1]
    pids = {**network.pids(), "client (this process)": os.getpid()}
    results: dict = {}
    async with QnemuClient(network.run_dir, name="bench-chain") as client:
        # One pair first: routes, sockets and CurveZMQ handshakes are not what we measure.
        async for _ in client.entangle(src, dst, pairs=1, measure="Z", timeout_s=30.0):
            pass
        for mode, work in (
            ("measure", lambda: measure_mode(client, src, dst, pairs)),
            ("keep", lambda: keep_and_measure(client, src, dst, pairs)),
            ("latency", lambda: single_pair_latency(client, src, dst, requests)),
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


def report(all_results: dict[int, dict], pairs: int) -> None:
    ms = 1e3
    rows = []
    for nodes, results in all_results.items():
        for mode, label in MODE_LABELS:
            if mode in results:
                figures = results[mode]
                rows.append(
                    [
                        f"line,{nodes}  {label}",
                        figures["pairs_per_s"],
                        figures["wall_s"],
                        *(ms * figures["emulated_latency_s"][p] for p in POINTS),
                        figures["outcomes_agree"],
                    ]
                )
    if rows:
        print_table(
            f"n0 → last node over perfect links, one CREATE of {pairs} end-to-end pairs",
            ["chain / mode", "pairs/s", "wall s", "emu p50 ms", "emu p90 ms", "emu p99 ms", "Z ok"],
            rows,
        )
    rows = []
    for nodes, results in all_results.items():
        if "latency" in results:
            latency = results["latency"]
            rows.append(
                [
                    f"line,{nodes}  wall request → OK",
                    *(ms * latency["wall_latency_s"][p] for p in POINTS),
                ]
            )
            rows.append(
                [
                    f"line,{nodes}  emulated created → delivered",
                    *(ms * latency["emulated_latency_s"][p] for p in POINTS),
                ]
            )
    if rows:
        print_table(
            "single-pair measure CREATEs, one after another",
            ["latency", "p50 ms", "p90 ms", "p99 ms"],
            rows,
        )
    for nodes, results in all_results.items():
        modes = [m for m in ("measure", "keep", "latency") if m in results]
        if not modes:
            continue
        print_table(
            f"line,{nodes}: CPU share per process (1.0 = one core busy)",
            ["process", *modes],
            [
                [name, *(results[mode]["cpu_share"][name] for mode in modes)]
                for name in results[modes[0]]["cpu_share"]
            ],
        )
    print()
    for nodes, results in all_results.items():
        if "measure" in results:
            rate = results["measure"]["pairs_per_s"]
            target = TARGET_PAIRS_PER_S.get(nodes)
            verdict = (
                ""
                if target is None
                else f"target ≥ {target}: " + ("met" if rate >= target else "NOT met")
            )
            simulaqron = SIMULAQRON_PAIRS_PER_S.get(nodes)
            versus = f", SimulaQron {simulaqron}/s" if simulaqron else ""
            print(f"line,{nodes} measure: {rate:,.0f} pairs/s ({verdict}{versus})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short run (a few seconds)")
    parser.add_argument("--pairs", type=int, help="pairs per CREATE (default 5 000; quick 500)")
    parser.add_argument("--chains", default="3,5", help="chain lengths in nodes (default 3,5)")
    parser.add_argument(
        "--modes", default="measure,keep,latency", help="comma-separated subset to run"
    )
    parser.add_argument("--profile", type=Path, help="run every process under cProfile into DIR")
    parser.add_argument(
        "--insecure", action="store_true", help="no CurveZMQ (as `qnemu up --insecure`)"
    )
    args = parser.parse_args(argv)
    pairs = args.pairs or (500 if args.quick else 5_000)
    requests = 30 if args.quick else 200
    modes = args.modes.split(",")
    all_results: dict[int, dict] = {}
    for nodes in (int(n) for n in args.chains.split(",")):
        profile = args.profile / f"line-{nodes}" if args.profile else None
        with (
            tempfile.TemporaryDirectory(prefix="qnemu-bench-") as temp,
            Network(
                chain_topology(nodes), Path(temp), secure=not args.insecure, profile_dir=profile
            ) as network,
        ):
            all_results[nodes] = asyncio.run(run_chain(network, pairs, requests, modes))
    report(all_results, pairs)
    results: dict = {f"line_{n}": r for n, r in all_results.items()}
    results["parameters"] = {
        "pairs": pairs,
        "latency_requests": requests,
        "memory_qubits": MEMORY_QUBITS,
        "link": "perfect, t_cycle_s 1e-6, length_km 0",
        "quick": args.quick,
        "curve_zmq": not args.insecure,
        "loadavg_after": list(os.getloadavg()),
    }
    results["target"] = {
        f"line_{n}": {
            "pairs_per_s": TARGET_PAIRS_PER_S.get(n),
            "met": (r["measure"]["pairs_per_s"] >= TARGET_PAIRS_PER_S[n])
            if "measure" in r and n in TARGET_PAIRS_PER_S
            else None,
        }
        for n, r in all_results.items()
    }
    write_results("repeater_chain", results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
