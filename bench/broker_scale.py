"""Broker operation rate as the number of stored pairs grows (to 100 000 by default).

A broker process holds at least K pairs that nobody touches (a large network's memories full of
waiting pairs); on top of them the phases of `broker_ops.py` (create_pair, gate, measure,
bell_measure) run on fresh pairs, one op per request with `--window` in flight and
batched. For each K the broker's RSS is read too. If the rate stays flat as K grows,
one broker's cost is per operation, not per stored state: the broker can be sharded by
group when one core is not enough (docs/scaling.md).

    .venv/bin/python bench/broker_scale.py [--quick] [--stored 0,1000,10000,100000]
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

import zmq

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Network, print_table, rss_mb, write_results
from broker_ops import (
    OWNER,
    PHASES,
    TOPOLOGY,
    Sizes,
    create_op,
    requests_for,
    results_of,
    run_pipelined,
    through_broker,
)

from qnemu.runtime.curve import apply_client, client_identity
from qnemu.topology import load_topology

__all__ = ["main"]

FILL_BATCH = 5_000  # pairs per create request while filling the store


def fill(endpoint: str, curve, count: int) -> float:
    """Create `count` more pairs that stay stored; wall seconds it took."""
    if count <= 0:
        return 0.0
    context = zmq.Context()
    socket = context.socket(zmq.DEALER)
    socket.setsockopt(zmq.IDENTITY, OWNER.encode())  # the envelopes are sent as OWNER
    socket.setsockopt(zmq.LINGER, 0)
    socket.setsockopt(zmq.RCVTIMEO, 60_000)
    apply_client(socket, curve, "broker")
    socket.connect(endpoint)
    try:
        started = time.perf_counter()
        messages = requests_for([create_op()] * count, FILL_BATCH)
        _, replies = run_pipelined(socket, messages, 2)
        created = len(results_of(replies))
        if created != count:
            raise RuntimeError(f"asked for {count} stored pairs, got {created}")
        return time.perf_counter() - started
    finally:
        socket.close(linger=0)
        context.term()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer ops per phase")
    parser.add_argument(
        "--stored",
        default="0,25000,50000,100000",
        help="stored pair counts to measure at, comma-separated (at least: each measurement "
        "leaves its swapped pairs stored too, so the JSON gives the count actually held)",
    )
    parser.add_argument("--window", type=int, default=64, help="single-op requests in flight")
    parser.add_argument("--batch", type=int, default=1000, help="operations per batched request")
    args = parser.parse_args(argv)
    stored_counts = sorted(int(text) for text in args.stored.split(","))
    if stored_counts[0] < 0:
        parser.error("--stored counts must be >= 0")
    single = Sizes(2_000, 1_000, 2_000) if args.quick else Sizes(10_000, 5_000, 10_000)
    batched = Sizes(10_000, 5_000, 10_000) if args.quick else Sizes(50_000, 25_000, 50_000)
    topology = load_topology(TOPOLOGY)
    steps = []
    with (
        tempfile.TemporaryDirectory(prefix="qnemu-bench-") as temp,
        Network(topology, Path(temp), only=["broker"]) as net,
    ):
        endpoint, pid = net.endpoint("broker"), net.pids()["broker"]
        curve = client_identity(Path(temp), ["broker"])
        stored = 0
        for target in stored_counts:
            fill_s = fill(endpoint, curve, target - stored)
            stored = max(stored, target)
            memory = rss_mb(pid)
            at_start = stored
            one = through_broker(endpoint, pid, single, 1, args.window, curve)
            many = through_broker(endpoint, pid, batched, args.batch, 4, curve)
            # Each swap leaves its outer halves behind as a pair: the store grows a little
            # past `target` while measuring; the next fill counts from there.
            stored += single.swaps + batched.swaps
            steps.append(
                {
                    "stored_pairs": at_start,
                    "fill_s": fill_s,
                    "broker_rss_mb": memory["rss_mb"],
                    "single": one,
                    "batched": many,
                }
            )
            print(f"stored {at_start:>7,} pairs: broker RSS {memory['rss_mb']:.0f} MB", flush=True)
    rows = [
        [f"{step['stored_pairs']:,}", step["broker_rss_mb"]]
        + [step["single"][phase]["ops_per_s"] for phase in PHASES]
        + [step["batched"][phase]["ops_per_s"] for phase in PHASES]
        for step in steps
    ]
    print_table(
        f"broker ops/s by stored pairs (single: {args.window} in flight; batched: "
        f"{args.batch} per request)",
        ["stored", "RSS MB"]
        + [f"{phase} 1" for phase in PHASES]
        + [f"{phase} B" for phase in PHASES],
        rows,
    )
    first, last = steps[0], steps[-1]
    ratios = {
        mode: {p: last[mode][p]["ops_per_s"] / first[mode][p]["ops_per_s"] for p in PHASES}
        for mode in ("single", "batched")
    }
    print(
        f"\nrate at {last['stored_pairs']:,} stored / at {first['stored_pairs']:,}: "
        + ", ".join(f"{mode} {p} {r:.2f}" for mode, by in ratios.items() for p, r in by.items())
    )
    write_results(
        "broker_scale",
        {
            "parameters": {"window": args.window, "batch": args.batch, "stored": stored_counts},
            "steps": steps,
            "rate_ratio_last_to_first": ratios,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
