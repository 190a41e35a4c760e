"""Secret key per second from decoy-state BB84 links at 1 GHz, against the physics.

Two nodes joined by one bb84_decoy fibre (GYS parameters, docs/qkd.md), 25 km and then
50 km, each run as real processes in a temp dir for a fixed wall time. Measured at
Alice once the first block is in (start-up excluded): secret bits stored per wall
second, pulses emulated per wall second. Reported against the asymptotic GLLP rate of
`qnemu.qkd.decoy_bb84.secret_key_rate_bps`:

  ratio        emulated secret bits/s ÷ physical secret bits/s (1.0: the link keeps up)
  real time    pulses emulated/s ÷ source rate (the share of the source the emulator
               keeps up with: sampling plus post-processing of each block)
  per pulse    secret bits per emulated pulse ÷ the formula's (the finite-block cost:
               revealed sample, Cascade's leak, finite-size decoy bounds from one block,
               about 0.16 at 25 km and 0.12 at 50 km with blocks of 2^18 detections)

ratio = real time × per pulse.

    .venv/bin/python bench/decoy_bb84.py [--quick] [--duration S] [--lengths 25 50]
        [--block-pulses N] [--profile DIR]
"""

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Network, cpu_s, print_table, write_results

from qnemu.client import QnemuClient
from qnemu.node.decoy_link import block_pulses
from qnemu.qkd.decoy_bb84 import secret_key_rate_bps
from qnemu.topology import Topology

__all__ = ["main"]

ALICE, BOB = "alice", "bob"
SOURCE_RATE_HZ = 1e9
WARM_UP_TIMEOUT_S = 60.0


def decoy_topology(length_km: float, block: int | None) -> Topology:
    link = {"nodes": [ALICE, BOB], "model": "bb84_decoy", "length_km": length_km,
            "source_rate_hz": SOURCE_RATE_HZ}  # fmt: skip
    if block is not None:
        link["block_pulses"] = block
    return Topology.model_validate(
        {
            "name": f"bench-decoy-{int(length_km)}km",
            "time_scale": 1.0,
            "seed": 3,
            "nodes": {ALICE: {"saes": ["alice_app"]}, BOB: {"saes": ["bob_app"]}},
            "links": [link],
        }
    )


async def alice_figures(client: QnemuClient) -> dict:
    return (await client.stats(ALICE))["qkd"][BOB]


async def measure(network: Network, duration_s: float) -> dict:
    async with QnemuClient(network.run_dir, name=f"bench-{os.getpid()}") as client:
        deadline = time.monotonic() + WARM_UP_TIMEOUT_S
        while not (await alice_figures(client))["blocks"]:  # start-up, first block
            if time.monotonic() > deadline:
                raise RuntimeError("no block ended within the warm-up time")
            await asyncio.sleep(0.1)
        pids = network.pids()
        cpu_before = {name: cpu_s(pid) for name, pid in pids.items()}
        before, started = await alice_figures(client), time.perf_counter()
        await asyncio.sleep(duration_s)
        after, wall_s = await alice_figures(client), time.perf_counter() - started
        cpu = {name: (cpu_s(pid) - cpu_before[name]) / wall_s for name, pid in pids.items()}
    blocks = {
        result: count - before["blocks"].get(result, 0) for result, count in after["blocks"].items()
    }
    return {
        "wall_s": wall_s,
        "secret_bits": after["secret_key_bits"] - before["secret_key_bits"],
        "pulses": after["pulses"] - before["pulses"],
        "blocks": blocks,
        "qber_mean": after["qber_mean"],
        "cpu_share": cpu,
    }


def run_length(length_km: float, duration_s: float, block: int | None, profile) -> dict:
    topology = decoy_topology(length_km, block)
    (link,) = topology.links
    params = link.params()
    physical_bps = secret_key_rate_bps(params)
    with (
        tempfile.TemporaryDirectory(prefix="qnemu-bench-decoy-") as tmp,
        Network(topology, Path(tmp), profile_dir=profile) as network,
    ):
        measured = asyncio.run(measure(network, duration_s))
    secret_bps = measured["secret_bits"] / measured["wall_s"]
    pulses_per_s = measured["pulses"] / measured["wall_s"]
    per_pulse = measured["secret_bits"] / max(1, measured["pulses"])
    return {
        "length_km": length_km,
        "block_pulses": block_pulses(link),
        "physical_secret_bps": physical_bps,
        "emulated_secret_bps": secret_bps,
        "ratio": secret_bps / physical_bps,
        "real_time_fraction": pulses_per_s / SOURCE_RATE_HZ,
        "per_pulse_fraction": per_pulse / (physical_bps / SOURCE_RATE_HZ),
        **measured,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10 s per link")
    parser.add_argument("--duration", type=float, default=30.0, help="wall seconds per link")
    parser.add_argument("--lengths", type=float, nargs="+", default=[25.0, 50.0])
    parser.add_argument("--block-pulses", type=int, default=None)
    parser.add_argument("--profile", type=Path, default=None)
    args = parser.parse_args()
    duration_s = 10.0 if args.quick else args.duration
    results = [
        run_length(length, duration_s, args.block_pulses, args.profile) for length in args.lengths
    ]
    print_table(
        f"decoy-state BB84 at {SOURCE_RATE_HZ:.0e} Hz, GYS parameters, {duration_s:g} s per link",
        ["length km", "block pulses", "physical b/s", "emulated b/s", "ratio", "real time",
         "per pulse", "blocks ok", "cpu alice", "cpu bob"],
        [
            (
                f"{r['length_km']:g}", r["block_pulses"], r["physical_secret_bps"],
                r["emulated_secret_bps"], r["ratio"], r["real_time_fraction"],
                r["per_pulse_fraction"], r["blocks"].get("ok", 0), r["cpu_share"][ALICE],
                r["cpu_share"][BOB],
            )
            for r in results
        ],
    )  # fmt: skip
    write_results("decoy_bb84", {"duration_s": duration_s, "links": results})


if __name__ == "__main__":
    main()
