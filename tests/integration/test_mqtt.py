"""The northbound MQTT API against a real Mosquitto and a real network.

Each module starts its own `mosquitto` on a free port with a temporary configuration and
stops it by pid; the network's topology points at it. Skips when mosquitto or aiomqtt is
missing, fails instead under QNEMU_REQUIRE_SERVICES=1 (as in CI).
"""

import asyncio
import json
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mqtt_lab
import pytest
from mqtt_lab import (
    Mosquitto,
    Probe,
    free_port,
    running_mosquitto,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "controller" / "controller.py"
NETWORK = "mqtt-lab"


def lab_topology(url: str) -> dict[str, Any]:
    # alice - bob - carol, perfect links; carol is reached from alice through bob.
    return {
        "name": NETWORK,
        "time_scale": 1.0,
        "seed": 11,
        "defaults": {"node": {"qubits": 16, "t1_s": None, "t2_s": None}},
        "nodes": {"alice": {}, "bob": {}, "carol": {}},
        "links": [
            {"nodes": ["alice", "bob"], "model": "perfect"},
            {"nodes": ["bob", "carol"], "model": "perfect"},
        ],
        "mqtt": {"url": url},
    }


PORT = free_port()  # the module's mosquitto listens here; the topology must know it first
TOPOLOGY = lab_topology(f"mqtt://127.0.0.1:{PORT}")


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    """The module's mosquitto (on PORT), stopped by pid at the end."""
    yield from running_mosquitto(tmp_path_factory.mktemp("mosquitto"), PORT)


@pytest.fixture(scope="module")
def lab(broker: Mosquitto, request: pytest.FixtureRequest):
    """The module's network, launched once mosquitto listens (so nothing waits on back-off)."""
    return request.getfixturevalue("network")


def probe(port: int = PORT, network: str = NETWORK):
    return mqtt_lab.probe(port, network)


def states(watcher: Probe, node: str, network: str = NETWORK) -> list[dict]:
    return watcher.on(f"qnemu/{network}/{node}/state")


# ---- tests ---------------------------------------------------------------------------------


async def test_every_node_keeps_a_retained_running_state(lab):
    async with probe() as watcher:
        for node in ("alice", "bob", "carol"):
            state = (await watcher.wait(lambda n=node: states(watcher, n)))[0]
            assert state["status"] == "running"
            assert state["memory"]["capacity"] == 16
            assert set(state["links"]) == set(lab.topology.neighbours(node))
        retained = [t for t, _, kept in watcher.messages if kept]
        assert len(retained) >= 3  # the first state of each node came from the broker's store
        # ... and it is refreshed: a second, live one arrives within two intervals.
        await watcher.wait(lambda: len(states(watcher, "alice")) >= 2, timeout_s=3.0)


async def test_keep_pairs_arrive_one_by_one_then_done_and_free_releases_them(lab):
    async with probe() as watcher:
        answers = await watcher.call("alice", "entangle", remote_node_id="bob", number=3)
        assert [a["kind"] for a in answers] == ["pair", "pair", "pair", "done"]
        pairs = [a["pair"] for a in answers[:3]]
        assert [p["sequence_number"] for p in pairs] == [0, 1, 2]
        assert all(p["fidelity"] == pytest.approx(1.0, abs=1e-9) for p in pairs)
        assert answers[-1]["delivered"] == 3
        delivered = [e["pair"] for e in watcher.events("pair_delivered") if e["node"] == "alice"]
        assert delivered == pairs
        # The halves stay in memory until freed, each at the node that holds it.
        alice_half = [p["qubits"][0] for p in pairs]
        bob_half = [p["qubits"][1] for p in pairs]
        freed = await watcher.call("alice", "free", qubits=[*alice_half, 999_999])
        assert freed == [
            {
                "kind": "freed",
                "correlation_id": freed[0]["correlation_id"],
                "final": True,
                "freed": 3,
                "not_held": [999_999],
            }
        ]
        assert (await watcher.call("bob", "free", qubits=bob_half))[0]["freed"] == 3
        again = await watcher.call("bob", "free", qubits=bob_half)
        assert again[0]["freed"] == 0 and again[0]["not_held"] == bob_half


async def test_measured_pairs_through_a_repeater(lab):
    async with probe() as watcher:
        answers = await watcher.call(
            "alice", "entangle", remote_node_id="carol", number=4, type="measure", basis="Z"
        )
        assert answers[-1]["kind"] == "done", answers[-1]
        pairs = [a["pair"] for a in answers if a["kind"] == "pair"]
        assert len(pairs) == 4
        for pair in pairs:
            assert pair["path"] == ["alice", "bob", "carol"]
            assert pair["bases"] == ["Z", "Z"]
            assert pair["qubits"] is None
            # Perfect links: Z outcomes agree for phi states and differ for psi states.
            same = pair["outcomes"][0] == pair["outcomes"][1]
            assert same == pair["bell_state"].startswith("phi"), pair


async def test_malformed_requests_get_errors_naming_the_problem(lab):
    async with probe() as watcher:
        await watcher.ask("alice", "entangle", b"{not json")
        rejected = await watcher.wait(lambda: watcher.events("request_rejected"))
        assert rejected[0]["error_code"] == "bad_json"
        assert rejected[0]["correlation_id"] is None

        cases = [
            ("entangle", {"number": 2}, "bad_request", "remote_node_id"),
            ("entangle", {"remote_node_id": "bob", "number": -1}, "bad_request", "number"),
            ("entangle", {"remote_node_id": "bob", "type": "teleport"}, "bad_request", "type"),
            ("entangle", {"remote_node_id": "bob", "colour": "red"}, "bad_request", "colour"),
            ("entangle", {"remote_node_id": "zoe"}, "unknown_node", "zoe"),
            ("teleport", {"qubit": 1}, "unknown_kind", "teleport"),
            ("free", {"qubits": "all"}, "bad_request", "qubits"),
        ]
        for kind, fields, code, named in cases:
            (answer,) = await watcher.call("alice", kind, **fields)
            assert answer["kind"] == "error", (kind, fields, answer)
            assert answer["error_code"] == code, (kind, fields, answer)
            assert named in answer["message"], (kind, fields, answer)

        # The link layer's refusals come back the same way, and as request_failed events.
        (unsupp,) = await watcher.call("alice", "entangle", remote_node_id="alice")
        assert unsupp["error_code"] == "UNSUPP"
        failed = await watcher.wait(lambda: watcher.events("request_failed"))
        assert failed[-1]["error_code"] == "UNSUPP"

        # Nothing of that hurt the node: it still delivers.
        answers = await watcher.call("alice", "entangle", remote_node_id="bob", type="measure")
        assert [a["kind"] for a in answers] == ["pair", "done"]


def test_the_example_controller_gets_and_frees_ten_pairs_and_drills_a_cut(lab):
    result = subprocess.run(
        [
            sys.executable,
            str(EXAMPLE),
            "--url",
            f"mqtt://127.0.0.1:{PORT}",
            "--network",
            NETWORK,
            "--src",
            "alice",
            "--dst",
            "bob",
            "--pairs",
            "10",
            "--timeout-s",
            "30",
            "--link-drill",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert sum(line.startswith("pair ") for line in lines) == 10
    summary = json.loads(lines[-1].removeprefix("summary "))
    assert summary["pairs"] == 10
    assert summary["freed"] == {"alice": 10, "bob": 10}
    assert summary["error"] is None
    assert summary["events"]["pair_delivered"] == 10
    # The drill: the fibre cut over MQTT, told as link_down, then mended.
    assert summary["link_drill"] == {"link": "alice-bob", "down_reason": "fibre_cut",
                                     "up_again": True}  # fmt: skip
    assert any(line.startswith("link alice-bob is down") for line in lines)


def test_clean_stop_says_stopped_and_a_crash_leaves_the_last_will(
    broker: Mosquitto, network_factory
):
    spec = lab_topology(broker.url) | {"name": "mqtt-stop"}
    launched = network_factory(spec, name="stop")  # launching runs its own event loop
    asyncio.run(stop_and_crash(launched.launcher))


async def stop_and_crash(launcher) -> None:
    async with probe(network="mqtt-stop") as watcher:
        await watcher.wait(lambda: states(watcher, "carol", "mqtt-stop"))
        launcher.processes["carol"].kill()  # SIGKILL: no goodbye, the will speaks
        offline = await watcher.wait(
            lambda: [s for s in states(watcher, "carol", "mqtt-stop") if s["status"] != "running"],
            timeout_s=15.0,
        )
        assert offline[0]["status"] == "offline" and offline[0]["node"] == "carol"
        await asyncio.to_thread(launcher.stop, 3.0)
        stopping = await watcher.wait(
            lambda: {e["node"] for e in watcher.events("node_stopping")} >= {"alice", "bob"}
        )
        assert stopping
        for node in ("alice", "bob"):
            last = states(watcher, node, "mqtt-stop")[-1]
            assert last["status"] == "stopped", last
    # What a controller connecting now finds, retained:
    async with probe(network="mqtt-stop") as late:
        found = await late.wait(lambda: len({t for t, _, kept in late.messages if kept}) >= 3)
        assert found
        status = {t.split("/")[2]: body["status"] for t, body, _ in late.messages}
        assert status == {"alice": "stopped", "bob": "stopped", "carol": "offline"}


async def test_nodes_reconnect_after_the_broker_restarts(lab, broker: Mosquitto):
    broker.stop(signal.SIGKILL)
    await asyncio.sleep(1.5)  # long enough for every node to notice and back off
    broker.start()
    async with probe() as watcher:
        # A request published while its node is still away is lost (clean sessions), so
        # wait for a live state from each: a node publishes one only once subscribed.
        def live(node: str) -> bool:
            topic = f"qnemu/{NETWORK}/{node}/state"
            return any(t == topic and not kept for t, _, kept in watcher.messages)

        await watcher.wait(lambda: all(live(node) for node in ("alice", "bob", "carol")))
        for node, peer in (("alice", "bob"), ("carol", "bob")):
            answers = await watcher.call(node, "entangle", remote_node_id=peer, type="measure")
            assert [a["kind"] for a in answers] == ["pair", "done"]
    metrics = await asyncio.to_thread(read_metrics, lab.plan.process("bob").metrics_url)
    assert "qnemu_mqtt_connections_total 2.0" in metrics
    assert "qnemu_mqtt_connected 1.0" in metrics


def read_metrics(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.read().decode()
