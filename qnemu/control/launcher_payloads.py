"""JSON payloads of the launcher's MQTT topics, `qnemu/<network>/launcher/...`.

The launcher (`qnemu up`, attached) owns the processes of a run: it tells when they
start, exit, pause and resume, keeps a retained state of all of them, and takes the
faults only it can do (kill, stop, pause, resume, restart a process, the state broker
included). Errors use the node API's `ErrorResponse`.
"""

from typing import Literal

from pydantic import Field

from qnemu.control.payloads import CorrelationId, Name, StrictInt, _Payload

__all__ = [
    "LauncherState",
    "ProcessExitedEvent",
    "ProcessPausedEvent",
    "ProcessRequestPayload",
    "ProcessResponse",
    "ProcessResumedEvent",
    "ProcessStartedEvent",
    "ProcessState",
]

ProcessStatus = Literal["running", "paused", "exited"]


class ProcessRequestPayload(_Payload):
    """A process fault: SIGKILL (`kill`), SIGTERM (`stop`), SIGSTOP (`pause`), SIGCONT
    (`resume`) to one process of the run, or stop it and start it again (`restart`)."""

    correlation_id: CorrelationId
    action: Literal["kill", "stop", "pause", "resume", "restart"]
    process: Name


class ProcessResponse(_Payload):
    """The answer to a process request: what was done, and the process's pid now."""

    kind: Literal["process"] = "process"
    correlation_id: str
    final: Literal[True] = True
    action: str
    process: str
    pid: StrictInt
    message: str


class _LauncherEvent(_Payload):
    network: str
    wall_time_s: float
    process: str
    role: str
    pid: StrictInt


class ProcessStartedEvent(_LauncherEvent):
    """A process of the run runs with a new pid (at a restart, by MQTT or `qnemu fault`)."""

    kind: Literal["process_started"] = "process_started"


class ProcessExitedEvent(_LauncherEvent):
    """A process of the run is gone; `exit_code` when the launcher is its parent
    (negative: the signal that ended it)."""

    kind: Literal["process_exited"] = "process_exited"
    exit_code: StrictInt | None


class ProcessPausedEvent(_LauncherEvent):
    """A process was stopped with SIGSTOP: it holds its state and answers nothing."""

    kind: Literal["process_paused"] = "process_paused"


class ProcessResumedEvent(_LauncherEvent):
    """A paused process runs again (SIGCONT)."""

    kind: Literal["process_resumed"] = "process_resumed"


class ProcessState(_Payload):
    role: str
    pid: StrictInt
    status: ProcessStatus


class LauncherState(_Payload):
    """The launcher's retained state: every process of the run and how it is now;
    "stopped" when the launcher stops the run, "offline" (its last will) if it vanished."""

    status: Literal["running", "stopped", "offline"]
    network: str
    wall_time_s: float | None = None
    processes: dict[str, ProcessState] = Field(default_factory=dict)
