"""Real networks for integration tests: broker, stations and nodes as separate processes.

`running_network(spec, run_dir)` launches a topology (plain dicts, as a YAML file would
hold them) with the real launcher, waits until every process answers a ping as ready,
yields a `Network`, and always stops every process by pid, even when a test fails.
A session-wide guard checks at the end that no process of any run is left behind.
"""

import asyncio
import contextlib
import os
import signal
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from qnemu.launch.launcher import Launcher, LaunchError
from qnemu.launch.plan import RunPlan
from qnemu.launch.rundir import process_alive, read_status
from qnemu.topology import Topology, parse_topology

__all__ = ["Network", "ProcessGuard", "running_network"]

READY_TIMEOUT_S = 45.0
STOP_GRACE_S = 3.0


@dataclass
class Network:
    """A launched run: its directory, plan, topology and (when launched here) its launcher."""

    run_dir: Path
    plan: RunPlan
    topology: Topology
    launcher: Launcher | None = None

    def pids(self) -> dict[str, int]:
        return {entry["name"]: entry["pid"] for entry in read_status(self.run_dir)["processes"]}


class ProcessGuard:
    """Remembers every process a test started, so none can outlive the session."""

    def __init__(self) -> None:
        self.watched: dict[int, Path] = {}

    def watch_run(self, run_dir: Path) -> dict[str, int]:
        """Watch every pid in a run's status.json; returns them by process name."""
        run_dir = Path(run_dir).resolve()
        pids = {entry["name"]: entry["pid"] for entry in read_status(run_dir)["processes"]}
        for pid in pids.values():
            self.watched[pid] = run_dir
        return pids

    def alive(self) -> dict[int, Path]:
        return {pid: d for pid, d in self.watched.items() if process_alive(pid, d)}

    def kill_leftovers(self) -> dict[int, Path]:
        leftovers = self.alive()
        for pid in leftovers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return leftovers


GUARD = ProcessGuard()


def make_topology(spec: dict[str, Any]) -> Topology:
    return parse_topology(spec, origin="test topology")


def port_clash(error: Exception) -> bool:
    """A start-up failure because a port chosen free was taken before the process bound it."""
    return "Address already in use" in str(error)


def stop_launcher(launcher: Launcher) -> None:
    try:
        launcher.stop(grace_s=STOP_GRACE_S)
    finally:
        for child in launcher.processes.values():  # stop() failed half-way: no mercy
            if child.poll() is None:
                child.kill()
                child.wait(timeout=5)


def start_ready(topology: Topology, run_dir: Path, attempts: int = 3) -> Launcher:
    """A started and ready launcher; on failure every process it started is stopped.

    Ports are chosen free when the plan is made and bound later, so another program (or an
    outgoing connection) may take one in between; such a start is retried with a fresh
    plan, with a warning.
    """
    for attempt in range(1, attempts + 1):
        directory = run_dir if attempt == 1 else run_dir.with_name(f"{run_dir.name}-{attempt}")
        directory.mkdir(parents=True, exist_ok=True)
        launcher = Launcher(topology, directory)
        try:
            launcher.start()
            GUARD.watch_run(launcher.run_dir)
            asyncio.run(launcher.wait_ready(timeout_s=READY_TIMEOUT_S))
            return launcher
        except LaunchError as error:
            stop_launcher(launcher)
            if not port_clash(error) or attempt == attempts:
                raise
            warnings.warn(f"port clash while starting, retrying: {error}", stacklevel=2)
        except BaseException:
            stop_launcher(launcher)
            raise
    raise AssertionError("unreachable")


@contextlib.contextmanager
def running_network(spec: dict[str, Any], run_dir: Path) -> Iterator[Network]:
    """Launch `spec` in `run_dir`, wait until ready, yield it; always stop every process."""
    topology = make_topology(spec)
    launcher = start_ready(topology, run_dir)
    try:
        yield Network(launcher.run_dir, launcher.plan, topology, launcher)
    finally:
        stop_launcher(launcher)


@pytest.fixture(scope="session", autouse=True)
def no_process_left_behind() -> Iterator[ProcessGuard]:
    """Fail the session if any process a test started is still running at the end."""
    yield GUARD
    leftovers = GUARD.kill_leftovers()
    if leftovers:
        pytest.fail(f"processes left behind (now killed): {sorted(leftovers)}", pytrace=False)


@pytest.fixture(scope="session")
def process_guard(no_process_left_behind: ProcessGuard) -> ProcessGuard:
    return no_process_left_behind


@pytest.fixture(scope="module")
def network(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """The network of the test module's TOPOLOGY, shared by the module's tests."""
    spec = request.module.TOPOLOGY
    with running_network(spec, tmp_path_factory.mktemp(spec["name"])) as launched:
        yield launched


@pytest.fixture
def network_factory(tmp_path: Path) -> Iterator:
    """Launch networks inside one test: `network_factory(spec)`; all stopped at teardown."""
    with contextlib.ExitStack() as stack:

        def launch(spec: dict[str, Any], name: str = "run") -> Network:
            return stack.enter_context(running_network(spec, tmp_path / name))

        yield launch


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.path).parents:
            item.add_marker(pytest.mark.integration)
