"""Broker operations per second on Bell pairs: through a real broker process, and in-process.

A DEALER named after a node ("alice") talks to a broker process started alone. Phases,
each on pairs that the previous phases left:
  create_pair   Φ+ pairs owned by alice on both ends
  gate          H on the first half of each pair (a 4×4 group)
  measure       Z with free=True on the first half of a fresh pair (splits the group)
  bell_measure  on the second half of one pair and the first of the next (a swap:
                two groups merged into one of four qubits, two measured and freed)
Each phase runs (a) one operation per request with `--window` requests in flight and
(b) `--batch` operations per request. Requests are encoded before the clock starts
and replies decoded after it stops, so the figures are the broker's, not the client's.
The same phases then run in-process: the StateStore alone, and BrokerService.execute
with the wire codec (decode request, execute, encode reply), to split the cost per op.

    .venv/bin/python bench/broker_ops.py [--quick] [--profile DIR]
"""

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import zmq

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import REPO, Network, cpu_s, print_table, write_results

from qnemu.broker.server import BrokerService
from qnemu.broker.store import StateStore
from qnemu.physics.bell import BellState, bell_density
from qnemu.runtime import EmulatedClock, ServiceAddress
from qnemu.runtime.curve import apply_client, client_identity
from qnemu.topology import load_topology
from qnemu.wire import decode, encode
from qnemu.wire.broker import (
    BellMeasureOp,
    CreatePairOp,
    GateOp,
    MeasureOp,
    OpsReply,
    OpsRequest,
)

__all__ = ["main"]

OWNER = "alice"
PHI_PLUS = bell_density(BellState.PHI_PLUS)
TOPOLOGY = REPO / "topologies" / "perfect-pair.yaml"
PHASES = ("create_pair", "gate", "measure", "bell_measure")


class Sizes:
    """How many operations of each kind a run does (measure and bell_measure use up pairs)."""

    def __init__(self, measures: int, swaps: int, gates: int):
        self.measures = measures
        self.swaps = swaps
        self.gates = gates
        self.pairs = measures + 2 * swaps


def create_op() -> CreatePairOp:
    return CreatePairOp(
        owners=(OWNER, OWNER),
        state=np.ascontiguousarray(PHI_PLUS, dtype="<c16").tobytes(),
    )


def phase_ops(phase: str, pairs: list[tuple[int, int]], sizes: Sizes) -> list:
    if phase == "create_pair":
        op = create_op()
        return [op] * sizes.pairs
    if phase == "gate":
        return [GateOp("H", [pairs[i % len(pairs)][0]]) for i in range(sizes.gates)]
    if phase == "measure":
        return [MeasureOp(pairs[i][0], "Z", free=True) for i in range(sizes.measures)]
    first = sizes.measures
    return [
        BellMeasureOp((pairs[first + 2 * i][1], pairs[first + 2 * i + 1][0]))
        for i in range(sizes.swaps)
    ]


def requests_for(ops: list, per_request: int) -> list[bytes]:
    now_s = 0.0  # noiseless memories: the time of an operation does not matter here
    return [
        encode(OpsRequest(ops[i : i + per_request]), sender=OWNER, sent_at=now_s)
        for i in range(0, len(ops), per_request)
    ]


def run_pipelined(socket: zmq.Socket, messages: list[bytes], window: int) -> tuple[float, list]:
    """Send with up to `window` requests in flight; wall seconds and the raw replies."""
    replies = []
    sent = 0
    started = time.perf_counter()
    while sent < min(window, len(messages)):
        socket.send(messages[sent])
        sent += 1
    while len(replies) < len(messages):
        replies.append(socket.recv())
        if sent < len(messages):
            socket.send(messages[sent])
            sent += 1
    return time.perf_counter() - started, replies


def results_of(replies: list[bytes]) -> list:
    results = []
    for data in replies:
        body = decode(data).body
        if not isinstance(body, OpsReply) or body.error is not None:
            raise RuntimeError(f"broker refused: {body}")
        results.extend(body.results)
    return results


def through_broker(
    endpoint: str, pid: int, sizes: Sizes, per_request: int, window: int, curve=None
) -> dict:
    """All phases against the broker process; ops/s and broker CPU µs per op for each."""
    context = zmq.Context()
    socket = context.socket(zmq.DEALER)
    socket.setsockopt(zmq.IDENTITY, OWNER.encode())
    socket.setsockopt(zmq.LINGER, 0)
    socket.setsockopt(zmq.RCVTIMEO, 30_000)
    apply_client(socket, curve, "broker")  # the run's client key (CurveZMQ)
    socket.connect(endpoint)
    figures = {}
    pairs: list[tuple[int, int]] = []
    try:
        for phase in PHASES:
            ops = phase_ops(phase, pairs, sizes)
            messages = requests_for(ops, per_request)
            cpu_before = cpu_s(pid)
            elapsed_s, replies = run_pipelined(socket, messages, window)
            cpu_used_s = cpu_s(pid) - cpu_before
            results = results_of(replies)
            if phase == "create_pair":
                pairs = [tuple(result) for result in results]
            figures[phase] = {
                "ops": len(ops),
                "requests": len(messages),
                "wall_s": elapsed_s,
                "ops_per_s": len(ops) / elapsed_s,
                "broker_cpu_us_per_op": 1e6 * cpu_used_s / len(ops),
                "broker_cpu_share": cpu_used_s / elapsed_s,
            }
    finally:
        socket.close(linger=0)
        context.term()
    return figures


def store_alone(sizes: Sizes) -> dict:
    """The same phases straight on a StateStore: the ceiling without messaging."""
    store = StateStore(seed=1)
    figures = {}
    started = time.perf_counter()
    pairs = [store.create_pair((OWNER, OWNER), PHI_PLUS, 0.0) for _ in range(sizes.pairs)]
    figures["create_pair"] = time.perf_counter() - started, sizes.pairs
    started = time.perf_counter()
    for i in range(sizes.gates):
        store.gate("H", [pairs[i % len(pairs)][0]], OWNER, 0.0)
    figures["gate"] = time.perf_counter() - started, sizes.gates
    started = time.perf_counter()
    for i in range(sizes.measures):
        store.measure(pairs[i][0], "Z", OWNER, 0.0, free=True)
    figures["measure"] = time.perf_counter() - started, sizes.measures
    first = sizes.measures
    started = time.perf_counter()
    for i in range(sizes.swaps):
        store.bell_measure(pairs[first + 2 * i][1], pairs[first + 2 * i + 1][0], OWNER, 0.0)
    figures["bell_measure"] = time.perf_counter() - started, sizes.swaps
    return {
        phase: {"ops": count, "ops_per_s": count / elapsed_s, "us_per_op": 1e6 * elapsed_s / count}
        for phase, (elapsed_s, count) in figures.items()
    }


def service_in_process(sizes: Sizes, per_request: int) -> dict:
    """BrokerService.execute with the codec around it: µs per op in decode, execute, encode."""
    service = BrokerService("broker", ServiceAddress("inproc://bench"), EmulatedClock(time.time()))
    figures = {}
    pairs: list[tuple[int, int]] = []
    try:
        for phase in PHASES:
            ops = phase_ops(phase, pairs, sizes)
            messages = requests_for(ops, per_request)
            started = time.perf_counter()
            envelopes = [decode(data) for data in messages]
            decoded_at = time.perf_counter()
            replies = [
                service.execute(e.body, e.header.sender, e.header.sent_at) for e in envelopes
            ]
            executed_at = time.perf_counter()
            for envelope, reply in zip(envelopes, replies, strict=True):
                encode(reply, sender="broker", sent_at=0.0, parent_id=envelope.header.msg_id)
            encoded_at = time.perf_counter()
            if phase == "create_pair":
                pairs = [tuple(r) for reply in replies for r in reply.results]
            count = len(ops)
            figures[phase] = {
                "ops": count,
                "decode_us_per_op": 1e6 * (decoded_at - started) / count,
                "execute_us_per_op": 1e6 * (executed_at - decoded_at) / count,
                "encode_us_per_op": 1e6 * (encoded_at - executed_at) / count,
                "ops_per_s": count / (encoded_at - started),
            }
    finally:
        service.close()
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short run (a few seconds)")
    parser.add_argument("--window", type=int, default=64, help="single-op requests in flight")
    parser.add_argument("--batch", type=int, default=1000, help="operations per batched request")
    parser.add_argument("--profile", type=Path, help="run the broker under cProfile into DIR")
    args = parser.parse_args(argv)
    single = Sizes(3_000, 1_500, 3_000) if args.quick else Sizes(20_000, 10_000, 20_000)
    batched = Sizes(20_000, 10_000, 20_000) if args.quick else Sizes(100_000, 50_000, 100_000)
    topology = load_topology(TOPOLOGY)

    results: dict = {"parameters": {"window": args.window, "batch": args.batch}}
    # The broker alone: nodes and station would only sit idle beside it.
    with (
        tempfile.TemporaryDirectory(prefix="qnemu-bench-") as temp,
        Network(topology, Path(temp), only=["broker"], profile_dir=args.profile) as net,
    ):
        endpoint, pid = net.endpoint("broker"), net.pids()["broker"]
        curve = client_identity(Path(temp), ["broker"])
        results["single_pipelined"] = through_broker(endpoint, pid, single, 1, args.window, curve)
        results["batched"] = through_broker(endpoint, pid, batched, args.batch, 4, curve)
    results["store_in_process"] = store_alone(single)
    results["service_in_process_single"] = service_in_process(single, 1)
    results["service_in_process_batched"] = service_in_process(batched, args.batch)

    rows = []
    for phase in PHASES:
        one, many = results["single_pipelined"][phase], results["batched"][phase]
        rows.append(
            [
                phase,
                one["ops_per_s"],
                one["broker_cpu_us_per_op"],
                many["ops_per_s"],
                many["broker_cpu_us_per_op"],
                results["store_in_process"][phase]["ops_per_s"],
            ]
        )
    print_table(
        f"broker process, ops/s (single: {args.window} requests in flight; batched: "
        f"{args.batch} ops per request)",
        ["operation", "single ops/s", "cpu µs/op", "batched ops/s", "cpu µs/op", "store alone"],
        rows,
    )
    split = []
    for label, key in (
        ("single", "service_in_process_single"),
        ("batched", "service_in_process_batched"),
    ):
        for phase in PHASES:
            f = results[key][phase]
            split.append(
                [
                    f"{phase} ({label})",
                    f["decode_us_per_op"],
                    f["execute_us_per_op"],
                    f["encode_us_per_op"],
                ]
            )
    print_table(
        "in-process cost per op (µs): decode request, execute, encode reply",
        ["operation", "decode", "execute", "encode"],
        split,
    )
    # Targets on the operations on pairs (gate, measure, bell_measure), not on set-up.
    measured = ("gate", "measure", "bell_measure")
    single_min = min(results["single_pipelined"][p]["ops_per_s"] for p in measured)
    batched_min = min(results["batched"][p]["ops_per_s"] for p in measured)
    results["targets"] = {
        "single_ops_per_s_min": single_min,
        "single_target": 20_000,
        "single_met": single_min >= 20_000,
        "batched_ops_per_s_min": batched_min,
        "batched_target": 100_000,
        "batched_met": batched_min >= 100_000,
        "single_ops_per_s_mean": statistics.fmean(
            results["single_pipelined"][p]["ops_per_s"] for p in measured
        ),
    }
    verdict = {True: "met", False: "NOT met"}
    print(
        f"\ntarget ≥ 20 000 single ops/s: slowest {single_min:,.0f} "
        f"({verdict[single_min >= 20_000]})"
        f"\ntarget ≥ 100 000 batched ops/s: slowest {batched_min:,.0f} "
        f"({verdict[batched_min >= 100_000]})"
    )
    write_results("broker_ops", results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
