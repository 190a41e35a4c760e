"""MQTT test helpers: a real Mosquitto started and stopped by pid, and a probe client.

Shared by the MQTT integration test modules (imported by name: tests/integration is on
sys.path, as for `netns`).
"""

import asyncio
import contextlib
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

try:
    import aiomqtt
except ImportError:
    aiomqtt = None

ANSWER_TIMEOUT_S = 15.0
_ids = itertools.count(1)


def require(condition: bool, reason: str) -> None:
    """Skip when a service is missing; fail instead when CI said it must be there."""
    if condition:
        return
    if os.environ.get("QNEMU_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{reason}, but QNEMU_REQUIRE_SERVICES=1")
    pytest.skip(reason)


def find_mosquitto() -> str | None:
    return shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/sbin")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Mosquitto:
    """One mosquitto process on a fixed local port; can be killed and started again."""

    def __init__(self, binary: str, directory: Path, port: int):
        self.binary = binary
        self.port = port
        self.config = directory / "mosquitto.conf"
        self.log = directory / "mosquitto.log"
        self.config.write_text(
            f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
            "log_dest stderr\nlog_type error\nlog_type warning\nlog_type notice\n"
        )
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 10.0) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [self.binary, "-c", str(self.config)], stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {self.log.read_text()[-2000:]}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port)):
                return
            time.sleep(0.05)
        raise RuntimeError(f"mosquitto not listening on {self.port} after {timeout_s} s")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(sig)
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def running_mosquitto(directory: Path, port: int) -> Iterator[Mosquitto]:
    """A module fixture's body: a mosquitto on `port` (skipped, or failed under
    QNEMU_REQUIRE_SERVICES, when it or aiomqtt is missing), stopped by pid at the end."""
    require(aiomqtt is not None, "aiomqtt not installed (pip install 'aiomqtt>=2.0')")
    binary = find_mosquitto()
    require(binary is not None, "mosquitto not installed (Debian package `mosquitto`)")
    mosquitto = Mosquitto(binary, directory, port)
    mosquitto.start()
    try:
        yield mosquitto
    finally:
        mosquitto.stop()
        assert mosquitto.process is None


class Probe:
    """A test's MQTT client: records every message of the network, waits for answers."""

    def __init__(self, client: "aiomqtt.Client", network: str):
        self.client = client
        self.network = network
        self.messages: list[tuple[str, Any, bool]] = []  # (topic, JSON body, retained)
        self._arrived = asyncio.Event()

    async def _read(self) -> None:
        async for message in self.client.messages:
            try:
                body = json.loads(message.payload) if message.payload else None
            except ValueError:
                body = message.payload
            self.messages.append((message.topic.value, body, message.retain))
            self._arrived.set()

    async def wait(self, found, timeout_s: float = ANSWER_TIMEOUT_S):
        """Wait until `found()` returns something truthy; return it."""
        async with asyncio.timeout(timeout_s):
            while not (result := found()):
                self._arrived.clear()
                await self._arrived.wait()
        return result

    def on(self, topic: str) -> list[Any]:
        return [body for t, body, _ in self.messages if t == topic]

    def events(self, kind: str) -> list[dict]:
        return [body for t, body, _ in self.messages if t.split("/")[3:] == ["event", kind]]

    async def ask(self, node: str, kind: str, payload: dict | bytes) -> None:
        data = payload if isinstance(payload, bytes) else json.dumps(payload)
        await self.client.publish(f"qnemu/{self.network}/{node}/request/{kind}", data, qos=1)

    async def call(self, node: str, kind: str, **fields) -> list[dict]:
        """A request with a fresh correlation id; every response up to the final one."""
        correlation_id = f"test-{os.getpid()}-{next(_ids)}"
        await self.ask(node, kind, {"correlation_id": correlation_id, **fields})
        topic = f"qnemu/{self.network}/{node}/response/{correlation_id}"

        def final() -> list[dict] | None:
            answers = self.on(topic)
            return answers if answers and answers[-1]["final"] else None

        return await self.wait(final)


@contextlib.asynccontextmanager
async def probe(port: int, network: str) -> AsyncIterator[Probe]:
    """A Probe subscribed to everything of `network` on the broker at `port`."""
    async with aiomqtt.Client("127.0.0.1", port) as client:
        watcher = Probe(client, network)
        await client.subscribe(f"qnemu/{network}/#", qos=1)
        async with asyncio.TaskGroup() as tasks:
            reader = tasks.create_task(watcher._read())
            try:
                yield watcher
            finally:
                reader.cancel()
