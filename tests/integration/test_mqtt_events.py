"""Link, fault and process events, and fault requests, over a real Mosquitto.

A chain alice - bob - carol on perfect links. Faults are asked for over MQTT (at a node,
or at the launcher for processes) and must come back as events from the nodes that see
them, in the nodes' metrics, and in the retained states. The module's mosquitto runs on
a free port and is stopped by pid; the launcher's MQTT presence runs in the test's loop.
"""

import asyncio
import json
import sys
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from mqtt_lab import (
    Mosquitto,
    free_port,
    probe,
    running_mosquitto,
)

from qnemu.app.api import AppError
from qnemu.app.connection import NodeConnection
from qnemu.control.connection import parse_broker_url
from qnemu.launch.mqtt import LauncherControl
from qnemu.runtime import EmulatedClock
from qnemu.runtime.curve import client_identity
from qnemu.wire.app import AppAllocRequest, AppAttachRequest, AppRecvRequest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

NETWORK = "mqtt-events"
PORT = free_port()
TOPOLOGY: dict[str, Any] = {
    "name": NETWORK,
    "time_scale": 1.0,
    "seed": 5,
    "defaults": {"node": {"qubits": 8, "t1_s": None, "t2_s": None}},
    "nodes": {"alice": {}, "bob": {}, "carol": {}},
    "links": [
        {"nodes": ["alice", "bob"], "model": "perfect"},
        {"nodes": ["bob", "carol"], "model": "perfect", "length_km": 2.0},
    ],
    "mqtt": {"url": f"mqtt://127.0.0.1:{PORT}"},
}
EVENT_WAIT_S = 10.0  # a link watch probes every second and needs two misses for "down"


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    yield from running_mosquitto(tmp_path_factory.mktemp("mosquitto"), PORT)


@pytest.fixture(scope="module")
def lab(broker: Mosquitto, request: pytest.FixtureRequest):
    return request.getfixturevalue("network")


def events(watcher, kind: str, node: str, **fields) -> list[dict]:
    return [
        event
        for event in watcher.events(kind)
        if event["node"] == node and all(event.get(k) == v for k, v in fields.items())
    ]


def metric(url: str, line_start: str) -> float | None:
    with urllib.request.urlopen(url, timeout=5) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(line_start):
                return float(line.rsplit(" ", 1)[1])
    return None


async def test_a_fibre_cut_over_mqtt_is_told_by_both_ends_and_mended(lab):
    alice_metrics = lab.plan.process("alice").metrics_url
    up_metric = 'qnemu_link_up{link="alice-bob",peer="bob"}'
    async with probe(PORT, NETWORK) as watcher:
        (cut,) = await watcher.call("alice", "fault", fault="cut", remote_node_id="bob")
        assert cut["kind"] == "fault", cut
        assert "bob" in cut["processes"]["alice"]["cut_peers"]
        assert "alice" in cut["processes"]["bob"]["cut_peers"]
        station = next(name for name in cut["processes"] if name not in ("alice", "bob"))
        assert cut["processes"][station]["link_cut"] is True

        for node in ("alice", "bob"):
            down = await watcher.wait(
                lambda n=node: events(watcher, "link_down", n, link="alice-bob"), EVENT_WAIT_S
            )
            assert down[0]["reason"] == "fibre_cut"
            applied = await watcher.wait(
                lambda n=node: events(watcher, "fault_applied", n, fault="cut", process=n)
            )
            assert applied[0]["link"] == "alice-bob"
        assert await asyncio.to_thread(metric, alice_metrics, up_metric) == 0.0
        # The retained state says so too.
        await watcher.wait(
            lambda: any(
                s["links"]["bob"]["up"] is False and s["links"]["bob"]["down_reason"] == "fibre_cut"
                for s in watcher.on(f"qnemu/{NETWORK}/alice/state")
            ),
            EVENT_WAIT_S,
        )
        # Nothing crosses the cut fibre.
        failed = await watcher.call(
            "alice", "entangle", remote_node_id="bob", type="measure", max_time_s=0.5
        )
        assert failed[-1]["kind"] == "error"

        (restored,) = await watcher.call("alice", "fault", fault="restore", remote_node_id="bob")
        assert restored["processes"]["alice"]["cut_peers"] == []
        for node in ("alice", "bob"):
            await watcher.wait(
                lambda n=node: events(watcher, "link_up", n, link="alice-bob"), EVENT_WAIT_S
            )
            await watcher.wait(
                lambda n=node: events(watcher, "fault_cleared", n, fault="cut", process=n)
            )
        assert await asyncio.to_thread(metric, alice_metrics, up_metric) == 1.0
        answers = await watcher.call("alice", "entangle", remote_node_id="bob", type="measure")
        assert [a["kind"] for a in answers] == ["pair", "done"]


async def test_link_and_classical_faults_from_anywhere_become_events(lab):
    async with probe(PORT, NETWORK) as watcher:
        (eve,) = await watcher.call(
            "bob", "fault", fault="eavesdrop", remote_node_id="carol", fraction=0.5
        )
        station = next(iter(eve["processes"]))
        assert eve["processes"][station]["eavesdrop_fraction"] == 0.5
        (changed,) = await watcher.call(
            "carol", "fault", fault="set_link", remote_node_id="bob", link={"length_km": 7.5}
        )
        assert changed["processes"][station]["link_changed"] == {"length_km": 7.5}
        # Both ends of the link see the station's faults, whoever asked for them.
        for node in ("bob", "carol"):
            seen = await watcher.wait(
                lambda n=node: events(watcher, "fault_applied", n, fault="eavesdrop"),
                EVENT_WAIT_S,
            )
            assert seen[0]["process"] == station and seen[0]["parameters"] == {"fraction": 0.5}
            moved = await watcher.wait(
                lambda n=node: events(watcher, "fault_applied", n, fault="set_link"),
                EVENT_WAIT_S,
            )
            assert moved[0]["parameters"] == {"length_km": 7.5}
        (lossy,) = await watcher.call(
            "alice", "fault", fault="classical", drop_fraction=0.25, extra_delay_s=0.01
        )
        assert lossy["processes"]["alice"]["drop_fraction"] == 0.25
        classical = await watcher.wait(lambda: events(watcher, "fault_applied", "alice"))
        assert classical[0]["fault"] == "classical" and classical[0]["link"] is None

        # Malformed or impossible fault requests are refused with the reason.
        cases = [
            ({"fault": "cut"}, "bad_request", "remote_node_id"),
            ({"fault": "cut", "remote_node_id": "carol"}, "unknown_node", "carol"),
            ({"fault": "classical", "fraction": 0.1}, "bad_request", "fraction"),
            ({"fault": "melt", "remote_node_id": "bob"}, "bad_request", "fault"),
            ({"fault": "set_link", "remote_node_id": "bob", "link": {"colour": 1}}, "bad_fault",
             "colour"),
        ]  # fmt: skip
        for fields, code, named in cases:
            (answer,) = await watcher.call("alice", "fault", **fields)
            assert answer["kind"] == "error", (fields, answer)
            assert answer["error_code"] == code, (fields, answer)
            assert named in answer["message"], (fields, answer)

        for node in ("alice", "bob"):
            (cleared,) = await watcher.call(node, "fault", fault="clear")
            assert cleared["kind"] == "fault"
        for node, fault in (("bob", "eavesdrop"), ("carol", "set_link"), ("alice", "classical")):
            await watcher.wait(
                lambda n=node, f=fault: events(watcher, "fault_cleared", n, fault=f),
                EVENT_WAIT_S,
            )


async def test_an_attached_app_is_listed_and_can_be_detached(lab):
    plan = lab.plan
    names = [process.name for process in plan.processes]
    app = NodeConnection(
        plan.process("bob").endpoint,
        "bob",
        "app-bob-test",
        EmulatedClock(plan.epoch_wall_s, plan.time_scale),
        client_identity(lab.run_dir, names),
    )
    try:
        async with probe(PORT, NETWORK) as watcher:
            (idle,) = await watcher.call("bob", "app")
            assert (idle["attached"], idle["app"], idle["qubits"]) == (False, None, [])
            await app.call(AppAttachRequest("drill"))
            qubit = (await app.call(AppAllocRequest())).qubit
            waiting = asyncio.ensure_future(app.call(AppRecvRequest("alice"), timeout_s=20))
            (status,) = await watcher.call("bob", "app", action="status")
            assert (status["attached"], status["app"], status["qubits"]) == (True, "drill", [qubit])
            (detached,) = await watcher.call("bob", "app", action="detach")
            assert detached["freed"] == 1 and detached["app"] == "drill"
            # The app's waiting receive is told, and the app is no longer attached.
            with pytest.raises(AppError, match="detached"):
                await waiting
            with pytest.raises(AppError, match="no app"):
                await app.call(AppAllocRequest())
            (bad,) = await watcher.call("bob", "app", action="start")
            assert bad["error_code"] == "bad_request" and "action" in bad["message"]
    finally:
        await app.close()


async def test_the_launcher_kills_and_restarts_a_node_and_its_neighbour_sees_it(lab, broker):
    control = LauncherControl(
        lab.run_dir,
        parse_broker_url(broker.url),
        network=NETWORK,
        children=lab.launcher.processes,
        interval_s=0.2,
    )
    base = f"qnemu/{NETWORK}/launcher"
    async with probe(PORT, NETWORK) as watcher, asyncio.TaskGroup() as tasks:
        task = tasks.create_task(control.run())
        try:
            state = await watcher.wait(lambda: watcher.on(f"{base}/state"))
            assert state[0]["processes"]["carol"]["status"] == "running"
            old_pid = state[0]["processes"]["carol"]["pid"]

            # Pausing the state broker freezes every quantum operation; resuming ends it.
            (paused,) = await watcher.call("launcher", "process", action="pause", process="broker")
            assert paused["kind"] == "process", paused
            await watcher.wait(lambda: watcher.on(f"{base}/event/process_paused"))
            await watcher.call("launcher", "process", action="resume", process="broker")
            resumed = await watcher.wait(lambda: watcher.on(f"{base}/event/process_resumed"))
            assert resumed[0]["process"] == "broker" and resumed[0]["role"] == "broker"

            (killed,) = await watcher.call("launcher", "process", action="kill", process="carol")
            assert killed["kind"] == "process" and killed["pid"] == old_pid
            exited = await watcher.wait(lambda: watcher.on(f"{base}/event/process_exited"))
            assert exited[0]["process"] == "carol" and exited[0]["exit_code"] == -9
            down = await watcher.wait(
                lambda: events(watcher, "link_down", "bob", link="bob-carol"), EVENT_WAIT_S
            )
            assert down[0]["reason"] == "peer_unreachable"

            (restarted,) = await watcher.call(
                "launcher", "process", action="restart", process="carol"
            )
            assert restarted["pid"] != old_pid
            started = await watcher.wait(lambda: watcher.on(f"{base}/event/process_started"))
            assert started[0]["pid"] == restarted["pid"]
            await watcher.wait(
                lambda: events(watcher, "link_up", "bob", link="bob-carol"), 2 * EVENT_WAIT_S
            )
            (unknown,) = await watcher.call("launcher", "process", action="kill", process="zoe")
            assert unknown["error_code"] == "unknown_process" and "zoe" in unknown["message"]
        finally:
            task.cancel()
    await control.stop()


async def test_qnemu_up_puts_its_launcher_on_mqtt_until_it_stops(broker, tmp_path, process_guard):
    network = "mqtt-up"
    spec = {
        "name": network,
        "time_scale": 1.0,
        "nodes": {"a": {}, "b": {}},
        "links": [{"nodes": ["a", "b"], "model": "perfect"}],
    }
    topology = tmp_path / "network.yaml"
    topology.write_text(json.dumps(spec))  # YAML is a superset of JSON
    run_dir = tmp_path / "run"
    base = f"qnemu/{network}/launcher"
    async with probe(PORT, network) as watcher:
        up = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "qnemu", "up", str(topology), "--run-dir", str(run_dir),
            "--mqtt", broker.url, "--duration", "6",
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        try:

            def running_states() -> list[dict]:
                states = watcher.on(f"{base}/state")
                return [s for s in states if s["status"] == "running" and len(s["processes"]) == 4]

            running = await watcher.wait(running_states, 60.0)
            process_guard.watch_run(run_dir)
            assert {s["status"] for s in running[-1]["processes"].values()} == {"running"}
            stopped = await watcher.wait(
                lambda: [s for s in watcher.on(f"{base}/state") if s["status"] == "stopped"], 60.0
            )
            assert stopped
            _, stderr = await asyncio.wait_for(up.communicate(), 30.0)
            assert up.returncode == 0, stderr.decode()[-2000:]
        finally:
            if up.returncode is None:  # the launcher stops its processes on SIGTERM
                up.terminate()
                try:
                    await asyncio.wait_for(up.wait(), 15.0)
                except TimeoutError:
                    up.kill()
                    await up.wait()
    # Nodes said goodbye too: their retained states are "stopped".
    async with probe(PORT, network) as late:
        found = await late.wait(
            lambda: (
                {t.split("/")[2]: b["status"] for t, b, kept in late.messages if kept}
                if len([1 for _, _, kept in late.messages if kept]) >= 3
                else None
            )
        )
        assert found == {"a": "stopped", "b": "stopped", "launcher": "stopped"}
