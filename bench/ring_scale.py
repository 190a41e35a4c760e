"""The largest ring,N this machine runs at time_scale 1 with message lateness p99 < 1 ms.

For each N (4, 8, 16, 24, 32, ... by default) a ring,N of `perfect` links (10 km of fibre,
the builders' default) is started in a temp dir, as `qnemu up ring,N` starts it, with a
measure-mode workload on every link: node n_i requests pairs from n_(i+1) forever. The
pair rate per link is set by the link's `t_cycle_s` (one attempt per cycle, every attempt
succeeds): one sweep at 10 ms (100 pairs/s per link) and one at 1 s (1 pair/s, about
what today's metro links give) by default. After a settling time, every process's
`qnemu_message_lateness_seconds` histogram is scraped from its /metrics before and after
a window of `--window` seconds; the difference is the window's.

p99 comes from the cumulative buckets (bounds 0, 0.1, 0.3, 1, 3, 10, 30, 100 ms, ...),
interpolated linearly inside the bucket that holds it, so it is only as fine as the
buckets; the pass test (≥ 99 % of messages ≤ 1 ms) is exact, since 1 ms is a bound.
The sweep goes on past a miss (the curve is the result) and stops at the first N that
fails to start, whose p99 exceeds `--stop-p99-ms` (default 100 ms; 1 stops at the first
miss), or when the time budget is spent. A start that fails on a port taken meanwhile
is retried once. The load average is recorded with each N: other work on the machine
shows up as lateness.

    .venv/bin/python bench/ring_scale.py [--quick] [--sizes 4,8,16] [--window 10]
        [--t-cycle-s 0.01,1] [--budget-s 300] [--stop-p99-ms 100] [--insecure]
"""

import argparse
import asyncio
import math
import os
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Network, cpu_s, print_table, write_results
from prometheus_client.parser import text_string_to_metric_families

from qnemu.topology import Topology, parse_topology
from qnemu.topology.builders import build_topology

__all__ = ["histogram_quantile", "main", "ring_topology"]

LATENESS = "qnemu_message_lateness_seconds"
DELIVERED = "qnemu_pairs_delivered"
LIMIT_S = 1e-3
SIZES = (4, 8, 16, 24, 32, 40, 48, 64)
QUICK_SIZES = (4, 8)
# make_plan probes free ports long before each process binds them; with 2N+1 processes
# starting, another socket can take one meanwhile (EADDRINUSE): retry with fresh ports.
PORT_RETRIES = 1
Buckets = dict[float, float]  # upper bound (s) → cumulative count


def ring_topology(nodes: int, t_cycle_s: float) -> Topology:
    """ring,N of perfect 10 km links; every n_i requests measured pairs from n_(i+1) forever."""
    base = build_topology(f"ring,{nodes}", link={"t_cycle_s": t_cycle_s}, seed=1)
    data = base.to_dict()
    names = list(base.node_names)
    data["workloads"] = [
        {"src": names[i], "dst": names[(i + 1) % nodes], "type": "measure", "number": 0}
        for i in range(nodes)
    ]
    return parse_topology(data, f"ring_scale ring,{nodes}")


def scrape(url: str) -> tuple[Buckets, float]:
    """One process's lateness buckets and its pairs delivered (OKs at initiators)."""
    with urllib.request.urlopen(url, timeout=5.0) as response:
        text = response.read().decode()
    buckets: Buckets = {}
    delivered = 0.0
    for family in text_string_to_metric_families(text):
        if family.name == LATENESS:
            for sample in family.samples:
                if sample.name.endswith("_bucket"):
                    buckets[float(sample.labels["le"])] = sample.value
        elif family.name == DELIVERED:
            delivered += sum(s.value for s in family.samples if s.name.endswith("_total"))
    return buckets, delivered


def scrape_all(network: Network) -> dict[str, tuple[Buckets, float]]:
    urls = {p.name: p.metrics_url for p in network.plan.processes}
    with ThreadPoolExecutor(max_workers=8) as pool:
        found = dict(zip(urls, pool.map(scrape, urls.values()), strict=True))
    return found


def difference(after: Buckets, before: Buckets) -> Buckets:
    return {bound: count - before.get(bound, 0.0) for bound, count in after.items()}


def histogram_quantile(buckets: Buckets, q: float) -> float:
    """The q-quantile of cumulative buckets, linear inside its bucket (as PromQL does);
    +Inf when it lies beyond the last finite bound."""
    bounds = sorted(buckets)
    total = buckets[bounds[-1]]
    if total <= 0:
        return math.nan
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if math.isinf(bound):
                return math.inf
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (
                count - lower_count
            )
        lower_bound, lower_count = bound, count
    return math.inf


def fraction_within(buckets: Buckets, limit_s: float) -> float:
    total = buckets[max(buckets)]
    return buckets.get(limit_s, math.nan) / total if total > 0 else math.nan


def highest_bucket(buckets: Buckets) -> float:
    """The upper bound of the highest non-empty bucket: the max lateness, to a bucket."""
    bounds = sorted(buckets)
    previous = 0.0
    top = 0.0
    for bound in bounds:
        if buckets[bound] > previous:
            top = bound
        previous = buckets[bound]
    return top


async def measure_ring(
    nodes: int, t_cycle_s: float, settle_s: float, window_s: float, *, insecure: bool = False
) -> dict:
    topology = ring_topology(nodes, t_cycle_s)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="qnemu-bench-") as temp:
        network = Network(topology, Path(temp))
        if insecure:  # no CurveZMQ, as `qnemu up --insecure`: what the encryption costs
            network.plan = network.plan.model_copy(update={"secure": False})
        try:
            network.start()
            ready_s = await network.wait_ready(timeout_s=30.0 + 2.0 * nodes)
            await asyncio.sleep(settle_s)
            before = scrape_all(network)
            cpu_before = {name: cpu_s(pid) for name, pid in network.pids().items()}
            window_started = time.perf_counter()
            await asyncio.sleep(window_s)
            after = scrape_all(network)
            elapsed_s = time.perf_counter() - window_started
            cpu_used = {name: cpu_s(pid) - cpu_before[name] for name, pid in network.pids().items()}
        finally:
            network.stop()
    per_process = {name: difference(after[name][0], before[name][0]) for name in after}
    total: Buckets = {}
    for buckets in per_process.values():
        for bound, count in buckets.items():
            total[bound] = total.get(bound, 0.0) + count
    delivered = sum(after[n][1] - before[n][1] for n in after)
    worst = max(per_process, key=lambda name: histogram_quantile(per_process[name], 0.99))
    return {
        "nodes": nodes,
        "processes": len(network.plan.processes),
        "ready_s": ready_s,
        "window_s": elapsed_s,
        "messages": total[math.inf],
        "messages_per_s": total[math.inf] / elapsed_s,
        "pairs_per_s": delivered / elapsed_s,
        "lateness_p50_s": histogram_quantile(total, 0.50),
        "lateness_p99_s": histogram_quantile(total, 0.99),
        "lateness_max_bucket_s": highest_bucket(total),
        "within_1ms": fraction_within(total, LIMIT_S),
        "worst_process": worst,
        "worst_process_p99_s": histogram_quantile(per_process[worst], 0.99),
        "cpu_cores_busy": sum(cpu_used.values()) / elapsed_s,
        "loadavg_1min_after": os.getloadavg()[0],
        "ok": fraction_within(total, LIMIT_S) >= 0.99,
        "lateness_buckets": {str(b): c for b, c in sorted(total.items())},
        "per_process": {
            name: {
                "messages": buckets[math.inf],
                "p50_s": histogram_quantile(buckets, 0.5),
                "p99_s": histogram_quantile(buckets, 0.99),
                "cpu_share": cpu_used[name] / elapsed_s,
            }
            for name, buckets in per_process.items()
        },
        "wall_s": time.perf_counter() - started,
    }


def report(rows: list[dict], t_cycle_s: float, largest: int | None) -> None:
    ms = 1e3
    print_table(
        f"ring,N, measure workload on every link (perfect, 10 km, t_cycle {t_cycle_s:g} s), "
        "time_scale 1",
        [
            "N",
            "procs",
            "ready s",
            "pairs/s",
            "msgs/s",
            "p50 ms",
            "p99 ms",
            "max ≤ ms",
            "≤1ms %",
            "worst p99 ms",
            "cores",
            "load",
            "p99<1ms",
        ],
        [
            [
                r["nodes"],
                r["processes"],
                r["ready_s"],
                r["pairs_per_s"],
                r["messages_per_s"],
                ms * r["lateness_p50_s"],
                ms * r["lateness_p99_s"],
                ms * r["lateness_max_bucket_s"],
                100 * r["within_1ms"],
                f"{ms * r['worst_process_p99_s']:.3g} ({r['worst_process']})",
                r["cpu_cores_busy"],
                r["loadavg_1min_after"],
                "yes" if r["ok"] else "NO",
            ]
            for r in rows
        ],
    )
    print(
        "\np99 interpolated inside lateness buckets (0, 0.1, 0.3, 1, 3, 10, 30, 100 ms ...); "
        "'max ≤' is the upper bound of the highest non-empty bucket."
    )
    found = f"ring,{largest}" if largest is not None else "none"
    print(f"largest ring with p99 lateness < 1 ms: {found}")


def sweep(args: argparse.Namespace, t_cycle_s: float, sizes: list[int], budget_s: float) -> dict:
    """Rings of growing N at one per-link rate, until one fails, misses badly or time is up."""
    started = time.perf_counter()
    rows: list[dict] = []
    failures: list[dict] = []
    largest = None
    for nodes in sizes:
        if rows and time.perf_counter() - started + rows[-1]["wall_s"] * 2 > budget_s:
            print(f"time budget ({budget_s:.0f} s) spent before ring,{nodes}")
            break
        print(f"ring,{nodes}, t_cycle {t_cycle_s:g} s ...", flush=True)
        row = None
        for attempt in range(1 + PORT_RETRIES):
            try:
                row = asyncio.run(
                    measure_ring(nodes, t_cycle_s, args.settle, args.window, insecure=args.insecure)
                )
                row["start_attempts"] = attempt + 1
                break
            except Exception as error:  # a size that does not start is a result, too
                message = f"{type(error).__name__}: {error}"
                failures.append({"nodes": nodes, "attempt": attempt + 1, "error": message[-2000:]})
                print(f"ring,{nodes} failed: {message[-300:]}")
                # A planned port taken before its process bound it: a race, not a limit.
                if "Address already in use" not in message:
                    break
        if row is None:
            break
        rows.append(row)
        print(
            f"  p99 {1e3 * row['lateness_p99_s']:.3g} ms, {row['pairs_per_s']:.0f} pairs/s",
            flush=True,
        )
        if row["ok"]:
            largest = nodes
        if row["lateness_p99_s"] > args.stop_p99_ms / 1e3:
            break
    return {
        "t_cycle_s": t_cycle_s,
        "link_pairs_per_s": 1.0 / t_cycle_s,
        "largest_n_p99_under_1ms": largest,
        "curve": rows,
        "failures": failures,
        "wall_s": time.perf_counter() - started,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="ring,4 and ring,8, short windows")
    parser.add_argument("--sizes", help="comma-separated N (default 4,8,16,24,32,40,48,64)")
    parser.add_argument("--window", type=float, help="measured seconds per N (default 10)")
    parser.add_argument("--settle", type=float, help="seconds after ready (default 3)")
    parser.add_argument(
        "--t-cycle-s",
        default="0.01,1",
        help="attempt periods per link, one sweep each (default 0.01,1: 100 and 1 pairs/s)",
    )
    parser.add_argument("--budget-s", type=float, default=300.0, help="all sweeps, wall seconds")
    parser.add_argument(
        "--stop-p99-ms", type=float, default=100.0, help="stop after an N with p99 above this"
    )
    parser.add_argument(
        "--insecure", action="store_true", help="no CurveZMQ (as `qnemu up --insecure`)"
    )
    args = parser.parse_args(argv)
    if args.sizes:
        sizes = [int(n) for n in args.sizes.split(",")]
    else:
        sizes = list(QUICK_SIZES if args.quick else SIZES)
    args.window = args.window or (4.0 if args.quick else 10.0)
    args.settle = args.settle or (2.0 if args.quick else 3.0)
    cycles = [float(t) for t in args.t_cycle_s.split(",")]
    started = time.perf_counter()
    sweeps = []
    for index, t_cycle_s in enumerate(cycles):
        # Each sweep gets an equal share of what is left of the budget.
        left_s = args.budget_s - (time.perf_counter() - started)
        sweeps.append(sweep(args, t_cycle_s, sizes, left_s / (len(cycles) - index)))
    for found in sweeps:
        report(found["curve"], found["t_cycle_s"], found["largest_n_p99_under_1ms"])
    write_results(
        "ring_scale",
        {
            "largest_n_p99_under_1ms": {
                str(f["t_cycle_s"]): f["largest_n_p99_under_1ms"] for f in sweeps
            },
            "sweeps": sweeps,
            "parameters": {
                "sizes": sizes,
                "window_s": args.window,
                "settle_s": args.settle,
                "link": "perfect, length_km 10, t_cycle_s as each sweep says",
                "workload": "measure, number 0 (forever), n_i → n_(i+1), every link",
                "time_scale": 1.0,
                "curve_zmq": not args.insecure,
                "quick": args.quick,
                "budget_s": args.budget_s,
                "stop_p99_ms": args.stop_p99_ms,
            },
            "total_wall_s": time.perf_counter() - started,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
