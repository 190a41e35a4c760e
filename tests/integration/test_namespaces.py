"""qnemu across Linux network namespaces: every process is a host with its own address.

The broker, the stations and each node run in a namespace of their own on a private
bridge (`netns.py`), started with the containers' command `python -m qnemu <role> [NAME]
--run-dir DIR`, their plan's endpoints the namespaces' addresses. Keys are laid out as in
an exported deployment: the public keys travel in the plan, each process has its own
secrets folder and each node its own state folder, and the operator's files (client key,
CA, SAE keys) sit in the run directory for the client side. The client side runs in one
more namespace, as a subprocess: this file run as a script (`client_main`), so the test
process itself never needs an address or a route into the lab.
"""

import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import netns
import pytest
from prometheus_client.parser import text_string_to_metric_families

from qnemu.client import EntangleError, QnemuClient, RequestError
from qnemu.keys import key_store_path
from qnemu.kme.fetch import fetch_key_pairs
from qnemu.launch.credentials import Credentials, make_credentials, write_secret
from qnemu.launch.plan import ProcessPlan, RunPlan, make_plan
from qnemu.launch.rundir import STATUS_FILE, write_json
from qnemu.topology import parse_topology

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

PREFIX = netns.lab_prefix()
CLIENT = "client"  # the namespace the client side runs in
PORT = 5555  # the same in every namespace: each has its own port space
METRICS_PORT = 9100
KME_PORT = 8443
PAIRS = 20
READY_TIMEOUT_S = 20.0
CLIENT_TIMEOUT_S = 30.0  # wall guard around one client subprocess
STOP_GRACE_S = 3.0
DELAY_MS = 5.0
OUTAGE_MAX_TIME_S = 1.0
RECOVERY_TIMEOUT_S = 20.0  # TCP retransmission backoff after the outage dominates
KEYS_WAIT_S = 40.0
# alice-bob carries the client's pairs; bob-carol runs BBM92 (both declare SAEs), fast
# enough for a 32768-pair block in seconds, and apart from the pairs the tests time.
TOPOLOGY = {
    "name": "netns-pair",
    "time_scale": 1.0,
    "seed": 11,
    "defaults": {"node": {"qubits": 4, "t1_s": None, "t2_s": None}},
    "nodes": {"alice": {}, "bob": {"saes": ["bob_app"]}, "carol": {"saes": ["carol_app"]}},
    "links": [
        {"nodes": ["alice", "bob"], "model": "perfect", "t_cycle_s": 1e-3},
        {"nodes": ["bob", "carol"], "model": "perfect", "t_cycle_s": 2e-5},
    ],
}
KME_NODES = ("bob", "carol")


# ---- the client side, run inside the client namespace --------------------------------


async def ready_command(run_dir: Path, timeout_s: float) -> dict[str, Any]:
    """Ping every process until each answers ready; the pids that answered."""
    pids: dict[str, int] = {}
    deadline = time.monotonic() + timeout_s
    async with QnemuClient(run_dir) as client:
        waiting = {process.name for process in client.plan.processes}
        while waiting and time.monotonic() < deadline:
            for name in sorted(waiting):
                try:
                    reply = await client.ping(name, timeout_s=0.2)
                except (TimeoutError, RequestError):  # not listening yet
                    continue
                if reply.ready:
                    waiting.discard(name)
                    pids[name] = reply.pid
    return {"pids": pids, "waiting": sorted(waiting)}


async def entangle_command(
    run_dir: Path, src: str, dst: str, pairs: int, max_time_s: float, retry_for_s: float = 0.0
) -> dict[str, Any]:
    """Measure-mode pairs in Z; retried for `retry_for_s` while requests fail."""
    started = time.monotonic()
    attempts = 0
    async with QnemuClient(run_dir) as client:
        while True:
            attempts += 1
            delivered: list[dict[str, Any]] = []
            error = None
            try:
                async for pair in client.entangle(
                    src, dst, pairs=pairs, measure="Z", timeout_s=max_time_s
                ):
                    delivered.append({"bell_state": pair.bell_state, "outcomes": pair.outcomes})
            except EntangleError as caught:
                error = {"code": caught.code, "delivered": caught.delivered}
            except TimeoutError as caught:  # the node itself did not answer
                error = {"code": "UNREACHABLE", "message": str(caught)}
            if error is None or time.monotonic() - started > retry_for_s:
                break
    wall_s = time.monotonic() - started
    return {"pairs": delivered, "error": error, "attempts": attempts, "wall_s": wall_s}


async def ping_command(run_dir: Path, process: str, count: int, timeout_s: float) -> dict:
    """Round-trip times of `count` pings; stops at the first unanswered one."""
    rtts_s: list[float] = []
    async with QnemuClient(run_dir) as client:
        for _ in range(count):
            started = time.monotonic()
            try:
                await client.ping(process, timeout_s=timeout_s)
            except TimeoutError as caught:
                return {"rtts_s": rtts_s, "error": str(caught)}
            rtts_s.append(time.monotonic() - started)
    return {"rtts_s": rtts_s, "error": None}


async def latency_command(run_dir: Path, src: str, dst: str, repeats: int) -> dict:
    """Wall time of each of `repeats` one-pair requests, one after the other."""
    walls_s: list[float] = []
    async with QnemuClient(run_dir) as client:
        for _ in range(repeats):
            started = time.monotonic()
            async for _pair in client.entangle(src, dst, pairs=1, measure="Z", timeout_s=5.0):
                pass
            walls_s.append(time.monotonic() - started)
    return {"walls_s": walls_s}


async def keys_command(
    run_dir: Path, src: str, dst: str, number: int, wait_s: float
) -> dict[str, Any]:
    """Keys through both KMEs, with the operator's SAE certificates."""
    pairs = await fetch_key_pairs(run_dir, src, dst, bits=256, number=number, wait_s=wait_s)
    return {"pairs": [[pair.key_ID, pair.master_key, pair.slave_key] for pair in pairs]}


async def metrics_command(run_dir: Path, process: str) -> dict[str, Any]:
    url = RunPlan.read(run_dir).process(process).metrics_url
    with urllib.request.urlopen(url, timeout=5) as response:
        return {"url": url, "text": response.read().decode()}


CLIENT_COMMANDS = {
    "ready": ready_command,
    "entangle": entangle_command,
    "ping": ping_command,
    "latency": latency_command,
    "keys": keys_command,
    "metrics": metrics_command,
}


def client_main(argv: list[str]) -> int:
    """`test_namespaces.py RUN_DIR '{"command": ..., ...}'`: one JSON result on stdout."""
    run_dir, arguments = Path(argv[0]), json.loads(argv[1])
    command = CLIENT_COMMANDS[arguments.pop("command")]
    print(json.dumps(asyncio.run(command(run_dir, **arguments))))
    return 0


# ---- the test side --------------------------------------------------------------------


def missing(reason: str) -> None:
    """Skip, or fail when CI says every service the tests use must be there."""
    if os.environ.get("QNEMU_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{reason}, but QNEMU_REQUIRE_SERVICES=1")
    pytest.skip(reason)


@dataclass
class NamespacedRun:
    """A run whose every process is a host of the lab, plus the client's host."""

    run_dir: Path
    plan: RunPlan
    lab: netns.Lab
    hosts: dict[str, netns.Host]  # by process name, and CLIENT
    children: dict[str, subprocess.Popen] = field(default_factory=dict)
    answered_pids: dict[str, int] = field(default_factory=dict)

    def secrets_dir(self, name: str) -> Path:
        return self.run_dir / "secrets" / name

    def state_dir(self, name: str) -> Path:
        return self.run_dir / "state" / name

    def client(
        self, command: str, wall_timeout_s: float = CLIENT_TIMEOUT_S, **arguments: Any
    ) -> dict[str, Any]:
        """Run one client command inside the client namespace; its JSON result."""
        request = json.dumps({"command": command, **arguments})
        argv = [sys.executable, str(Path(__file__).resolve()), str(self.run_dir), request]
        done = subprocess.run(
            self.hosts[CLIENT].command(*argv),
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=wall_timeout_s,
        )
        assert done.returncode == 0, f"client {command} failed:\n{done.stderr[-2000:]}"
        return json.loads(done.stdout.strip().splitlines()[-1])

    def metric(self, process: str, sample_name: str, **labels: str) -> float:
        """One sample of a process's metrics, fetched at its namespace's address."""
        text = self.client("metrics", process=process)["text"]
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == sample_name and labels.items() <= sample.labels.items():
                    return sample.value
        return 0.0

    def log_tails(self, lines: int = 5) -> str:
        tails = []
        for name in self.children:
            log = self.run_dir / "logs" / f"{name}.log"
            tail = log.read_text(errors="replace").strip().splitlines()[-lines:]
            tails.append(f"{name}:\n  " + "\n  ".join(tail))
        return "\n".join(tails)


def start_processes(run: NamespacedRun) -> None:
    """Each process in its host's namespace, with the command a container runs."""
    for process in run.plan.processes:
        command = [sys.executable, "-m", "qnemu", process.role]
        if process.role != "broker":
            command.append(process.name)
        command += ["--run-dir", str(run.run_dir)]
        command += ["--secrets-dir", str(run.secrets_dir(process.name))]
        command += ["--state-dir", str(run.state_dir(process.name))]
        with open(run.run_dir / "logs" / f"{process.name}.log", "ab") as log:
            run.children[process.name] = subprocess.Popen(
                run.hosts[process.name].command(*command),  # ip netns exec: execs, same pid
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
    # Like the launcher's: `qnemu down --run-dir` and the session's process guard use it.
    write_json(
        run.run_dir / STATUS_FILE,
        {
            "network": run.plan.network,
            "state": "running",
            "run_dir": str(run.run_dir),
            "processes": [
                {"name": name, "role": run.plan.process(name).role, "pid": child.pid}
                for name, child in run.children.items()
            ],
        },
    )


def stop_processes(children: dict[str, subprocess.Popen]) -> None:
    """SIGTERM each child by pid, SIGKILL what is left after the grace."""
    for child in children.values():
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_S
    for child in children.values():
        try:
            child.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait(timeout=5)


def namespaced_plan(lab: netns.Lab) -> tuple[RunPlan, dict[str, netns.Host], Credentials]:
    """The topology's processes, each on a new host of the lab at fixed ports, and the
    credentials of the run, made as `qnemu export` makes them."""
    template = make_plan(parse_topology(TOPOLOGY, origin="netns test topology"))
    hosts = {process.name: lab.add_host(process.name) for process in template.processes}
    hosts[CLIENT] = lab.add_host(CLIENT)
    credentials = make_credentials(
        [process.name for process in template.processes],
        {node: node for node in KME_NODES},
        [sae for node in TOPOLOGY["nodes"].values() for sae in node.get("saes", [])],
        ip_addresses=[hosts[node].address for node in KME_NODES],
    )
    processes = [
        ProcessPlan(
            name=process.name,
            role=process.role,
            endpoint=f"tcp://{hosts[process.name].address}:{PORT}",
            metrics_host=hosts[process.name].address,
            metrics_port=METRICS_PORT,
            kme_port=KME_PORT if process.name in KME_NODES else None,
        )
        for process in template.processes
    ]
    plan = template.model_copy(
        update={
            "processes": processes,
            "epoch_wall_s": time.time(),
            "public_keys": credentials.public_keys,
        }
    )
    return RunPlan.model_validate(plan.model_dump()), hosts, credentials


def lay_out_credentials(run: "NamespacedRun", credentials: Credentials) -> None:
    """Public material in the run directory, each process's secrets in its own folder,
    the operator's files where the client side looks for them."""
    for relative, text in credentials.certificates.items():
        path = run.run_dir / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for name, files in credentials.secrets.items():
        for file_name, text in files.items():
            write_secret(run.secrets_dir(name) / file_name, text, base=run.run_dir)
        run.state_dir(name).mkdir(parents=True)
    credentials.write_operator_files(run.run_dir)


@pytest.fixture(scope="session", autouse=True)
def no_namespace_left_behind():
    """Delete namespaces with this run's prefix: before (a dead run's) and after (a bug)."""
    netns.delete_namespaces(PREFIX)
    yield
    leftovers = netns.delete_namespaces(PREFIX)
    if leftovers:
        pytest.fail(f"namespaces left behind (now deleted): {leftovers}", pytrace=False)


@pytest.fixture(scope="module")
def lab():
    reason = netns.unavailable_reason(PREFIX)
    if reason is not None:
        missing(reason)
    with netns.Lab(PREFIX) as made:
        yield made


@pytest.fixture(scope="module")
def run(lab, tmp_path_factory, process_guard):
    run_dir = tmp_path_factory.mktemp("netns").resolve()
    (run_dir / "logs").mkdir()
    plan, hosts, credentials = namespaced_plan(lab)
    plan.write(run_dir)
    launched = NamespacedRun(run_dir, plan, lab, hosts)
    lay_out_credentials(launched, credentials)
    try:
        start_processes(launched)
        process_guard.watch_run(run_dir)
        ready = launched.client("ready", timeout_s=READY_TIMEOUT_S)
        dead = {n: c.returncode for n, c in launched.children.items() if c.poll() is not None}
        assert not ready["waiting"], (
            f"not ready: {ready['waiting']} (exited: {dead})\n{launched.log_tails()}"
        )
        launched.answered_pids = ready["pids"]
        yield launched
    finally:
        stop_processes(launched.children)


def network_namespace_inode(path: str) -> int:
    return os.stat(path).st_ino


def listening(host: netns.Host) -> set[str]:
    """Local addresses of the TCP sockets listening in the host's namespace (`ss`)."""
    lines = netns.run(*host.command("ss", "-Hltn")).splitlines()
    return {line.split()[3] for line in lines if line.strip()}


def test_every_process_is_a_host_of_its_own(run):
    inodes = {}
    for name, child in run.children.items():
        inode = network_namespace_inode(f"/proc/{child.pid}/ns/net")
        assert inode == network_namespace_inode(f"/run/netns/{run.hosts[name].netns}"), name
        inodes[name] = inode
    assert len(set(inodes.values())) == len(run.children)
    assert network_namespace_inode("/proc/self/ns/net") not in inodes.values()
    # Each answered from its own address, and it is the process started there.
    assert run.answered_pids == {name: child.pid for name, child in run.children.items()}
    # Each listens on its own address only (the endpoint, metrics and a KME's port),
    # never a wildcard.
    for name, host in run.hosts.items():
        if name != CLIENT:
            ports = [PORT, METRICS_PORT] + ([KME_PORT] if name in KME_NODES else [])
            assert listening(host) == {f"{host.address}:{port}" for port in ports}, name
    metrics = run.client("metrics", process="bob")
    assert metrics["url"] == f"http://{run.hosts['bob'].address}:{METRICS_PORT}/metrics"
    assert "qnemu_process_info{" in metrics["text"] and 'name="bob"' in metrics["text"]


def test_pairs_flow_between_namespaces(run):
    result = run.client("entangle", src="alice", dst="bob", pairs=PAIRS, max_time_s=10.0)
    assert result["error"] is None
    assert len(result["pairs"]) == PAIRS
    for pair in result["pairs"]:
        assert pair["bell_state"] == "phi+"
        assert pair["outcomes"][0] == pair["outcomes"][1]  # Φ+ measured in Z on both sides
    delivered = run.metric("alice", "qnemu_pairs_delivered_total", peer="bob", type="measure")
    assert delivered >= PAIRS


def test_keys_flow_between_kmes_in_namespaces(run):
    """BBM92 between bob and carol; an SAE at each end gets the same keys from its KME."""
    result = run.client(
        "keys",
        wall_timeout_s=KEYS_WAIT_S + 15,
        src="bob",
        dst="carol",
        number=2,
        wait_s=KEYS_WAIT_S,
    )
    assert len(result["pairs"]) == 2
    for key_id, master_key, slave_key in result["pairs"]:
        assert master_key and master_key == slave_key, key_id
    stored = run.metric("carol", "qnemu_qkd_secret_key_bits_total", peer="bob")
    assert stored > 0
    # The key store lives in the node's own state folder, not in the run directory.
    assert key_store_path(run.state_dir("bob"), "bob").is_file()
    assert not key_store_path(run.run_dir, "bob").exists()


def test_health_check_proves_itself_with_the_process_own_key(run):
    """As in a container: only the process's own secret is at hand, no client key."""
    for name in ("broker", "bob"):
        command = [sys.executable, "-m", "qnemu.launch.health", name]
        command += ["--run-dir", str(run.run_dir), "--secrets-dir", str(run.secrets_dir(name))]
        done = subprocess.run(
            run.hosts[name].command(*command), capture_output=True, text=True, timeout=30
        )
        assert done.returncode == 0, done.stderr


def test_netem_delay_on_one_link_raises_wall_latency(run):
    bob = run.hosts["bob"]
    try:  # the delay check is an extra: skipped where the kernel lacks sch_netem
        run.lab.add_delay(bob, DELAY_MS)
    except netns.NetemUnavailable as error:
        pytest.skip(str(error))
    run.lab.clear_delay(bob)
    before_rtt_s = statistics.median(
        run.client("ping", process="bob", count=20, timeout_s=1.0)["rtts_s"]
    )
    before_pair_s = statistics.median(
        run.client("latency", src="alice", dst="bob", repeats=10)["walls_s"]
    )
    run.lab.add_delay(bob, DELAY_MS)
    try:
        after_rtt_s = statistics.median(
            run.client("ping", process="bob", count=20, timeout_s=1.0)["rtts_s"]
        )
        after_pair_s = statistics.median(
            run.client("latency", src="alice", dst="bob", repeats=10)["walls_s"]
        )
    finally:
        run.lab.clear_delay(bob)
    delay_s = DELAY_MS / 1000
    # Every reply from bob leaves through the delayed veth once.
    assert 0.8 * delay_s <= after_rtt_s - before_rtt_s <= delay_s + 0.02
    # A pair needs at least bob's pair report to alice, which crosses it too.
    assert after_pair_s - before_pair_s >= 0.8 * delay_s


def test_cut_link_is_a_link_fault_and_recovers(run):
    bob = run.hosts["bob"]
    timeouts_before = run.metric("alice", "qnemu_link_requests_total", peer="bob", result="TIMEOUT")
    run.lab.set_link(bob, up=False)
    try:
        unreachable = run.client("ping", process="bob", count=1, timeout_s=0.5)
        failed = run.client(
            "entangle", src="alice", dst="bob", pairs=5, max_time_s=OUTAGE_MAX_TIME_S
        )
    finally:
        run.lab.set_link(bob, up=True)
    assert unreachable["error"] is not None and unreachable["rtts_s"] == []
    assert failed["error"] == {"code": "TIMEOUT", "delivered": 0}
    timeouts = run.metric("alice", "qnemu_link_requests_total", peer="bob", result="TIMEOUT")
    assert timeouts == timeouts_before + 1
    recovered = run.client(
        "entangle",
        src="alice",
        dst="bob",
        pairs=PAIRS,
        max_time_s=2.0,
        retry_for_s=RECOVERY_TIMEOUT_S,
    )
    assert recovered["error"] is None, recovered
    assert len(recovered["pairs"]) == PAIRS
    assert all(pair["outcomes"][0] == pair["outcomes"][1] for pair in recovered["pairs"])


if __name__ == "__main__":
    sys.exit(client_main(sys.argv[1:]))
