"""The launcher on MQTT: `qnemu/<network>/launcher/...` (docs/mqtt-api.md).

While `qnemu up` watches a run (attached), it keeps a retained `state` of every process
(running, paused, exited, with its pid), publishes `event/process_*` when one starts,
exits, pauses or resumes — whoever did it: a crash, `qnemu fault`, or this API — and
takes `request/process` for the faults only the owner of the processes can do (kill,
stop, pause, resume, restart; the state broker too). The connection is the nodes' one
(`qnemu.control.session`).
"""

import asyncio
import contextlib
import logging
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from qnemu.control.connection import BrokerAddress, ExponentialBackoff
from qnemu.control.dispatch import (
    RequestRejected,
    correlation_id_of,
    decode_request,
    validate_request,
)
from qnemu.control.launcher_payloads import (
    LauncherState,
    ProcessExitedEvent,
    ProcessPausedEvent,
    ProcessRequestPayload,
    ProcessResponse,
    ProcessResumedEvent,
    ProcessStartedEvent,
    ProcessState,
)
from qnemu.control.payloads import ErrorResponse
from qnemu.control.session import MqttSession
from qnemu.control.topics import LAUNCHER, LAUNCHER_REQUEST_KINDS, NodeTopics, parse_topic
from qnemu.launch.faults import process_fault
from qnemu.launch.rundir import read_status

__all__ = ["WATCH_INTERVAL_S", "LauncherControl", "process_changes", "process_status"]

log = logging.getLogger(__name__)
WATCH_INTERVAL_S = 0.5  # wall seconds between looks at the processes

_EVENT_MODELS = {
    "process_started": ProcessStartedEvent,
    "process_paused": ProcessPausedEvent,
    "process_resumed": ProcessResumedEvent,
}
# name -> (role, pid, status)
Processes = dict[str, tuple[str, int, str]]


def process_status(pid: int) -> str:
    """running, paused (SIGSTOP) or exited (gone, or a zombie), from /proc."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return "exited"
    state = stat.rsplit(")", 1)[-1].split()[0]
    if state in ("Z", "X"):
        return "exited"
    return "paused" if state in ("T", "t") else "running"


def process_changes(before: Processes, after: Processes) -> list[tuple[str, str]]:
    """(event kind, process) for what changed between two looks."""
    changes = []
    for name, (_, pid, status) in after.items():
        if name not in before:
            continue  # the first look: the retained state tells it
        _, old_pid, old_status = before[name]
        if pid != old_pid:
            if old_status != "exited":
                changes.append(("process_exited", name))
            if status != "exited":
                changes.append(("process_started", name))
        elif status != old_status:
            kind = {"exited": "process_exited", "paused": "process_paused"}.get(status)
            changes.append((kind or "process_resumed", name))
    return changes


class LauncherControl:
    """The launcher's MQTT presence: process state and events out, process faults in."""

    def __init__(
        self,
        run_dir: Path,
        broker: BrokerAddress,
        *,
        network: str,
        children: dict[str, Any] | None = None,
        interval_s: float = WATCH_INTERVAL_S,
        backoff: ExponentialBackoff | None = None,
        wall_clock: Callable[[], float] = time.time,
    ):
        """
        Args:
            children: name -> subprocess.Popen of the processes this launcher started
                (exit codes come from them; a restart puts its new child there).
        """
        self.run_dir = Path(run_dir)
        self.network = network
        self.children = children if children is not None else {}
        self.interval_s = interval_s
        self.wall_clock = wall_clock
        self.topics = NodeTopics(network, LAUNCHER)
        self.processes: Processes = {}
        self.open: set[str] = set()
        self.exit_codes: dict[str, int] = {}  # of children seen exiting, until told
        self._looking = asyncio.Lock()
        self.session = MqttSession(
            broker,
            name="launcher",
            client_id=f"qnemu-{network}-{LAUNCHER}",
            will=(self.topics.state, LauncherState(status="offline", network=network)),
            subscriptions=(self.topics.requests_filter,),
            on_message=self.handle,
            on_connect=lambda connection: self.publish_state(),
            on_goodbye=lambda: self.publish_state("stopped"),
            tick_s=5.0,  # a refresh; changes are published as they are seen
            backoff=backoff,
        )

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self.session.run())
            tasks.create_task(self._watch())

    async def stop(self) -> None:
        await self.session.stop()

    # ---- processes -------------------------------------------------------------------

    def look(self) -> Processes:
        """Every process of status.json now (it holds the pid after a restart)."""
        found: Processes = {}
        for entry in read_status(self.run_dir)["processes"]:
            if entry.get("role") == "monitoring":
                continue
            status = process_status(entry["pid"])
            child = self.children.get(entry["name"])
            if status == "exited" and child is not None and child.pid == entry["pid"]:
                # Our child: a zombie until reaped, so this returns at once with its code.
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.exit_codes[entry["name"]] = child.wait(timeout=1.0)
            found[entry["name"]] = (entry["role"], entry["pid"], status)
        return found

    async def refresh(self) -> None:
        """Look at the processes and tell what changed (one look at a time: Popen.poll
        from two threads at once may miss an exit code)."""
        async with self._looking:
            try:
                self.observe(await asyncio.to_thread(self.look))
            except (OSError, ValueError, KeyError) as error:  # status.json being rewritten
                log.debug("launcher: status not readable now: %r", error)

    async def _watch(self) -> None:
        while True:
            await self.refresh()
            await asyncio.sleep(self.interval_s)

    def observe(self, now: Processes) -> None:
        changes = process_changes(self.processes, now)
        first = not self.processes
        self.processes = now
        for kind, name in changes:
            role, pid, _ = now[name]
            fields = {"network": self.network, "wall_time_s": self.wall_clock(),
                      "process": name, "role": role, "pid": pid}  # fmt: skip
            if kind == "process_exited":
                event: BaseModel = ProcessExitedEvent(**fields, exit_code=self._exit_code(name))
            else:
                event = _EVENT_MODELS[kind](**fields)
            self.session.publish(self.topics.event(kind), event)
        if changes or first:
            self.publish_state()

    def _exit_code(self, name: str) -> int | None:
        return self.exit_codes.pop(name, None)

    def state(self, status: str = "running") -> LauncherState:
        return LauncherState(
            status=status,
            network=self.network,
            wall_time_s=self.wall_clock(),
            processes={
                name: ProcessState(role=role, pid=pid, status=process_status)
                for name, (role, pid, process_status) in self.processes.items()
            },
        )

    def publish_state(self, status: str = "running") -> None:
        self.session.publish(self.topics.state, self.state(status), retain=True)

    # ---- requests --------------------------------------------------------------------

    async def handle(self, topic: str, payload: bytes) -> None:
        """Answer one request; never raises."""
        parsed = parse_topic(topic)
        if parsed is None or topic != self.topics.request(parsed.leaf or ""):
            return
        correlation_id = None
        try:
            document = decode_request(payload)
            correlation_id = correlation_id_of(document)
            if parsed.leaf not in LAUNCHER_REQUEST_KINDS:
                raise RequestRejected(
                    "unknown_kind", f"unknown request kind {parsed.leaf!r} (known: process)"
                )
            if correlation_id is None:
                raise RequestRejected("bad_request", "correlation_id missing or invalid")
            if correlation_id in self.open:
                raise RequestRejected("duplicate_correlation_id", f"{correlation_id} is open")
            request = validate_request(ProcessRequestPayload, document)
            self.open.add(correlation_id)
            try:
                response = await self._process(request)
            finally:
                self.open.discard(correlation_id)
            self.session.publish(self.topics.response(correlation_id), response)
        except RequestRejected as error:
            self._error(parsed.leaf, correlation_id, error.code, error.message)
        except Exception as error:  # a bug here must not stop the launcher
            log.exception("launcher: MQTT request on %s failed", topic)
            self._error(parsed.leaf, correlation_id, "internal", f"{type(error).__name__}: {error}")

    async def _process(self, request: ProcessRequestPayload) -> ProcessResponse:
        def started(name: str, child: Any) -> None:
            self.children[name] = child

        try:
            message = await asyncio.to_thread(
                process_fault, self.run_dir, request.process, request.action, 5.0, started
            )
        except KeyError as error:
            raise RequestRejected("unknown_process", str(error.args[0])) from None
        except ValueError as error:
            raise RequestRejected("bad_request", str(error)) from None
        await self.refresh()  # tell the change at once
        return ProcessResponse(
            correlation_id=request.correlation_id,
            action=request.action,
            process=request.process,
            pid=self.processes[request.process][1],
            message=message,
        )

    def _error(self, kind: str | None, correlation_id: str | None, code: str, message: str):
        log.warning("launcher: MQTT request refused: %s: %s", code, message)
        if correlation_id is None:
            return
        response = ErrorResponse(
            correlation_id=correlation_id, request_kind=kind or "", error_code=code, message=message
        )
        self.session.publish(self.topics.response(correlation_id), response)
