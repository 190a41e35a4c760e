"""BBM92 between real node processes; keys fetched with an unmodified ETSI 014 client.

Links whose two nodes declare SAEs run BBM92 (docs/qkd.md). Werner pairs of fidelity F
give QBER 2(1 − F)/3 in both bases; a block whose sample QBER is above 11 % is
discarded; the keys the master SAE gets at one KME are the keys the slave SAE gets at
the other, also after the slave's node was killed and started again.
"""

import asyncio
import base64
import json
import math
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from etsi_qkd_014_client import QKD014Client

from qnemu.client import QnemuClient
from qnemu.launch.pki import pki_paths
from qnemu.node.qkd import kme_info_path

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

FIDELITY = 0.95
LOW_FIDELITY = 0.75  # QBER 1/6: every block is discarded
WAIT_S = 90.0

KEY_LINK = {
    "name": "qkd-keys",
    "time_scale": 1.0,
    "seed": 11,
    "nodes": {"alice": {"saes": ["alice_app"]}, "bob": {"saes": ["bob_app"]}},
    "links": [
        {
            "nodes": ["alice", "bob"],
            "model": "depolarise",
            "fidelity": FIDELITY,
            "prob_success": 1.0,
        }
    ],
}

THRESHOLD_LINKS = {
    "name": "qkd-threshold",
    "time_scale": 1.0,
    "seed": 12,
    "nodes": {
        "alice": {"saes": ["alice_app"]},
        "bob": {"saes": ["bob_app"]},
        "carol": {"saes": ["carol_app"]},
        "dave": {},  # no SAE: its link runs no QKD
    },
    "links": [
        {"nodes": ["alice", "bob"], "model": "perfect"},
        {
            "nodes": ["alice", "carol"],
            "model": "depolarise",
            "fidelity": LOW_FIDELITY,
            "prob_success": 1.0,
        },
        {"nodes": ["alice", "dave"], "model": "perfect"},
    ],
}


def expected_qber(fidelity: float) -> float:
    return 2.0 * (1.0 - fidelity) / 3.0


def assert_qber_near(figures: dict[str, Any], qber: float) -> None:
    """Errors in all samples so far against the binomial expectation: |k − np| ≤ 5σ."""
    n, errors = figures["sample_bits"], figures["sample_errors"]
    assert n > 0
    assert abs(errors - n * qber) <= 5 * math.sqrt(n * qber * (1 - qber)) + 1e-9, figures


async def wait_for(client: QnemuClient, node: str, check, timeout_s: float = WAIT_S) -> dict:
    deadline = time.monotonic() + timeout_s
    stats: dict = {}
    while True:
        try:
            stats = await client.stats(node)
        except TimeoutError:  # a node still starting (after a restart, on a loaded host)
            stats = {}
        if stats and check(stats):
            return stats
        if time.monotonic() > deadline:
            raise AssertionError(f"{node}: condition not met; stats {stats.get('qkd')}")
        await asyncio.sleep(0.5)


async def wait_for_keys(sae: QKD014Client, slave_sae_id: str, count: int = 2) -> None:
    deadline = time.monotonic() + WAIT_S
    while True:
        code, status = await asyncio.to_thread(sae.get_status, slave_sae_id)
        assert code == 200, status.message
        if status.stored_key_count >= count:
            return
        assert time.monotonic() < deadline, f"{status.source_kme_id}: too few keys"
        await asyncio.sleep(0.5)


def etsi_client(run_dir: Path, sae_id: str, kme_url: str) -> QKD014Client:
    pki = pki_paths(run_dir)
    return QKD014Client(
        kme_url.removeprefix("https://"),
        str(pki.cert(sae_id)),
        str(pki.key(sae_id)),
        str(pki.ca_cert),
    )


def kme_port(run_dir: Path, node: str) -> int:
    return json.loads(kme_info_path(run_dir, node).read_text())["port"]


def keys_of(container) -> dict[str, bytes]:
    return {key.key_id: base64.b64decode(key.key) for key in container.keys}


def test_bbm92_keys_match_at_both_kmes_and_survive_a_restart(network_factory):
    asyncio.run(keys_match_and_survive_a_restart(network_factory(KEY_LINK)))


async def keys_match_and_survive_a_restart(network) -> None:
    async with QnemuClient(network.run_dir) as client:

        def has_key(stats: dict) -> bool:
            (figures,) = stats["qkd"].values()  # the one peer
            return figures["blocks"].get("ok", 0) >= 1 and figures["pool_bits"] >= 2048

        alice_stats = await wait_for(client, "alice", has_key)
        bob_stats = await wait_for(client, "bob", has_key)
    figures = alice_stats["qkd"]["bob"]
    assert figures["role"] == "alice" and bob_stats["qkd"]["alice"]["role"] == "bob"
    assert_qber_near(figures, expected_qber(FIDELITY))
    assert figures["secret_key_bits"] > 0 and figures["authentication_failures"] == 0
    assert alice_stats["kme_url"] == f"https://127.0.0.1:{kme_port(network.run_dir, 'alice')}"

    alice = etsi_client(network.run_dir, "alice_app", alice_stats["kme_url"])
    bob = etsi_client(network.run_dir, "bob_app", bob_stats["kme_url"])
    code, status = await asyncio.to_thread(alice.get_status, "bob_app")
    assert code == 200 and (status.source_kme_id, status.target_kme_id) == ("alice", "bob")
    # Each KME offers only the units it owns (about half the blocks): wait for both.
    await wait_for_keys(alice, "bob_app")
    await wait_for_keys(bob, "alice_app")

    # alice_app master, bob_app slave; then the other way round (the other half of the pool).
    code, container = await asyncio.to_thread(alice.get_key, "bob_app", 2, 256)
    assert code == 200, container.message
    sent = keys_of(container)
    code, container = await asyncio.to_thread(bob.get_key_with_key_IDs, "alice_app", list(sent))
    assert code == 200 and keys_of(container) == sent
    code, container = await asyncio.to_thread(bob.get_key, "alice_app", 1, 128)
    assert code == 200, container.message
    back = keys_of(container)
    code, container = await asyncio.to_thread(alice.get_key_with_key_IDs, "bob_app", list(back))
    assert code == 200 and keys_of(container) == back

    # Keys handed to alice_app, then bob's node dies before bob_app fetches them.
    code, container = await asyncio.to_thread(alice.get_key, "bob_app", 1, 256)
    assert code == 200, container.message
    pending = keys_of(container)
    bob_pid = network.pids()["bob"]
    os.kill(bob_pid, signal.SIGKILL)
    network.launcher.processes["bob"].wait(timeout=10)
    log = open(network.run_dir / "logs" / "bob.restarted.log", "wb")  # noqa: SIM115
    restarted = subprocess.Popen(
        [sys.executable, "-m", "qnemu", "node", "bob", "--run-dir", str(network.run_dir)],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    log.close()
    try:
        async with QnemuClient(network.run_dir) as client:
            stats = await wait_for(client, "bob", lambda s: s.get("kme_url") is not None, 30.0)
        assert stats["kme_url"] == bob_stats["kme_url"]  # the KME comes back at the same URL
        code, container = await asyncio.to_thread(
            bob.get_key_with_key_IDs, "alice_app", list(pending)
        )
        assert code == 200 and keys_of(container) == pending
        # Never twice, restart or not.
        code, error = await asyncio.to_thread(bob.get_key_with_key_IDs, "alice_app", list(sent))
        assert code == 400 and "delivered already" in error.message
    finally:
        restarted.terminate()
        try:
            restarted.wait(timeout=5)
        except subprocess.TimeoutExpired:
            restarted.kill()
            restarted.wait(timeout=5)


def test_perfect_link_has_no_errors_and_a_noisy_block_is_discarded(network_factory):
    asyncio.run(noisy_block_discarded(network_factory(THRESHOLD_LINKS)))


async def noisy_block_discarded(network) -> None:
    async with QnemuClient(network.run_dir) as client:

        def both_ended(stats: dict) -> bool:
            qkd = stats["qkd"]
            return qkd["bob"]["blocks"].get("ok", 0) >= 1 and bool(qkd["carol"]["blocks"])

        stats = await wait_for(client, "alice", both_ended)
        dave = await client.stats("dave")
    perfect, noisy = stats["qkd"]["bob"], stats["qkd"]["carol"]
    assert set(stats["qkd"]) == {"bob", "carol"} and dave["qkd"] == {}
    assert perfect["sample_errors"] == 0 and perfect["secret_key_bits"] > 0
    assert set(noisy["blocks"]) == {"aborted_qber"}
    assert noisy["secret_key_bits"] == 0 and noisy["pool_bits"] == 0
    assert noisy["qber_last"] > 0.11
    assert_qber_near(noisy, expected_qber(LOW_FIDELITY))
    # Prometheus sees the same.
    url = next(p.metrics_url for p in network.plan.processes if p.name == "alice")
    text = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=5).read().decode())
    assert 'qnemu_qkd_blocks_total{peer="carol",result="aborted_qber"}' in text
    assert 'qnemu_key_pool_bits{peer="bob"}' in text
    assert 'qnemu_qkd_qber{link="alice-carol",peer="carol"}' in text
