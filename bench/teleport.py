"""Teleportations per wall-second between two nodes with the app API (qnemu.app).

Two nodes on a `perfect` link (t_cycle 1 µs, no fibre, 64-qubit noiseless memories),
started in a temp dir. The apps run in this process through `run_apps`, exactly as
`qnemu app` runs them, but each app loops inside one run, so process and app start-up
are not counted:
  sequential  examples/teleportation one teleportation after another: alice prepares
              RZ(φ)RY(θ)|0⟩, create_keep(1), CNOT, H, measures both, sends the bits;
              bob recv_keep(1), recv, corrects, frees
  batch       B teleportations at a time: the same operations, each step of the B
              teleportations issued at once (asyncio.gather), one create_keep(B), one send
Before timing, a few teleportations are checked with the oracle (bob's `q.state()`):
over perfect links the fidelity must be 1. Every app request is timed by type (wall
round trip app → node → broker → node → app) to say where the time goes.

    .venv/bin/python bench/teleport.py [--quick] [--teleports N] [--batch B] [--profile FILE]
        [--profile-processes DIR]
"""

import argparse
import asyncio
import cProfile
import math
import os
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Network, cpu_s, percentiles, print_table, write_results

from qnemu.app.runner import App, run_apps
from qnemu.topology import Topology
from qnemu.topology.builders import build_topology

__all__ = ["main", "pair_topology"]

TARGET_PER_S = 500
SIMULAQRON_PER_S = 4.9
MEMORY_QUBITS = 64
THETA, PHI = 1.0, 0.3
CHECKS = 5  # oracle-checked teleportations before the timed loop


def pair_topology() -> Topology:
    return build_topology(
        "line,2",
        link={"model": "perfect", "t_cycle_s": 1e-6, "length_km": 0.0},
        node={"qubits": MEMORY_QUBITS},
        seed=1,
    )


def target_state() -> np.ndarray:
    return np.array(
        [np.exp(-0.5j * PHI) * math.cos(THETA / 2), np.exp(0.5j * PHI) * math.sin(THETA / 2)]
    )


class TimedTransport:
    """Wraps an app's node connection: wall seconds of every request, by request type."""

    def __init__(self, inner: Any, calls: dict[str, list[float]]):
        self.inner = inner
        self.calls = calls

    async def call(self, body: Any, *, timeout_s: float | None = None) -> Any:
        return await (await self.submit(body, timeout_s=timeout_s))

    async def submit(self, body: Any, *, timeout_s: float | None = None) -> Any:
        """Timed from the send to the reply (a subroutine sent ahead counts while in flight)."""
        started = time.perf_counter()
        reply = await self.inner.submit(body, timeout_s=timeout_s)

        async def timed() -> Any:
            try:
                return await reply
            finally:
                self.calls[type(body).__name__].append(time.perf_counter() - started)

        return asyncio.get_running_loop().create_task(timed())


class Timeline:
    """When each teleportation started (alice) and ended (bob corrected), by index."""

    def __init__(self) -> None:
        self.started: dict[int, float] = {}
        self.ended: dict[int, float] = {}
        self.fidelities: list[float] = []
        self.calls: dict[str, list[float]] = defaultdict(list)

    def timed(self, node: Any) -> None:
        node._transport = TimedTransport(node._transport, self.calls)


async def alice_one(node: Any, epr: Any, sock: Any) -> None:
    q = await node.qubit()
    await q.rot_y(THETA)
    await q.rot_z(PHI)
    (e,) = await epr.create_keep(1)
    await q.cnot(e)
    await q.H()
    m1, m2 = await q.measure(), await e.measure()
    await sock.send([m1, m2])


async def bob_one(node: Any, epr: Any, sock: Any, check: bool) -> float | None:
    (q,) = await epr.recv_keep(1)
    m1, m2 = await sock.recv()
    if m2:
        await q.X()
    if m1:
        await q.Z()
    fidelity = None
    if check:
        psi = target_state()
        fidelity = float(np.real(psi.conj() @ (await q.state()) @ psi))
    await q.free()
    return fidelity


async def alice_batch(node: Any, epr: Any, sock: Any, size: int) -> None:
    qs = await asyncio.gather(*(node.qubit() for _ in range(size)))
    await asyncio.gather(*(q.rot_y(THETA) for q in qs))
    await asyncio.gather(*(q.rot_z(PHI) for q in qs))
    es = await epr.create_keep(size)
    await asyncio.gather(*(q.cnot(e) for q, e in zip(qs, es, strict=True)))
    await asyncio.gather(*(q.H() for q in qs))
    m1s = await asyncio.gather(*(q.measure() for q in qs))
    m2s = await asyncio.gather(*(e.measure() for e in es))
    await sock.send([list(m1s), list(m2s)])


async def bob_batch(node: Any, epr: Any, sock: Any, size: int, check: bool) -> list[float]:
    qs = await epr.recv_keep(size)
    m1s, m2s = await sock.recv()
    await asyncio.gather(*(q.X() for q, m2 in zip(qs, m2s, strict=True) if m2))
    await asyncio.gather(*(q.Z() for q, m1 in zip(qs, m1s, strict=True) if m1))
    fidelities = []
    if check:
        psi = target_state()
        for q in qs:
            fidelities.append(float(np.real(psi.conj() @ (await q.state()) @ psi)))
    await asyncio.gather(*(q.free() for q in qs))
    return fidelities


def make_apps(timeline: Timeline, teleports: int, batch: int) -> list[App]:
    """Alice and bob, each looping over `teleports` teleportations (batch 1: sequential)."""
    rounds = teleports // batch

    async def alice(node: Any) -> int:
        epr, sock = node.epr_socket("n1"), node.socket("n1")
        for _ in range(CHECKS):
            await alice_one(node, epr, sock)
        await sock.recv()  # bob has checked: the timed loop starts together
        timeline.timed(node)
        for r in range(rounds):
            timeline.started[r] = time.perf_counter()
            if batch == 1:
                await alice_one(node, epr, sock)
            else:
                await alice_batch(node, epr, sock, batch)
        return rounds * batch

    async def bob(node: Any) -> int:
        epr, sock = node.epr_socket("n0"), node.socket("n0")
        for _ in range(CHECKS):
            timeline.fidelities.append(await bob_one(node, epr, sock, check=True))
        await sock.send("go")
        timeline.timed(node)
        for r in range(rounds):
            if batch == 1:
                await bob_one(node, epr, sock, check=False)
            else:
                await bob_batch(node, epr, sock, batch, check=False)
            timeline.ended[r] = time.perf_counter()
        return rounds * batch

    here = Path(__file__).resolve()
    return [App("n0", here, alice), App("n1", here, bob)]


async def run_mode(network: Network, teleports: int, batch: int, profile: Path | None) -> dict:
    timeline = Timeline()
    apps = make_apps(timeline, teleports, batch)
    pids = {**network.pids(), "apps (this process)": os.getpid()}
    cpu_before = {name: cpu_s(pid) for name, pid in pids.items()}
    profiler = cProfile.Profile() if profile is not None else None
    wall_started = time.perf_counter()
    if profiler is not None:
        profiler.enable()
    try:
        done = await run_apps(network.run_dir, apps, {}, timeout_s=600.0)
    finally:
        if profiler is not None:
            profiler.disable()
            profile.parent.mkdir(parents=True, exist_ok=True)
            profiler.dump_stats(str(profile))
    wall_total_s = time.perf_counter() - wall_started
    rounds = len(timeline.ended)
    loop_s = timeline.ended[rounds - 1] - timeline.started[0]
    latencies = [timeline.ended[r] - timeline.started[r] for r in range(rounds)]
    calls = {
        name: {"count": len(values), "total_s": sum(values), **percentiles(values)}
        for name, values in sorted(timeline.calls.items())
    }
    return {
        "teleports": done["n0"],
        "batch": batch,
        "loop_wall_s": loop_s,
        "teleports_per_s": done["n0"] / loop_s,
        "latency_s": percentiles(latencies),  # per teleportation (per batch when batched)
        "checked_fidelities": timeline.fidelities,
        "run_apps_wall_s": wall_total_s,
        "app_calls": calls,
        "cpu_share": {
            name: (cpu_s(pid) - cpu_before[name]) / wall_total_s for name, pid in pids.items()
        },
    }


def flatten_checked(fidelities: list[Any]) -> list[float]:
    return [f for f in fidelities if f is not None]


def report(results: dict) -> None:
    ms = 1e3
    modes = [m for m in ("sequential", "batch") if m in results]
    print_table(
        "alice → bob teleportations, app API, perfect link (start-up not counted)",
        ["mode", "teleports", "per s", "lat p50 ms", "lat p90 ms", "lat p99 ms", "min F"],
        [
            [
                f"{mode} (B={results[mode]['batch']})",
                results[mode]["teleports"],
                results[mode]["teleports_per_s"],
                *(ms * results[mode]["latency_s"][p] for p in ("p50", "p90", "p99")),
                min(flatten_checked(results[mode]["checked_fidelities"]), default=float("nan")),
            ]
            for mode in modes
        ],
    )
    for mode in modes:
        figures = results[mode]
        teleports = figures["teleports"]
        print_table(
            f"{mode}: app requests by type (wall round trip app → node → broker → app)",
            ["request", "count", "per teleport", "p50 ms", "p99 ms", "ms/teleport"],
            [
                [
                    name,
                    c["count"],
                    c["count"] / teleports,
                    ms * c["p50"],
                    ms * c["p99"],
                    ms * c["total_s"] / teleports,
                ]
                for name, c in figures["app_calls"].items()
            ],
        )
        print_table(
            f"{mode}: CPU share per process over the whole app run (1.0 = one core busy)",
            ["process", "share"],
            list(figures["cpu_share"].items()),
        )
    print()
    for mode in modes:
        rate = results[mode]["teleports_per_s"]
        verdict = "met" if rate >= TARGET_PER_S else "NOT met"
        print(
            f"{mode}: {rate:,.0f} teleportations/s "
            f"(target ≥ {TARGET_PER_S}: {verdict}; SimulaQron {SIMULAQRON_PER_S}/s)"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short run (a few seconds)")
    parser.add_argument("--teleports", type=int, help="per mode (default 2 000; quick 200)")
    parser.add_argument("--batch", type=int, default=16, help="B of the batch mode (default 16)")
    parser.add_argument("--modes", default="sequential,batch", help="comma-separated subset")
    parser.add_argument("--profile", type=Path, help="cProfile the apps into FILE.<mode>.prof")
    parser.add_argument(
        "--profile-processes",
        type=Path,
        help="run every node/broker process under cProfile into DIR",
    )
    parser.add_argument(
        "--insecure", action="store_true", help="no CurveZMQ (as `qnemu up --insecure`)"
    )
    args = parser.parse_args(argv)
    teleports = args.teleports or (200 if args.quick else 2_000)
    results: dict = {}
    with (
        tempfile.TemporaryDirectory(prefix="qnemu-bench-") as temp,
        Network(
            pair_topology(),
            Path(temp),
            secure=not args.insecure,
            profile_dir=args.profile_processes,
        ) as network,
    ):
        for mode in args.modes.split(","):
            batch = 1 if mode == "sequential" else args.batch
            profile = args.profile.with_suffix(f".{mode}.prof") if args.profile else None
            results[mode] = asyncio.run(run_mode(network, teleports, batch, profile))
    report(results)
    results["parameters"] = {
        "teleports": teleports,
        "batch": args.batch,
        "checked_before_timing": CHECKS,
        "memory_qubits": MEMORY_QUBITS,
        "link": "perfect, t_cycle_s 1e-6, length_km 0",
        "quick": args.quick,
        "curve_zmq": not args.insecure,
        "loadavg_after": list(os.getloadavg()),
    }
    best = max(results[m]["teleports_per_s"] for m in ("sequential", "batch") if m in results)
    results["target"] = {"teleports_per_s": TARGET_PER_S, "met": best >= TARGET_PER_S}
    write_results("teleport", results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
