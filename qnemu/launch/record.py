"""The run recorder: one JSON line per sample in RUN_DIR/timeseries.jsonl, for `qnemu report`.

Each line holds cumulative counts (pairs, attempts, delivered, key bits), so a reader
derives rates from differences and a missed sample loses no pairs. A process that does
not answer is simply absent from that line (and listed as down); the recorder never
stops because of it.

Line format (every value JSON; null where a figure is unknown):
    {"t_s": wall seconds since the run's epoch, "emulated_s": the run's emulated clock,
     "wall_time": unix time, "up": [processes that answered],
     "links": {"a-b": {"station_up", "attempts", "pairs", "delivered", "mean_fidelity",
                       "expected_rate_hz", "expected_fidelity"}},
     "nodes": {"a": {"memory_in_use", "memory_capacity", "active_requests"}},
     "qkd": {"a-b": {"secret_key_bits", "sample_bits", "sample_errors", "qber_last"}},
     "lateness": {"broker": {"count", "p50_s", "p99_s"}}}
Lateness quantiles are over the messages since the previous sample (null when none came).
"""

import asyncio
import contextlib
import json
import math
import os
import signal
import time
import urllib.request
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from qnemu.client import QnemuClient
from qnemu.launch.launcher import collect_stats
from qnemu.launch.plan import RunPlan
from qnemu.launch.rundir import process_alive, read_status

__all__ = [
    "LATENESS_METRIC",
    "TIMESERIES_FILE",
    "histogram_quantile",
    "lateness_buckets",
    "make_sample",
    "record",
    "record_until_stopped",
]

TIMESERIES_FILE = "timeseries.jsonl"
LATENESS_METRIC = "qnemu_message_lateness_seconds"
SCRAPE_TIMEOUT_S = 0.5
Buckets = list[tuple[float, float]]  # (upper bound, cumulative count), ascending, +Inf last


def lateness_buckets(metrics_text: str) -> Buckets:
    """The lateness histogram's cumulative buckets from a /metrics page (empty if absent)."""
    buckets = []
    for family in text_string_to_metric_families(metrics_text):
        if family.name != LATENESS_METRIC:
            continue
        for sample in family.samples:
            if sample.name == LATENESS_METRIC + "_bucket":
                buckets.append((float(sample.labels["le"]), sample.value))
    return sorted(buckets)


def histogram_quantile(q: float, buckets: Buckets) -> float | None:
    """Prometheus' histogram_quantile: linear within the bucket holding rank q·count; the
    highest finite bound when that bucket is +Inf; None without observations."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (
                count - lower_count
            )
        lower_bound, lower_count = bound, count
    return lower_bound


def _interval(current: Buckets, previous: Buckets | None) -> Buckets:
    """Buckets of the observations since `previous`; all of them after a restart."""
    if previous is None or [b for b, _ in previous] != [b for b, _ in current]:
        return current
    difference = [
        (b, now - before) for (b, now), (_, before) in zip(current, previous, strict=True)
    ]
    if any(count < 0 for _, count in difference):  # the process restarted: counts reset
        return current
    return difference


def _scrape(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=SCRAPE_TIMEOUT_S) as response:
            return response.read().decode()
    except (OSError, ValueError):
        return None


def _finite(value: Any) -> float | None:
    """JSON has no NaN: unknown figures are null."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def make_sample(
    plan: RunPlan,
    stats: dict[str, dict[str, Any]],
    lateness: dict[str, Buckets],
    previous_lateness: dict[str, Buckets],
    now_wall_s: float,
) -> dict[str, Any]:
    """One line of the time series from the stats and lateness buckets of the processes
    that answered."""
    topology = plan.topology_model()
    links: dict[str, Any] = {}
    qkd: dict[str, Any] = {}
    for station, link in topology.stations():
        a, b = link.nodes
        name = f"{a}-{b}"
        station_stats = stats.get(station)
        delivered, fidelity_weighted, known = 0, 0.0, False
        for node, peer in ((a, b), (b, a)):
            per_link = stats.get(node, {}).get("links", {}).get(peer)
            if per_link is None:
                continue
            known = True
            count = per_link.get("delivered", 0)
            delivered += count
            fidelity = _finite(per_link.get("mean_fidelity"))
            if count and fidelity is not None:
                fidelity_weighted += count * fidelity
        links[name] = {
            "station_up": station_stats is not None,
            "attempts": (station_stats or {}).get("attempts"),
            "pairs": (station_stats or {}).get("pairs"),
            "delivered": delivered if known else None,
            "mean_fidelity": fidelity_weighted / delivered if delivered else None,
            "expected_rate_hz": _finite((station_stats or {}).get("expected_rate_hz")),
            "expected_fidelity": _finite((station_stats or {}).get("expected_fidelity")),
        }
        for node, peer in ((a, b), (b, a)):  # either end's figures: both count the same key
            figures = (stats.get(node, {}).get("qkd") or {}).get(peer)
            if figures is not None:
                qkd[name] = {
                    "secret_key_bits": figures.get("secret_key_bits"),
                    "sample_bits": figures.get("sample_bits"),
                    "sample_errors": figures.get("sample_errors"),
                    "qber_last": _finite(figures.get("qber_last")),
                    "pool_bits": figures.get("pool_bits"),
                }
                break
    nodes = {}
    for node in topology.node_names:
        node_stats = stats.get(node)
        if node_stats is None:
            continue
        memory = node_stats.get("memory", {})
        nodes[node] = {
            "memory_in_use": memory.get("in_use"),
            "memory_capacity": memory.get("capacity"),
            "active_requests": node_stats.get("active_requests"),
        }
    late = {}
    for name, buckets in lateness.items():
        window = _interval(buckets, previous_lateness.get(name))
        late[name] = {
            "count": buckets[-1][1] if buckets else 0,
            "p50_s": histogram_quantile(0.5, window),
            "p99_s": histogram_quantile(0.99, window),
        }
    return {
        "t_s": now_wall_s - plan.epoch_wall_s,
        "emulated_s": (now_wall_s - plan.epoch_wall_s) / plan.time_scale,
        "wall_time": now_wall_s,
        "up": sorted(stats),
        "links": links,
        "nodes": nodes,
        "qkd": qkd,
        "lateness": late,
    }


async def _lateness(plan: RunPlan) -> dict[str, Buckets]:
    """Every answering process's lateness buckets, scraped side by side."""
    texts = await asyncio.gather(
        *(asyncio.to_thread(_scrape, process.metrics_url) for process in plan.processes)
    )
    return {
        process.name: lateness_buckets(text)
        for process, text in zip(plan.processes, texts, strict=True)
        if text is not None
    }


async def record(run_dir: Path, plan: RunPlan, interval_s: float, stop_event: asyncio.Event) -> int:
    """Append a sample every `interval_s` wall seconds until `stop_event` is set, then a
    last one; returns how many lines were written."""
    path = Path(run_dir) / TIMESERIES_FILE
    written = 0
    previous_lateness: dict[str, Buckets] = {}
    async with QnemuClient(run_dir, name=f"recorder-{os.getpid()}") as client:
        next_at = time.monotonic()
        while True:
            stopping = stop_event.is_set()
            stats, lateness = await asyncio.gather(collect_stats(client, plan), _lateness(plan))
            line = make_sample(plan, stats, lateness, previous_lateness, time.time())
            previous_lateness.update(lateness)
            with path.open("a") as output:  # one write per line: a reader sees whole lines
                output.write(json.dumps(line) + "\n")
            written += 1
            if stopping:
                return written
            next_at += interval_s
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop_event.wait(), max(0.0, next_at - time.monotonic()))


def _run_over(run_dir: Path) -> bool:
    """The run was stopped, or none of its processes is left."""
    try:
        status = read_status(run_dir)
    except (FileNotFoundError, ValueError):
        return False
    if status.get("state") == "stopped":
        return True
    pids = [entry["pid"] for entry in status.get("processes", []) if entry.get("pid")]
    return bool(pids) and not any(process_alive(pid, run_dir) for pid in pids)


async def record_until_stopped(run_dir: Path, interval_s: float = 1.0, poll_s: float = 1.0) -> int:
    """Record a (detached) run until Ctrl-C/SIGTERM or until the run is over (`qnemu down`,
    or every process gone); for a `qnemu record RUN_DIR` command. Returns lines written."""
    run_dir = Path(run_dir).resolve()
    plan = RunPlan.read(run_dir)
    stop_event = asyncio.Event()
    loop = asyncio.get_running_loop()
    handled = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, stop_event.set)
            handled.append(signum)

    async def watch_run() -> None:
        while not stop_event.is_set():
            if _run_over(run_dir):
                stop_event.set()
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop_event.wait(), poll_s)

    try:
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(watch_run())
            recorder = tasks.create_task(record(run_dir, plan, interval_s, stop_event))
        return recorder.result()
    finally:
        for signum in handled:
            loop.remove_signal_handler(signum)
