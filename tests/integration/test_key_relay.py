"""Trusted-node key relay between real node processes, with an unmodified ETSI 014 client.

alice — bob — carol in a line; BBM92 runs on alice–bob and bob–carol (all three declare
SAEs: a trusted node is a key manager, docs/qkd.md). alice_app asks its KME for keys for
carol_app, whose node shares no link with alice: the key is relayed through bob under
one-time pads, carol_app gets the same bytes, and bob's two pools lose exactly the
relayed bits.
"""

import asyncio
import base64
import sqlite3
import time
import urllib.request
from pathlib import Path

import pytest
from etsi_qkd_014_client import QKD014Client

from qnemu.client import QnemuClient
from qnemu.keys import key_store_path
from qnemu.launch.pki import pki_paths

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

WAIT_S = 90.0
KEY_BITS = 256
KEYS = 2

LINE = {
    "name": "qkd-relay",
    "time_scale": 1.0,
    "seed": 21,
    "nodes": {
        "alice": {"saes": ["alice_app"]},
        "bob": {"saes": ["bob_app"]},  # the trusted node: a key manager, its SAE unused
        "carol": {"saes": ["carol_app"]},
    },
    "links": [
        {"nodes": ["alice", "bob"], "model": "perfect"},
        {"nodes": ["bob", "carol"], "model": "perfect"},
    ],
}


def etsi_client(run_dir: Path, sae_id: str, kme_url: str) -> QKD014Client:
    pki = pki_paths(run_dir)
    return QKD014Client(
        kme_url.removeprefix("https://"),
        str(pki.cert(sae_id)),
        str(pki.key(sae_id)),
        str(pki.ca_cert),
    )


def keys_of(container) -> dict[str, bytes]:
    return {key.key_id: base64.b64decode(key.key) for key in container.keys}


def spent_bits(run_dir: Path, node: str) -> dict[str, dict[str, int]]:
    """Per peer, bits of the node's pool gone as application keys and as pads (from the file)."""
    db = sqlite3.connect(f"file:{key_store_path(run_dir, node)}?mode=ro", uri=True)
    try:
        rows = db.execute(
            "SELECT k.peer, u.key_id IN (SELECT key_id FROM keys), SUM(u.end_bits - u.start_bits)"
            " FROM unit_uses u JOIN key_units k ON k.unit_id = u.unit_id GROUP BY 1, 2"
        ).fetchall()
    finally:
        db.close()
    spent: dict[str, dict[str, int]] = {}
    for peer, is_key, bits in rows:
        spent.setdefault(peer, {})["keys" if is_key else "pads"] = bits
    return spent


async def wait_for(client: QnemuClient, node: str, check) -> dict:
    deadline = time.monotonic() + WAIT_S
    while True:
        stats = await client.stats(node)
        if check(stats):
            return stats
        if time.monotonic() > deadline:
            raise AssertionError(f"{node}: condition not met; stats {stats.get('qkd')}")
        await asyncio.sleep(0.5)


def offerable_towards(peer: str, bits: int):
    def check(stats: dict) -> bool:
        figures = stats["qkd"].get(peer)
        return figures is not None and figures.get("offerable_bits", 0) >= bits

    return check


def test_a_key_relayed_through_a_trusted_node_matches_at_both_ends(network_factory):
    asyncio.run(relay_through_bob(network_factory(LINE)))


async def relay_through_bob(network) -> None:
    run_dir = network.run_dir
    wanted = KEYS * KEY_BITS
    async with QnemuClient(run_dir) as client:
        # Each hop's sender pads from the units it owns: alice towards bob, bob towards carol.
        alice_stats = await wait_for(client, "alice", offerable_towards("bob", wanted))
        await wait_for(client, "bob", offerable_towards("carol", wanted))
        carol_stats = await wait_for(client, "carol", lambda s: s.get("kme_url") is not None)
    assert set(alice_stats["qkd"]) == {"bob"} and set(carol_stats["qkd"]) == {"bob"}

    alice = etsi_client(run_dir, "alice_app", alice_stats["kme_url"])
    carol = etsi_client(run_dir, "carol_app", carol_stats["kme_url"])
    code, status = await asyncio.to_thread(alice.get_status, "carol_app")
    assert code == 200 and (status.source_kme_id, status.target_kme_id) == ("alice", "carol")
    assert status.stored_key_count >= KEYS  # what the first hop could carry

    before = spent_bits(run_dir, "bob")
    assert "pads" not in before.get("alice", {}) and "pads" not in before.get("carol", {})
    code, container = await asyncio.to_thread(alice.get_key, "carol_app", KEYS, KEY_BITS)
    assert code == 200, container.message
    sent = keys_of(container)
    assert len(sent) == KEYS and all(len(key) == KEY_BITS // 8 for key in sent.values())
    code, container = await asyncio.to_thread(carol.get_key_with_key_IDs, "alice_app", list(sent))
    assert code == 200, container.message
    assert keys_of(container) == sent
    # Never twice.
    code, error = await asyncio.to_thread(carol.get_key_with_key_IDs, "alice_app", list(sent))
    assert code == 400 and "delivered already" in error.message

    # bob's pools with alice and with carol each lost exactly the relayed bits, as pads;
    # no application key was cut from them.
    after = spent_bits(run_dir, "bob")
    assert after["alice"] == {"pads": wanted} and after["carol"] == {"pads": wanted}
    async with QnemuClient(run_dir) as client:
        bob_stats = await client.stats("bob")
        alice_stats = await client.stats("alice")
        carol_stats = await client.stats("carol")
    assert bob_stats["qkd"]["alice"]["pad_bits"] == wanted == bob_stats["qkd"]["carol"]["pad_bits"]
    assert bob_stats["key_relay"]["bits"] == {"relay": {"alice>carol": wanted}}
    assert bob_stats["key_relay"]["pools"] == {}  # the trusted node keeps no end-to-end key
    assert alice_stats["key_relay"]["bits"] == {"origin": {"carol": wanted}}
    assert carol_stats["key_relay"]["bits"] == {"destination": {"alice": wanted}}
    # Everything relayed went to the SAEs: the end-to-end pools are empty again.
    assert alice_stats["key_relay"]["pools"] == {"carol": 0}
    assert carol_stats["key_relay"]["pools"] == {"alice": 0}

    url = next(p.metrics_url for p in network.plan.processes if p.name == "bob")
    text = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=5).read().decode())
    assert f'qnemu_key_relay_bits_total{{peer="alice>carol",role="relay"}} {float(wanted)}' in text

    # And the other way round: carol_app master, alice_app slave.
    async with QnemuClient(run_dir) as client:
        await wait_for(client, "carol", offerable_towards("bob", 128))
        await wait_for(client, "bob", offerable_towards("alice", 128))
    code, container = await asyncio.to_thread(carol.get_key, "alice_app", 1, 128)
    assert code == 200, container.message
    back = keys_of(container)
    code, container = await asyncio.to_thread(alice.get_key_with_key_IDs, "carol_app", list(back))
    assert code == 200 and keys_of(container) == back
