"""Fault injection on a running network: each fault shows, and the network recovers."""

import asyncio
import itertools
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from qnemu.client import EntangleError, QnemuClient, RequestError
from qnemu.launch import faults
from qnemu.launch.launcher import pid_running
from qnemu.launch.rundir import read_status

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

TOPOLOGY = {
    "name": "fault-lab",
    "time_scale": 1.0,
    "seed": 17,
    "defaults": {"node": {"qubits": 8, "t1_s": None, "t2_s": None}},
    "nodes": {"alice": {}, "bob": {}},
    "links": [{"nodes": ["alice", "bob"], "model": "perfect", "t_cycle_s": 1e-4}],
}


async def pairs(run_dir, number=3, timeout_s=5.0, measure="Z", **options) -> list:
    """Measured pairs (kept ones would fill the memories across tests)."""
    options["measure"] = measure
    async with QnemuClient(run_dir) as client:
        return [
            p
            async for p in client.entangle(
                "alice", "bob", pairs=number, timeout_s=timeout_s, **options
            )
        ]


async def fails(run_dir, timeout_s=0.4) -> EntangleError:
    with pytest.raises(EntangleError) as error:
        await pairs(run_dir, number=1, timeout_s=timeout_s)
    return error.value


def gauge(metrics_url: str, name: str, **labels) -> float:
    text = urllib.request.urlopen(metrics_url, timeout=5).read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


async def test_a_cut_fibre_times_requests_out_and_restoring_it_recovers(network):
    station = network.plan.process("station-alice-bob")
    await faults.link_fault(network.run_dir, "alice-bob", "cut", {})
    assert gauge(station.metrics_url, "qnemu_link_faults_active", kind="cut") == 1
    error = await fails(network.run_dir)
    assert error.code == "TIMEOUT" and error.delivered == 0
    await faults.link_fault(network.run_dir, "bob-alice", "restore", {})
    assert len(await pairs(network.run_dir)) == 3
    assert gauge(station.metrics_url, "qnemu_link_faults_active", kind="cut") == 0


@pytest.mark.parametrize("fraction", [1.0, 0.4])
async def test_an_eavesdropper_raises_the_qber_by_a_quarter_of_what_she_intercepts(
    network, fraction
):
    await faults.link_fault(network.run_dir, "alice-bob", "eavesdrop", {"fraction": fraction})
    try:
        delivered = await pairs(network.run_dir, number=1200, measure="random", timeout_s=30)
    finally:
        await faults.clear_faults(network.run_dir)
    matching = [p for p in delivered if p.bases[0] == p.bases[1]]
    errors = sum(p.outcomes[0] != p.outcomes[1] for p in matching)
    expected = fraction / 4  # intercept-resend in a random basis: wrong half the time, 50 %
    sigma = (len(matching) * expected * (1 - expected)) ** 0.5
    assert abs(errors - len(matching) * expected) < 5 * sigma


async def test_changing_a_link_changes_what_it_delivers(network):
    await faults.link_fault(network.run_dir, "alice-bob", "set", {"t_cycle_s": 0.01})
    try:
        slow = await pairs(network.run_dir, number=3)
        gaps = [b.created_at - a.created_at for a, b in itertools.pairwise(slow)]
        assert all(gap == pytest.approx(0.01, rel=1e-6) for gap in gaps)  # one attempt each
        with pytest.raises(RequestError, match="bogus"):
            await faults.link_fault(network.run_dir, "alice-bob", "set", {"bogus": 1})
    finally:
        await faults.clear_faults(network.run_dir)


async def test_dropped_classical_messages_and_a_paused_broker_fail_requests_until_mended(
    network,
):
    await faults.classical_fault(network.run_dir, "alice", drop=1.0, delay_s=0.0)
    assert (await fails(network.run_dir)).code == "TIMEOUT"
    await faults.clear_faults(network.run_dir)
    assert len(await pairs(network.run_dir)) == 3
    faults.process_fault(network.run_dir, "broker", "pause")
    try:
        assert (await fails(network.run_dir)).code == "TIMEOUT"
    finally:
        faults.process_fault(network.run_dir, "broker", "resume")
    assert len(await pairs(network.run_dir)) == 3


def test_a_killed_node_is_down_and_a_restarted_one_serves_again(network_factory):
    launched = network_factory(TOPOLOGY, name="restart")
    faults.process_fault(launched.run_dir, "bob", "kill")
    time.sleep(0.3)
    pid = next(e["pid"] for e in read_status(launched.run_dir)["processes"] if e["name"] == "bob")
    assert not pid_running(pid)
    faults.process_fault(launched.run_dir, "bob", "restart")
    new_pid = next(
        e["pid"] for e in read_status(launched.run_dir)["processes"] if e["name"] == "bob"
    )
    assert new_pid != pid and pid_running(new_pid)

    async def served() -> int:
        deadline = time.monotonic() + 15
        while True:
            try:
                return len(await pairs(launched.run_dir, number=2, timeout_s=2))
            except (EntangleError, TimeoutError):
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)

    assert asyncio.run(served()) == 2
    faults.process_fault(launched.run_dir, "bob", "stop")  # leave nothing behind
