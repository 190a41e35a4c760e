"""EXPIRE on a running network: a fibre cut while kept pairs are in flight.

Bob delays what he hears by a second (a classical fault), so Alice holds her halves of
the first pairs for a second waiting for Bob's reports; the fibre is cut then. Alice
must give exactly those pairs up with EXPIRE, Bob must free his halves once the fibre
is back, the request must make the lost pairs again and finish, and no qubit may be
left held anywhere.
"""

import asyncio
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from qnemu.client import EntangleError, QnemuClient
from qnemu.launch import faults

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

QUBITS = 4
TOPOLOGY = {
    "name": "expire-lab",
    "time_scale": 1.0,
    "seed": 23,
    "defaults": {"node": {"qubits": QUBITS, "t1_s": None, "t2_s": None}},
    "nodes": {"alice": {}, "bob": {}},
    "links": [{"nodes": ["alice", "bob"], "model": "perfect", "t_cycle_s": 1e-4}],
}


def counter(metrics_url: str, name: str, **labels) -> float:
    text = urllib.request.urlopen(metrics_url, timeout=5).read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


async def eventually(check, timeout_s: float = 10.0):
    """Poll an async check until it returns something truthy."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = await check()
        if result or time.monotonic() > deadline:
            return result
        await asyncio.sleep(0.05)


async def test_a_cut_expires_the_pairs_in_flight_and_the_request_makes_them_again(network):
    run_dir = network.run_dir
    await faults.classical_fault(run_dir, "bob", drop=0.0, delay_s=1.0)
    async with QnemuClient(run_dir) as client:
        expires = []
        oks = []

        async def take_pairs():
            stream = client.entangle(
                "alice", "bob", pairs=6, timeout_s=20.0, on_expire=expires.append
            )
            async for pair in stream:
                oks.append(pair)
                await client.free("alice", [pair.qubits[0]])  # room for the next pairs
                await client.free("bob", [pair.qubits[1]])

        taking = asyncio.create_task(take_pairs())

        async def alice_waits_with_a_full_memory():
            held = (await client.stats("alice"))["memory"]["held"]
            return held if len(held) == QUBITS else None

        # Bob hears the create_request a second late, and his heralds another second
        # later: Alice's memory fills about one second in and waits a second for reports.
        waiting = await eventually(alice_waits_with_a_full_memory, timeout_s=3.0)
        assert waiting and not oks, "Alice should hold halves Bob has not reported yet"
        await faults.link_fault(run_dir, "alice-bob", "cut", {})
        await eventually(lambda: asyncio.sleep(0, expires))
        (expire,) = expires
        assert expire.reason == "cut" and sorted(expire.qubits) == sorted(waiting)
        assert len(expire.sequence_numbers) == QUBITS

        await faults.clear_faults(run_dir)  # the fibre is back, Bob hears at once again
        await asyncio.wait_for(taking, timeout=20.0)
        assert len(oks) == 6
        assert not {ok.sequence_number for ok in oks} & set(expire.sequence_numbers)
        assert await client.expirations("alice") == [expire]  # nothing more was lost

        async def nothing_held():
            stats = {name: await client.stats(name) for name in ("alice", "bob", "broker")}
            return (
                stats["broker"]["qubits"] == 0
                and all(stats[n]["memory"]["in_use"] == 0 for n in ("alice", "bob"))
                and all(stats[n]["active_requests"] == 0 for n in ("alice", "bob"))
            )

        assert await eventually(nothing_held), "a qubit or request was left behind"
    alice, bob = network.plan.process("alice"), network.plan.process("bob")
    name = "qnemu_pairs_expired_total"
    assert counter(alice.metrics_url, name, peer="bob", reason="cut") == QUBITS
    assert counter(bob.metrics_url, name, peer="alice", reason="peer_cut") == QUBITS


async def test_a_request_cut_off_until_its_deadline_times_out_and_the_link_serves_again(
    network,
):
    run_dir = network.run_dir
    await faults.clear_faults(run_dir)  # (in case the test before failed half-way)
    await faults.link_fault(run_dir, "alice-bob", "cut", {})
    async with QnemuClient(run_dir) as client:
        started = time.monotonic()
        with pytest.raises(EntangleError) as error:
            async for _ in client.entangle("alice", "bob", pairs=2, timeout_s=0.5):
                pass
        assert error.value.code == "TIMEOUT"
        assert time.monotonic() - started < 5.0  # by its deadline: nothing hangs
        await faults.link_fault(run_dir, "alice-bob", "restore", {})
        pairs = [p async for p in client.entangle("alice", "bob", pairs=2, timeout_s=5.0)]
        await client.free("alice", [p.qubits[0] for p in pairs])
        await client.free("bob", [p.qubits[1] for p in pairs])

        async def both_ends_are_done():
            stats = [await client.stats(name) for name in ("alice", "bob")]
            return all(s["active_requests"] == 0 and s["memory"]["in_use"] == 0 for s in stats)

        assert await eventually(both_ends_are_done)


LINE = {
    "name": "expire-line",
    "time_scale": 1.0,
    "seed": 29,
    "defaults": {"node": {"qubits": 4, "t1_s": None, "t2_s": None, "cutoff_s": 0.5}},
    "nodes": {"alice": {}, "bob": {}, "carol": {}},
    "links": [
        {"nodes": ["alice", "bob"], "model": "perfect", "t_cycle_s": 1e-4},
        {"nodes": ["bob", "carol"], "model": "perfect", "t_cycle_s": 1e-4},
    ],
}


def test_kept_pairs_past_the_cutoff_are_expired_at_both_ends(network_factory):
    """A pair the client keeps longer than cutoff_s: direct or through a repeater, the
    client hears EXPIRE once per pair and neither end holds anything afterwards."""
    launched = network_factory(LINE, name="line")

    async def run() -> None:
        async with QnemuClient(launched.run_dir) as client:
            direct = [p async for p in client.entangle("alice", "bob", timeout_s=5.0)]
            through = [p async for p in client.entangle("alice", "carol", timeout_s=5.0)]
            assert through[0].path == ["alice", "bob", "carol"]
            expired = await client.expirations("alice", wait_s=2.0)  # 4 × the cutoff
            assert sorted(q for e in expired for q in e.qubits) == sorted(
                [direct[0].qubits[0], through[0].qubits[0]]
            )
            assert all(e.reason in ("cutoff", "peer_cutoff") for e in expired)
            assert len(expired) == 2

            async def nothing_held():
                names = ("alice", "bob", "carol")
                stats = {name: await client.stats(name) for name in (*names, "broker")}
                return stats["broker"]["qubits"] == 0 and all(
                    stats[n]["memory"]["in_use"] == 0 for n in names
                )

            assert await eventually(nothing_held), "an expired half was left behind"

    asyncio.run(run())
