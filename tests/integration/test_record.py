"""The recorder against a real network running a measure workload: one line per interval,
rates that match the link's physics, and no stop when a process dies."""

import asyncio
import itertools
import json
import math
import os
import signal

import pytest

from qnemu.launch.record import TIMESERIES_FILE, record, record_until_stopped
from qnemu.launch.report import report_series, write_report
from qnemu.launch.rundir import STATUS_FILE, read_status, write_json
from qnemu.physics.links import depolarise

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

LINK = {"fidelity": 0.9, "prob_success": 0.1, "t_cycle_s": 1e-3}  # 100 pairs per second
INTERVAL_S = 0.5
RECORD_S = 3.0
TOPOLOGY = {
    "name": "integration-record",
    "time_scale": 1.0,
    "seed": 5,
    "defaults": {"node": {"qubits": 4, "t1_s": None, "t2_s": None}},
    "nodes": {"alice": {}, "bob": {}},
    "links": [{"nodes": ["alice", "bob"], "model": "depolarise", **LINK}],
    "workloads": [{"src": "alice", "dst": "bob", "type": "measure", "basis": "Z"}],
}


async def record_for(network, seconds: float) -> int:
    stop = asyncio.Event()
    recorder = asyncio.create_task(record(network.run_dir, network.plan, INTERVAL_S, stop))
    await asyncio.sleep(seconds)
    stop.set()
    return await asyncio.wait_for(recorder, 10)


def lines(network) -> list[dict]:
    text = (network.run_dir / TIMESERIES_FILE).read_text()
    return [json.loads(line) for line in text.splitlines()]


async def test_recorder_writes_a_line_per_interval_with_the_link_rate(network):
    written = await record_for(network, RECORD_S)
    samples = lines(network)
    assert len(samples) == written
    # A sample every interval plus the last one at stop; a slow host may skip a beat.
    assert RECORD_S / INTERVAL_S - 2 <= written <= RECORD_S / INTERVAL_S + 1
    assert all(b["t_s"] > a["t_s"] for a, b in itertools.pairwise(samples))
    for sample in samples:
        assert set(sample["up"]) == {p.name for p in network.plan.processes}
        link = sample["links"]["alice-bob"]
        assert link["station_up"] and link["attempts"] >= link["pairs"] >= 0
        assert sample["nodes"]["alice"]["memory_capacity"] == 4
        assert set(sample["lateness"]) == set(sample["up"])
    first, last = samples[0]["links"]["alice-bob"], samples[-1]["links"]["alice-bob"]
    span_s = samples[-1]["emulated_s"] - samples[0]["emulated_s"]
    pairs = last["pairs"] - first["pairs"]
    # Pairs in a span of emulated time at p/T: the geometric spacings give a variance of
    # about n(1 - p); 5σ, and a pair's worth at each end of the span.
    physics = depolarise(**LINK)
    expected = physics.expected_rate_hz * span_s
    sigma = math.sqrt(expected * (1 - physics.success_probability))
    assert abs(pairs - expected) <= 5 * sigma + 2, (pairs, expected, sigma)
    assert last["expected_rate_hz"] == pytest.approx(physics.expected_rate_hz)
    # Every measured pair is delivered (counted at one end or both; a few in flight).
    assert last["pairs"] - 10 <= last["delivered"] <= 2 * last["pairs"]
    assert last["mean_fidelity"] == pytest.approx(LINK["fidelity"], abs=1e-9)
    # Some message was late by a measurable amount somewhere (nodes get station heralds).
    assert any(entry["p99_s"] is not None for s in samples[1:] for entry in s["lateness"].values())
    # The report's per-interval rates average to the same figure.
    rates = [v for _, v in report_series(samples)["pair_rate"]["series"]["alice-bob"]]
    assert all(rate is not None and rate >= 0 for rate in rates)
    page = write_report(network.run_dir).read_text()
    assert page.count('<svg class="chart"') >= 3


async def test_recorder_keeps_going_when_a_process_dies(network):
    station = "station-alice-bob"
    before = len(lines(network)) if (network.run_dir / TIMESERIES_FILE).exists() else 0
    stop = asyncio.Event()
    recorder = asyncio.create_task(record(network.run_dir, network.plan, INTERVAL_S, stop))
    await asyncio.sleep(1.0)
    os.kill(network.pids()[station], signal.SIGKILL)
    await asyncio.sleep(1.5)
    stop.set()
    written = await asyncio.wait_for(recorder, 10)
    samples = lines(network)[before:]
    assert len(samples) == written >= 3
    assert samples[0]["links"]["alice-bob"]["station_up"]
    last = samples[-1]
    assert station not in last["up"] and {"broker", "alice", "bob"} <= set(last["up"])
    assert last["links"]["alice-bob"]["pairs"] is None
    assert last["links"]["alice-bob"]["station_up"] is False
    assert station not in last["lateness"]  # its metrics went with it


async def test_record_until_stopped_ends_when_the_run_is_marked_stopped(network):
    status = read_status(network.run_dir)
    recorder = asyncio.create_task(record_until_stopped(network.run_dir, interval_s=0.3))
    await asyncio.sleep(1.0)
    assert not recorder.done()
    write_json(network.run_dir / STATUS_FILE, {**status, "state": "stopped"})  # `qnemu down`
    try:
        written = await asyncio.wait_for(recorder, 5)
    finally:
        write_json(network.run_dir / STATUS_FILE, status)
    assert written >= 3
