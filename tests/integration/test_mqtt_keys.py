"""QKD over MQTT: keys by request (ETSI 014 rules), qber_alarm and key_pool_low events.

Two nodes with SAEs on a perfect link run BBM92; a controller fetches keys at alice
and the same keys by key_ID at bob (once only), then adds an eavesdropper over MQTT:
every later block is discarded (qber_alarm), and draining the pool that is left makes
it fall below the threshold (key_pool_low).
"""

import asyncio
import base64
import time
from collections.abc import Iterator
from typing import Any

import pytest
from mqtt_lab import (
    Mosquitto,
    free_port,
    probe,
    running_mosquitto,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

NETWORK = "mqtt-keys"
PORT = free_port()
LOW_BITS = 512  # key_pool_low below this; re-armed at twice as much
TOPOLOGY: dict[str, Any] = {
    "name": NETWORK,
    "time_scale": 1.0,
    "seed": 9,
    "nodes": {"alice": {"saes": ["alice_app"]}, "bob": {"saes": ["bob_app"]}},
    "links": [{"nodes": ["alice", "bob"], "model": "perfect"}],
    "mqtt": {"url": f"mqtt://127.0.0.1:{PORT}", "key_pool_low_bits": LOW_BITS},
}
WAIT_S = 120.0


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    yield from running_mosquitto(tmp_path_factory.mktemp("mosquitto"), PORT)


@pytest.fixture(scope="module")
def lab(broker: Mosquitto, request: pytest.FixtureRequest):
    return request.getfixturevalue("network")


async def test_keys_by_request_then_an_eavesdropper_raises_alarms(lab):
    async with probe(PORT, NETWORK) as watcher:
        deadline = time.monotonic() + WAIT_S
        while True:  # the first block takes a while
            (got,) = await watcher.call("alice", "key", remote_node_id="bob", number=2, size=128)
            if got["kind"] == "keys":
                break
            assert got["error_code"] == "unavailable", got
            assert time.monotonic() < deadline, got
            await asyncio.sleep(0.5)
        assert (got["master_sae_id"], got["slave_sae_id"]) == ("alice_app", "bob_app")
        assert all(len(base64.b64decode(key["key"])) == 16 for key in got["keys"])

        key_ids = [key["key_ID"] for key in got["keys"]]
        (fetched,) = await watcher.call("bob", "key", remote_node_id="alice", key_ids=key_ids)
        assert fetched["kind"] == "keys" and fetched["keys"] == got["keys"]
        (again,) = await watcher.call("bob", "key", master_sae_id="alice_app", key_ids=key_ids)
        assert again["error_code"] == "bad_request" and "delivered already" in again["message"]
        (refused,) = await watcher.call("alice", "key", sae_id="bob_app", remote_node_id="bob")
        assert refused["error_code"] == "not_authorised"

        (eve,) = await watcher.call("alice", "fault", fault="eavesdrop", remote_node_id="bob")
        assert eve["kind"] == "fault"
        alarm = await watcher.wait(lambda: watcher.events("qber_alarm"), WAIT_S)
        assert alarm[0]["link"] == "alice-bob" and alarm[0]["qber"] > alarm[0]["threshold"]
        assert alarm[0]["result"] == "aborted_qber"

        # No new key from now on: take what is left until the KME has none.
        for size in (1024, 128):
            while True:
                (taken,) = await watcher.call("alice", "key", remote_node_id="bob", size=size)
                if taken["kind"] != "keys":
                    assert taken["error_code"] == "unavailable", taken
                    break
        low = await watcher.wait(
            lambda: [e for e in watcher.events("key_pool_low") if e["node"] == "alice"], 10.0
        )
        assert low[0]["peer"] == "bob" and low[0]["pool_bits"] < LOW_BITS
        assert (low[0]["threshold_bits"], low[0]["rearm_bits"]) == (LOW_BITS, 2 * LOW_BITS)
        (cleared,) = await watcher.call("alice", "fault", fault="clear")
        assert cleared["kind"] == "fault"
