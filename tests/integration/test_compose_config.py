"""Generated Compose/Swarm files pass Docker's own validators; the health check works.

`docker-compose config -q` (Debian package `docker-compose`) or `docker compose config
-q` (the v2 plugin) validates a Compose file without an engine, and `docker stack
config` checks a Swarm file against the Swarm schema, also without one. The health
check the files run is tried against a real running network.
"""

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from qnemu.launch import health
from qnemu.launch.export import export_compose
from qnemu.launch.plan import RunPlan
from qnemu.topology import load_topology, shipped_topologies

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

TOPOLOGIES = sorted(shipped_topologies().values())
VALIDATE_TIMEOUT_S = 60
PAIR = {
    "name": "health-pair",
    "time_scale": 1.0,
    "seed": 3,
    "nodes": {"alice": {"qubits": 4}, "bob": {"qubits": 4}},
    "links": [{"nodes": ["alice", "bob"], "model": "perfect", "t_cycle_s": 1e-3}],
}


def missing(reason: str) -> None:
    """Skip, or fail when CI says every service the tests use must be there."""
    if os.environ.get("QNEMU_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{reason}, but QNEMU_REQUIRE_SERVICES=1")
    pytest.skip(reason)


def works(command: list[str]) -> bool:
    try:
        return subprocess.run(command, capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.fixture(scope="module")
def compose_command() -> list[str]:
    """The Compose CLI that validates here: docker-compose (v1) or docker compose (v2)."""
    if shutil.which("docker-compose") and works(["docker-compose", "version"]):
        return ["docker-compose"]
    if shutil.which("docker") and works(["docker", "compose", "version"]):
        return ["docker", "compose"]
    missing("no Compose CLI (Debian: apt-get install docker-compose)")
    raise AssertionError("unreachable")


def validate(command: list[str], cwd: Path) -> subprocess.CompletedProcess:
    # No engine is needed; an unset DOCKER_HOST keeps the CLI off any daemon it might find.
    env = {k: v for k, v in os.environ.items() if k != "DOCKER_HOST"}
    return subprocess.run(
        command, cwd=cwd, capture_output=True, text=True, timeout=VALIDATE_TIMEOUT_S, env=env
    )


def test_there_are_shipped_topologies_to_export():
    assert len(TOPOLOGIES) >= 3, TOPOLOGIES


@pytest.mark.parametrize("swarm", [False, True], ids=["compose", "swarm"])
@pytest.mark.parametrize("path", TOPOLOGIES, ids=lambda p: p.stem)
def test_compose_config_accepts_the_file(path, swarm, compose_command, tmp_path):
    output = export_compose(load_topology(path), tmp_path / "compose.yaml", swarm=swarm,
                            mosquitto=not swarm)  # fmt: skip
    result = validate([*compose_command, "-f", output.name, "config", "-q"], tmp_path)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("path", TOPOLOGIES, ids=lambda p: p.stem)
def test_docker_stack_config_accepts_the_swarm_file(path, tmp_path):
    if not (shutil.which("docker") and works(["docker", "stack", "config", "--help"])):
        # A bonus check: the required validator is the Compose CLI above.
        pytest.skip("no `docker stack config` (the docker CLI, 20.10 or later)")
    output = export_compose(load_topology(path), tmp_path / "stack.yaml", swarm=True)
    result = validate(["docker", "stack", "config", "-c", output.name], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "run-json" in result.stdout


def test_health_check_passes_for_running_processes(network_factory):
    network = network_factory(PAIR)
    for process in network.plan.processes:
        code = health.main([process.name, "--run-dir", str(network.run_dir)])
        assert code == 0, process.name
        assert health.main([process.name, "--run-dir", str(network.run_dir), "--live"]) == 0


def test_health_check_fails_fast_when_nothing_answers(tmp_path):
    plan = RunPlan.model_validate(
        {
            "network": "nobody",
            "epoch_wall_s": time.time(),
            "time_scale": 1.0,
            "seed": None,
            "topology": {},
            "processes": [
                # Port 1 on loopback: nothing listens there for an unprivileged test.
                {
                    "name": "broker",
                    "role": "broker",
                    "endpoint": "tcp://127.0.0.1:1",
                    "metrics_host": "127.0.0.1",
                    "metrics_port": 2,
                },
            ],
        }
    )
    plan.write(tmp_path)
    started = time.monotonic()
    assert health.main(["broker", "--run-dir", str(tmp_path), "--timeout", "0.3"]) == 1
    assert time.monotonic() - started < 5.0
    assert health.main(["ghost", "--run-dir", str(tmp_path)]) == 1
    assert health.main(["broker", "--run-dir", str(tmp_path / "absent")]) == 1
