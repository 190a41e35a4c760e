"""Run one app per node against a running network: load, attach, run, detach.

Every app attaches to its node before any app starts (so no message or pair meant for an
app reaches a node before the app is there to take it), then all mains run as tasks of
one task group; the first app that raises stops the others. At the end every app
detaches, and its node frees whatever qubits it still held.
"""

import asyncio
import contextlib
import importlib.util
import inspect
import json
import os
import sysconfig
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from qnemu.app.api import AppError, NodeHandle
from qnemu.app.connection import NodeConnection
from qnemu.launch.plan import RunPlan
from qnemu.runtime import EmulatedClock
from qnemu.runtime.curve import client_identity
from qnemu.wire.app import AppAttachRequest, AppDetachRequest

__all__ = [
    "App",
    "AppFailed",
    "AppLoadError",
    "app_traceback",
    "call_kwargs",
    "load_app",
    "parse_app_args",
    "parse_app_specs",
    "run_apps",
    "to_json",
]

QNEMU_DIR = Path(__file__).resolve().parent.parent


class AppLoadError(Exception):
    """An app file, its `main`, a node name or an argument is wrong (nothing ran)."""


class AppFailed(Exception):
    """An app raised (or the run timed out); `details` is the app's own traceback."""

    def __init__(self, node: str, path: Path | None, message: str, details: str = ""):
        where = f"app {node} ({path})" if path is not None else node
        super().__init__(f"{where}: {message}")
        self.node = node
        self.details = details


@dataclass(frozen=True)
class App:
    """One app file, loaded for one node."""

    node: str
    path: Path
    main: Callable[..., Any]


def parse_app_specs(specs: list[str]) -> dict[str, Path]:
    """`alice=path/app_a.py` → {"alice": Path(...)}."""
    apps: dict[str, Path] = {}
    for spec in specs:
        node, sep, path = spec.partition("=")
        if not sep or not node or not path:
            raise AppLoadError(f"an app is NODE=FILE, got {spec!r}")
        if node in apps:
            raise AppLoadError(f"two apps for node {node!r}")
        apps[node] = Path(path)
    if not apps:
        raise AppLoadError("no apps given (NODE=FILE ...)")
    return apps


def parse_app_args(pairs: list[str]) -> dict[str, Any]:
    """`k=v` → {k: v}; v is read as JSON when it is (3, 0.5, true, [1,2]), else a string."""
    kwargs: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key.isidentifier():
            raise AppLoadError(f"--arg takes NAME=VALUE, got {pair!r}")
        try:
            kwargs[key] = json.loads(text)
        except ValueError:
            kwargs[key] = text
    return kwargs


def load_app(node: str, path: Path) -> App:
    """Import an app file (it is the user's program: it runs) and find its `async def main`."""
    path = Path(path).resolve()
    if not path.is_file():
        raise AppLoadError(f"app file for {node}: {path} does not exist")
    spec = importlib.util.spec_from_file_location(f"qnemu_app_{node.replace('-', '_')}", path)
    if spec is None or spec.loader is None:
        raise AppLoadError(f"app file for {node}: {path} is not a Python file")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as error:
        raise AppFailed(node, path, f"import failed: {error!r}", app_traceback(error)) from None
    main = getattr(module, "main", None)
    if not inspect.iscoroutinefunction(main):
        raise AppLoadError(f"{path} has no `async def main(node, ...)`")
    return App(node, path, main)


def call_kwargs(main: Callable[..., Any], args: dict[str, Any]) -> dict[str, Any]:
    """The --arg values `main` accepts: those it names, or all with **kwargs."""
    parameters = list(inspect.signature(main).parameters.values())[1:]
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return dict(args)
    named = {p.name for p in parameters if p.kind is not inspect.Parameter.POSITIONAL_ONLY}
    return {key: value for key, value in args.items() if key in named}


def app_traceback(error: BaseException) -> str:
    """The traceback of an app's own frames (not qnemu's, asyncio's or a library's)."""
    hidden = [str(QNEMU_DIR)] + [
        sysconfig.get_paths()[key] for key in ("stdlib", "platstdlib", "purelib", "platlib")
    ]
    frames = [
        frame
        for frame in traceback.extract_tb(error.__traceback__)
        if not any(frame.filename.startswith(prefix) for prefix in hidden)
    ]
    lines = ["Traceback (the app's frames):\n", *traceback.format_list(frames)]
    lines += traceback.format_exception_only(type(error), error)
    return "".join(lines).rstrip()


async def run_apps(
    run_dir: Path, apps: list[App], args: dict[str, Any], *, timeout_s: float = 300.0
) -> dict[str, Any]:
    """Run every app against the network of `run_dir`; returns each main's value by node."""
    plan = RunPlan.read(Path(run_dir))
    nodes = [p.name for p in plan.processes if p.role == "node"]
    for app in apps:
        if app.node not in nodes:
            raise AppLoadError(f"unknown node {app.node!r} (nodes: {', '.join(nodes)})")
    clock = EmulatedClock(plan.epoch_wall_s, plan.time_scale)
    names = [process.name for process in plan.processes]
    curve = client_identity(Path(run_dir), names, plan.public_keys)
    connections = {
        app.node: NodeConnection(
            plan.process(app.node).endpoint,
            app.node,
            f"app-{app.node}-{os.getpid()}-{os.urandom(3).hex()}",
            clock,
            curve,
        )
        for app in apps
    }
    handles: dict[str, NodeHandle] = {}
    try:
        for app in apps:
            handles[app.node] = await _attach(connections[app.node], app, Path(run_dir))
        return await _run_mains(apps, handles, args, timeout_s)
    finally:
        for node in handles:
            # If the node does not answer, it frees the qubits when the next app attaches.
            with contextlib.suppress(AppError, TimeoutError):
                await connections[node].call(AppDetachRequest(), timeout_s=2.0)
        for connection in connections.values():
            await connection.close()


async def _attach(connection: NodeConnection, app: App, run_dir: Path) -> NodeHandle:
    try:
        reply = await connection.call(AppAttachRequest(app.path.name), timeout_s=5.0)
    except TimeoutError:
        raise AppLoadError(
            f"node {app.node} does not answer: is the network running? "
            f"(qnemu status --run-dir {run_dir})"
        ) from None
    except AppError as error:
        raise AppLoadError(f"node {app.node} refused the app: {error}") from None
    return NodeHandle(app.node, connection, memory_qubits=reply.qubits)


async def _run_mains(
    apps: list[App], handles: dict[str, NodeHandle], args: dict[str, Any], timeout_s: float
) -> dict[str, Any]:
    results: dict[str, Any] = {}
    failures: list[AppFailed] = []

    async def one(app: App) -> None:
        try:
            node = handles[app.node]
            results[app.node] = await app.main(node, **call_kwargs(app.main, args))
            await node.flush()  # what main left deferred runs, and its refusals count
        except Exception as error:
            message = f"{type(error).__name__}: {error}"
            failures.append(AppFailed(app.node, app.path, message, app_traceback(error)))
            raise

    try:
        async with asyncio.timeout(timeout_s):
            async with asyncio.TaskGroup() as tasks:
                for app in apps:
                    tasks.create_task(one(app))
    except TimeoutError:
        waiting = [app.node for app in apps if app.node not in results]
        raise AppFailed(
            ", ".join(waiting),
            None,
            f"still running after {timeout_s:g} s (waiting for each other?)",
        ) from None
    except ExceptionGroup:
        if not failures:
            raise
        raise failures[0] from None
    return results


def to_json(value: Any) -> Any:
    """A main's return value as plain JSON data (numpy arrays and scalars, complex numbers)."""
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_json(value.tolist())
    if isinstance(value, np.generic):
        return to_json(value.item())
    if isinstance(value, complex):
        return [value.real, value.imag]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return repr(value)
