"""The `qnemu` command as a user runs it: separate processes, exit codes, JSON output."""

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from qnemu.launch.rundir import process_alive

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

TOPOLOGY = {
    "name": "integration-cli",
    "time_scale": 1.0,
    "seed": 5,
    "defaults": {"node": {"qubits": 4, "t1_s": None, "t2_s": None}},
    "nodes": {"a": {}, "b": {}, "c": {}},
    "links": [
        {"nodes": ["a", "b"], "model": "perfect"},
        {"nodes": ["b", "c"], "model": "depolarise", "fidelity": 0.9, "prob_success": 1.0},
    ],
}
PAIR_KEYS = {"src", "dst", "bell_state", "fidelity", "created_at", "delivered_at", "attempts"}
START_ATTEMPTS = 3  # a port chosen free may be taken before a process binds it: retry


def qnemu(*args: str, cwd: Path, timeout_s: float = 60.0) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key != "QNEMU_RUN_DIR"}
    return subprocess.run(
        [sys.executable, "-m", "qnemu", *args],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )


def qnemu_many(
    commands: dict[str, tuple[str, ...]], *, cwd: Path, timeout_s: float = 60.0
) -> dict[str, subprocess.CompletedProcess]:
    """Several `qnemu` commands at once (they are independent), by name."""
    env = {key: value for key, value in os.environ.items() if key != "QNEMU_RUN_DIR"}
    running = {
        name: subprocess.Popen(
            [sys.executable, "-m", "qnemu", *args],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, args in commands.items()
    }
    results = {}
    try:
        for name, process in running.items():
            stdout, stderr = process.communicate(timeout=timeout_s)
            results[name] = subprocess.CompletedProcess(
                process.args, process.returncode, stdout, stderr
            )
    finally:
        for process in running.values():
            if process.poll() is None:
                process.kill()
                process.wait()
    return results


def up(topology_file: Path, run_dir: Path, *options: str, timeout_s: float = 60.0):
    """`qnemu up`, retried in a fresh run dir when a planned port was taken meanwhile."""
    for attempt in range(1, START_ATTEMPTS + 1):
        directory = run_dir.with_name(f"{run_dir.name}-{attempt}")
        args = ("up", str(topology_file), "--run-dir", str(directory), *options)
        result = qnemu(*args, cwd=run_dir.parent, timeout_s=timeout_s)
        if "Address already in use" not in result.stderr or attempt == START_ATTEMPTS:
            return directory, result


def pids_of(run_dir: Path) -> dict[str, int]:
    status = json.loads((run_dir / "status.json").read_text())
    return {entry["name"]: entry["pid"] for entry in status["processes"]}


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("cli")
    (directory / "network.yaml").write_text(yaml.safe_dump(TOPOLOGY, sort_keys=False))
    return directory


@pytest.fixture(scope="module")
def run_dir(workdir: Path, process_guard) -> Path:
    """A network started with `qnemu up --detach`; `qnemu down` (or SIGKILL) at the end."""
    directory, result = up(workdir / "network.yaml", workdir / "run", "--detach")
    if (directory / "status.json").exists():
        process_guard.watch_run(directory)
    try:
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == str(directory.resolve())
        yield directory
    finally:
        qnemu("down", "--run-dir", str(directory), cwd=workdir)
        process_guard.kill_leftovers()


def test_up_detach_writes_a_running_status(run_dir: Path):
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "running" and status["network"] == "integration-cli"
    assert (run_dir / "run.json").is_file()
    names = {entry["name"] for entry in status["processes"]}
    assert names == {"broker", "station-a-b", "station-b-c", "a", "b", "c"}
    for name, pid in pids_of(run_dir).items():
        assert process_alive(pid, run_dir.resolve()), name
        assert (run_dir / "logs" / f"{name}.log").is_file()


def test_status_json_lists_every_process_up(run_dir: Path, workdir: Path):
    result = qnemu("status", "--json", "--run-dir", str(run_dir), cwd=workdir)
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    assert status["network"] == "integration-cli"
    pids = pids_of(run_dir)
    roles = {"broker": "broker", "station-a-b": "station", "station-b-c": "station"}
    assert len(status["processes"]) == 6
    for entry in status["processes"]:
        assert {"name", "role", "pid", "endpoint", "metrics_url", "up"} <= set(entry)
        assert entry["role"] == roles.get(entry["name"], "node")
        assert entry["pid"] == pids[entry["name"]]
        assert entry["endpoint"].startswith("tcp://127.0.0.1:")
        assert entry["metrics_url"].startswith("http://127.0.0.1:")
        assert entry["up"] is True
    table = qnemu("status", "--run-dir", str(run_dir), cwd=workdir)
    assert table.returncode == 0 and "station-a-b" in table.stdout


def test_entangle_json_keep_prints_one_object_per_pair(run_dir: Path, workdir: Path):
    args = ("entangle", "a", "b", "--pairs", "3", "--json", "--run-dir", str(run_dir))
    result = qnemu(*args, cwd=workdir)
    assert result.returncode == 0, result.stderr
    pairs = json_lines(result.stdout)
    assert len(pairs) == 3
    for pair in pairs:
        assert set(pair) >= PAIR_KEYS
        assert (pair["src"], pair["dst"], pair["bell_state"]) == ("a", "b", "phi+")
        assert pair["fidelity"] == pytest.approx(1.0, abs=1e-9)
        assert pair["created_at"] <= pair["delivered_at"] and pair["attempts"] == 1
    # Kept pairs are freed once reported (no --hold): the memories are empty again.
    status = json.loads(qnemu("status", "--json", "--run-dir", str(run_dir), cwd=workdir).stdout)
    for entry in status["processes"]:
        if entry["role"] == "node":
            assert entry["stats"]["memory"]["in_use"] == 0, entry["name"]


def test_entangle_json_measure_prints_outcomes_and_bases(run_dir: Path, workdir: Path):
    args = ("entangle", "b", "c", "--pairs", "20", "--measure", "Z", "--json")
    result = qnemu(*args, "--run-dir", str(run_dir), cwd=workdir)
    assert result.returncode == 0, result.stderr
    pairs = json_lines(result.stdout)
    assert len(pairs) == 20
    for pair in pairs:
        assert PAIR_KEYS | {"outcomes", "bases"} <= set(pair)
        assert pair["bases"] == ["Z", "Z"] and set(pair["outcomes"]) <= {0, 1}
        assert pair["fidelity"] == pytest.approx(0.9, abs=1e-9)


def test_entangle_without_json_prints_one_line_per_pair(run_dir: Path, workdir: Path):
    args = ("entangle", "a", "b", "--pairs", "2", "--measure", "X", "--run-dir", str(run_dir))
    result = qnemu(*args, cwd=workdir)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 2 and all(line.startswith("pair ") and "phi+" in line for line in lines)


ENTANGLE_ERRORS = {
    "unknown dst": (("entangle", "a", "nowhere"), "unknown node 'nowhere'"),
    "unknown src": (("entangle", "nowhere", "a"), "unknown node 'nowhere'"),
    "path too noisy": (
        ("entangle", "a", "c", "--minimum-fidelity", "0.95", "--purify", "none"),
        "best path a-b-c",
    ),
    "no such protocol": (("entangle", "a", "c", "--purify", "pumping"), "invalid choice"),
    "notime": (("entangle", "b", "c", "--minimum-fidelity", "0.9999"), "ERR NOTIME"),
    "zero pairs": (("entangle", "a", "b", "--pairs", "0"), "--pairs must be >= 1"),
}


def test_entangle_errors_exit_non_zero_with_a_message(run_dir: Path, workdir: Path):
    commands = {
        name: (*args, "--run-dir", str(run_dir)) for name, (args, _) in ENTANGLE_ERRORS.items()
    }
    for name, result in qnemu_many(commands, cwd=workdir).items():
        assert result.returncode != 0, name
        assert ENTANGLE_ERRORS[name][1] in " ".join(result.stderr.split()), (name, result.stderr)
        assert "Traceback" not in result.stderr, name
        assert result.stdout == "", name


def test_commands_without_a_running_network_exit_non_zero(tmp_path: Path):
    empty = tmp_path / "empty"
    empty.mkdir()
    commands = {  # an empty run dir given, or none given and no ./qnemu-runs at all
        "status": ("status", "--json", "--run-dir", str(empty)),
        "entangle": ("entangle", "a", "b"),
        "down": ("down", "--run-dir", str(empty)),
    }
    for name, result in qnemu_many(commands, cwd=empty).items():
        assert result.returncode != 0, name
        assert "no running network" in " ".join(result.stderr.split()), (name, result.stderr)
        assert "Traceback" not in result.stderr, name


def test_up_refuses_a_run_dir_that_is_running(run_dir: Path, workdir: Path):
    args = ("up", str(workdir / "network.yaml"), "--run-dir", str(run_dir), "--detach")
    result = qnemu(*args, cwd=workdir)
    assert result.returncode != 0
    assert "already holds a running network" in " ".join(result.stderr.split())


def test_validate_accepts_a_good_file_and_names_the_problem_in_a_bad_one(tmp_path, workdir):
    bad_topology = {
        "name": "two-node-metro",
        "time_scale": 1.0,
        "nodes": {"delft": {}, "hague": {}},
        "links": [{"nodes": ["delft", "hauge"], "model": "perfect"}],
    }
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(bad_topology))
    (tmp_path / "broken.yaml").write_text("name: [unclosed\n")
    results = qnemu_many(
        {
            "good": ("validate", str(workdir / "network.yaml")),
            "bad": ("validate", str(bad)),
            "broken": ("validate", str(tmp_path / "broken.yaml")),
            "missing": ("validate", str(tmp_path / "missing.yaml")),
            "up bad": ("up", str(bad), "--run-dir", str(tmp_path / "never")),
        },
        cwd=tmp_path,
    )
    assert results["good"].returncode == 0 and "ok" in results["good"].stdout
    assert results["bad"].returncode == 1
    problem = "links[0].nodes[1]: unknown node 'hauge' (known: delft, hague)"
    assert problem in results["bad"].stderr
    for name in ("broken", "missing"):
        assert results[name].returncode == 1 and results[name].stderr.strip(), name
    assert "YAML syntax error" in results["broken"].stderr
    assert results["up bad"].returncode != 0 and "unknown node 'hauge'" in results["up bad"].stderr
    assert not (tmp_path / "never" / "status.json").exists()  # nothing was started
    assert all("Traceback" not in result.stderr for result in results.values())


def test_every_process_serves_qnemu_metrics(run_dir: Path):
    status = json.loads((run_dir / "status.json").read_text())
    plan = json.loads((run_dir / "run.json").read_text())
    urls = {
        p["name"]: f"http://{p['metrics_host']}:{p['metrics_port']}/metrics"
        for p in plan["processes"]
    }
    assert urls == {entry["name"]: entry["metrics_url"] for entry in status["processes"]}
    per_role = {
        "broker": ["qnemu_broker_operations_total", "qnemu_broker_state_groups"],
        "station": ["qnemu_link_attempts_total", "qnemu_link_pairs_generated_total"],
        "node": ["qnemu_memory_qubits_in_use", "qnemu_pair_fidelity"],
    }
    for entry in status["processes"]:
        with urllib.request.urlopen(entry["metrics_url"], timeout=5) as response:
            assert response.status == 200
            text = response.read().decode()
        info = [
            sample.labels
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == "qnemu_process_info"
        ]
        identity = {"network": "integration-cli", "name": entry["name"], "role": entry["role"]}
        assert info == [identity]
        assert "# TYPE qnemu_wire_rejected_messages_total counter" in text
        assert "qnemu_message_lateness_seconds_bucket" in text
        for metric in per_role[entry["role"]]:
            assert metric in text, (entry["name"], metric)


def test_down_stops_every_process(run_dir: Path, workdir: Path):
    pids = pids_of(run_dir)
    result = qnemu("down", "--run-dir", str(run_dir), cwd=workdir)
    assert result.returncode == 0, result.stderr
    assert all(not process_alive(pid, run_dir.resolve()) for pid in pids.values())
    assert json.loads((run_dir / "status.json").read_text())["state"] == "stopped"


def test_up_with_a_duration_exits_by_itself_and_leaves_nothing(workdir: Path, process_guard):
    directory, result = up(workdir / "network.yaml", workdir / "timed", "--duration", "3")
    if (directory / "status.json").exists():
        process_guard.watch_run(directory)
    assert result.returncode == 0, result.stderr
    assert "summary" in result.stderr + result.stdout
    summary = json.loads((directory / "summary.json").read_text())
    assert summary["duration_s"] >= 3.0 and set(summary["links"]) == {"a-b", "b-c"}
    assert json.loads((directory / "status.json").read_text())["state"] == "stopped"
    assert not [pid for pid in pids_of(directory).values() if process_alive(pid, directory)]
