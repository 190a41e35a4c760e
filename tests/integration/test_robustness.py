"""Bad input, dead peers and signals: every process stays up, or goes down cleanly."""

import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter

import msgpack
import pytest
import zmq
import zmq.asyncio
from prometheus_client.parser import text_string_to_metric_families

from qnemu.client import EntangleError, QnemuClient
from qnemu.launch.plan import make_plan
from qnemu.runtime.curve import apply_client, client_identity
from qnemu.topology import build_topology
from qnemu.wire import MAX_MESSAGE_BYTES, PROTOCOL_VERSION, decode, encode
from qnemu.wire.common import ErrorReply, PingReply, PingRequest
from qnemu.wire.link import Herald

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

REJECTED = "qnemu_wire_rejected_messages_total"

TOPOLOGY = {
    "name": "integration-robustness",
    "time_scale": 1.0,
    "seed": 3,
    "defaults": {"node": {"qubits": 4, "t1_s": None, "t2_s": None}},
    "nodes": {"alice": {}, "bob": {}},
    "links": [{"nodes": ["alice", "bob"], "model": "perfect", "t_cycle_s": 0.05}],
}
STATION = "station-alice-bob"


def rejected_counts(metrics_url: str) -> Counter:
    """qnemu_wire_rejected_messages_total by reason, scraped from a process."""
    with urllib.request.urlopen(metrics_url, timeout=5) as response:
        text = response.read().decode()
    counts: Counter = Counter()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == REJECTED:
                counts[sample.labels["reason"]] += int(sample.value)
    return counts


def envelope(msg_type: str, body: dict, *, sender: str, **header) -> bytes:
    fields = {
        "msg_id": f"garbage-{random.random()}",
        "msg_type": msg_type,
        "sender": sender,
        "sent_at": 0.0,
        "version": PROTOCOL_VERSION,
    }
    raw = {"header": fields | header, "parent_id": None, "body": body}
    return msgpack.packb(raw, use_bin_type=True)


def garbage_for(process: str, identity: str, rng: random.Random) -> list[tuple[list[bytes], str]]:
    """(frames, reason it must be rejected for) for one process, sent from `identity`."""
    ping = encode(PingRequest(), sender=identity, sent_at=0.0)
    unhandled = Herald("alice", 1, []) if process == "broker" else PingRequest()
    cases = [([rng.randbytes(rng.randint(1, 300))], "malformed") for _ in range(5)]
    cases += [
        ([ping[:-4]], "malformed"),  # truncated msgpack
        ([b""], "malformed"),
        # two frames where one is expected: refused and answered
        ([ping, ping], "malformed"),
        ([msgpack.packb([1, 2, 3])], "malformed"),
        ([envelope("teleport_request", {}, sender=identity)], "unknown_type"),
        ([envelope("ping_request", {}, sender=identity, version=99)], "bad_version"),
        ([envelope("ping_request", {"admin": True}, sender=identity)], "bad_body"),
        ([envelope("ops_request", {"ops": "all"}, sender=identity)], "bad_body"),
        ([encode(PingRequest(), sender=process, sent_at=0.0)], "sender_mismatch"),
        ([encode(PingRequest(), sender="broker", sent_at=0.0)], "sender_mismatch"),
        ([b"\x00" * (MAX_MESSAGE_BYTES + 1)], "oversized"),
    ]
    if process == "broker":
        cases.append(([encode(unhandled, sender=identity, sent_at=0.0)], "unsupported"))
    return cases


def client_dealer(context, network, process: str, identity: str):
    """A DEALER with the run's client key (an authenticated client that sends garbage)."""
    dealer = context.socket(zmq.DEALER)
    dealer.setsockopt(zmq.IDENTITY, identity.encode())
    dealer.setsockopt(zmq.LINGER, 0)
    names = [p.name for p in network.plan.processes]
    apply_client(dealer, client_identity(network.run_dir, names), process)
    dealer.connect(network.plan.process(process).endpoint)
    return dealer


async def send_garbage(network, process: str, seed: int) -> tuple[Counter, Counter]:
    """Send every kind of garbage; returns (reasons sent, error codes answered)."""
    rng = random.Random(seed)
    identity = f"fuzzer-{seed}"
    context = zmq.asyncio.Context()
    dealer = client_dealer(context, network, process, identity)
    sent: Counter = Counter()
    answered: Counter = Counter()
    try:
        for frames, reason in garbage_for(process, identity, rng):
            await dealer.send_multipart(frames)
            sent[reason] += 1
        # A ping due at emulated +inf is never answered, but must not block what follows.
        await dealer.send(encode(PingRequest(), sender=identity, sent_at=float("inf")))
        deadline = time.monotonic() + 10.0
        while sum(answered.values()) < sum(sent.values()) and time.monotonic() < deadline:
            if await dealer.poll(timeout=100):
                reply = decode(await dealer.recv()).body
                assert isinstance(reply, ErrorReply)
                answered[reply.code] += 1
    finally:
        dealer.close(linger=0)
        context.term()
    return sent, answered


def raw_tcp_garbage(endpoint: str, rng: random.Random) -> None:
    """Bytes that are not even ZMTP, straight onto the TCP port."""
    host, port = endpoint.removeprefix("tcp://").rsplit(":", 1)
    for size in (1, 10, 64, 4096):
        with socket.create_connection((host, int(port)), timeout=2) as raw:
            raw.sendall(rng.randbytes(size))


async def test_garbage_to_every_socket_leaves_every_process_alive_and_counted(network):
    plan = network.plan
    before = {p.name: rejected_counts(p.metrics_url) for p in plan.processes}
    rng = random.Random(5)
    for index, process in enumerate(plan.processes):
        raw_tcp_garbage(process.endpoint, rng)
        sent, answered = await send_garbage(network, process.name, seed=100 + index)
        # The sender hears back about everything it sent, with the reason as the code.
        assert answered == sent, process.name
    await asyncio.sleep(0.2)
    async with QnemuClient(network.run_dir) as client:
        for process in plan.processes:
            reply = await client.ping(process.name, timeout_s=3.0)
            assert reply.ready and reply.pid == network.pids()[process.name]
        for name, child in network.launcher.processes.items():
            assert child.poll() is None, f"{name} died"
        # And the network still works end to end.
        pairs = [p async for p in client.entangle("alice", "bob", pairs=2, measure="Z")]
        assert [p.outcomes[0] == p.outcomes[1] for p in pairs] == [True, True]
    for process in plan.processes:
        after = rejected_counts(process.metrics_url)
        expected = Counter(reason for _, reason in garbage_for(process.name, "x", random.Random()))
        for reason, count in expected.items():
            assert after[reason] - before[process.name][reason] >= count, (process.name, reason)


def status_json(run_dir) -> dict:
    result = subprocess.run(
        [sys.executable, "-m", "qnemu", "status", "--json", "--run-dir", str(run_dir)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


async def entangle_error(run_dir, src: str, dst: str, **options) -> EntangleError:
    async with QnemuClient(run_dir) as client:
        with pytest.raises(EntangleError) as caught:
            async for _ in client.entangle(src, dst, **options):
                pass
    return caught.value


@pytest.mark.parametrize("victim", ["bob", STATION, "broker"])
def test_a_killed_process_is_reported_down_and_does_not_hang_stop(network_factory, victim):
    launched = network_factory(TOPOLOGY)
    launcher = launched.launcher
    os.kill(launched.pids()[victim], signal.SIGKILL)
    launcher.processes[victim].wait(timeout=5)
    status = status_json(launched.run_dir)
    up = {entry["name"]: entry["up"] for entry in status["processes"]}
    assert up == {name: name != victim for name in up}
    if victim == "bob":  # the peer never answers: the request times out, nothing hangs
        error = asyncio.run(entangle_error(launched.run_dir, "alice", "bob", timeout_s=0.3))
        assert error.code == "TIMEOUT" and error.delivered == 0
    started = time.monotonic()
    codes = launcher.stop(grace_s=5.0)
    assert time.monotonic() - started < 5.0  # within the grace: nobody needed SIGKILL
    assert codes[victim] == -signal.SIGKILL
    assert all(code == 0 for name, code in codes.items() if name != victim), codes
    assert all(child.poll() is not None for child in launcher.processes.values())


def test_a_request_ended_while_its_pairs_are_created_leaves_the_station_alive(network_factory):
    launched = network_factory(TOPOLOGY)
    broker = launched.pids()["broker"]
    # Freeze the broker so the station's first batch waits there; the request then times
    # out at alice, who cancels it at the station while the batch is still in flight.
    os.kill(broker, signal.SIGSTOP)
    try:
        options = {"pairs": 5, "measure": "Z", "timeout_s": 0.3}
        error = asyncio.run(entangle_error(launched.run_dir, "alice", "bob", **options))
        assert error.code == "TIMEOUT"
    finally:
        os.kill(broker, signal.SIGCONT)
    try:  # the broker answers the batch; the station must carry on
        code = launched.launcher.processes[STATION].wait(timeout=1.5)
    except subprocess.TimeoutExpired:
        code = None
    assert code is None, f"the station exited with code {code}"

    async def still_serving() -> int:
        async with QnemuClient(launched.run_dir) as client:
            assert (await client.ping(STATION, timeout_s=2.0)).ready
            return len([p async for p in client.entangle("alice", "bob", pairs=2, measure="Z")])

    assert asyncio.run(still_serving()) == 2


async def test_a_multi_frame_message_is_answered_with_an_error(network):
    context = zmq.asyncio.Context()
    dealer = client_dealer(context, network, "broker", "two-frames")
    try:
        ping = encode(PingRequest(), sender="two-frames", sent_at=0.0)
        await dealer.send_multipart([ping, ping])
        assert await dealer.poll(timeout=1000), "no reply"
        reply = decode(await dealer.recv()).body
        assert isinstance(reply, ErrorReply) and reply.code == "malformed"
    finally:
        dealer.close(linger=0)
        context.term()


async def test_a_client_without_the_runs_curve_key_is_refused(network):
    """CurveZMQ: a stranger's key (or plain text) gets nothing through; the run's key does."""
    context = zmq.asyncio.Context()
    stranger_public, stranger_secret = zmq.curve_keypair()
    names = [p.name for p in network.plan.processes]
    valid = client_identity(network.run_dir, names)
    try:
        for process in network.plan.processes:
            attempts = {
                "plain text": context.socket(zmq.DEALER),
                "unknown key": context.socket(zmq.DEALER),
            }
            attempts["unknown key"].curve_secretkey = stranger_secret
            attempts["unknown key"].curve_publickey = stranger_public
            attempts["unknown key"].curve_serverkey = valid.servers[process.name]
            for label, dealer in attempts.items():
                dealer.setsockopt(zmq.LINGER, 0)
                dealer.connect(process.endpoint)
                await dealer.send(encode(PingRequest(), sender="stranger", sent_at=0.0))
                assert not await dealer.poll(timeout=300), f"{process.name} answered {label}"
                dealer.close(linger=0)
            accepted = client_dealer(context, network, process.name, "friend")
            await accepted.send(encode(PingRequest(), sender="friend", sent_at=0.0))
            assert await accepted.poll(timeout=3000), f"{process.name} refused the run's key"
            assert isinstance(decode(await accepted.recv()).body, PingReply)
            accepted.close(linger=0)
    finally:
        context.term()
    refused = rejected_counts(network.plan.process("broker").metrics_url)
    assert refused.get("curve_key_refused", 0) >= 1


def test_a_plan_never_gives_two_sockets_the_same_port():
    # Regression: free_port() probes used to close one by one, so the OS could hand the
    # same port out twice in one plan (about 10% of 32-process plans).
    topology = build_topology("line,16")
    for _ in range(500):
        plan = make_plan(topology)
        ports = [int(p.endpoint.rsplit(":", 1)[1]) for p in plan.processes]
        ports += [p.metrics_port for p in plan.processes]
        assert len(set(ports)) == len(ports), sorted(ports)
