"""`qnemu app RUN_DIR_OR_TOPOLOGY alice=app_a.py bob=app_b.py [--arg k=v] [--json]`.

With a run directory the apps run against that (running) network; with a topology (a
file, a shipped name or a builder spec such as `line,3`) the network is launched for the
apps and stopped after them. Prints each app's return value; exit code 1 when an app
fails (with the app's own traceback), 2 when the command cannot run as asked.
"""

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from qnemu.app.runner import (
    AppFailed,
    AppLoadError,
    load_app,
    parse_app_args,
    parse_app_specs,
    run_apps,
    to_json,
)

__all__ = ["add_app_parser", "cmd_app", "main"]


def add_app_parser(subparsers: Any) -> argparse.ArgumentParser:
    """The `app` subcommand, for `qnemu`'s parser (handler: `cmd_app`)."""
    app = subparsers.add_parser("app", help="run one application per node (qnemu.app API)")
    _arguments(app)
    return app


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", metavar="RUN_DIR_OR_TOPOLOGY")
    parser.add_argument("apps", nargs="+", metavar="NODE=FILE", help="e.g. alice=app_alice.py")
    parser.add_argument(
        "--arg", action="append", default=[], metavar="NAME=VALUE", help="keyword for every main"
    )
    parser.add_argument("--json", action="store_true", help="one JSON object of all results")
    parser.add_argument("--timeout", type=float, default=300.0, help="wall seconds for the apps")
    parser.add_argument("--run-dir", help="where a launched network's run directory goes")
    parser.set_defaults(handler=cmd_app)


def cmd_app(args: argparse.Namespace) -> int:
    try:
        apps = [load_app(node, path) for node, path in parse_app_specs(args.apps).items()]
        kwargs = parse_app_args(args.arg)
        target = Path(args.target)
        if (target / "run.json").is_file():
            results = asyncio.run(run_apps(target.resolve(), apps, kwargs, timeout_s=args.timeout))
        else:
            results = _run_launched(args, apps, kwargs)
    except AppLoadError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except AppFailed as error:
        print(f"error: {error}", file=sys.stderr)
        if error.details:
            print(error.details, file=sys.stderr)
        return 1
    plain = {node: to_json(results[node]) for node in (app.node for app in apps)}
    if args.json:
        print(json.dumps(plain))
    else:
        for node, value in plain.items():
            print(f"{node}: {json.dumps(value)}")
    return 0


def _run_launched(args: argparse.Namespace, apps: list, kwargs: dict[str, Any]) -> dict:
    """Launch the topology, run the apps, stop every process (also on failure)."""
    # Imported here: running against a live run dir needs none of the launcher.
    from qnemu.launch.launcher import Launcher, LaunchError
    from qnemu.launch.rundir import new_run_dir
    from qnemu.topology import TopologyError, load_topology

    try:
        topology = load_topology(args.target)
    except (TopologyError, FileNotFoundError) as error:
        raise AppLoadError(
            f"{args.target} is neither a run directory nor a topology: {error}"
        ) from None
    run_dir = Path(args.run_dir) if args.run_dir else new_run_dir(topology.name)
    run_dir.mkdir(parents=True, exist_ok=True)
    launcher = Launcher(topology, run_dir)
    launcher.start()
    try:
        try:
            asyncio.run(launcher.wait_ready())
        except LaunchError as error:
            raise AppLoadError(f"start-up failed: {error}") from None
        return asyncio.run(run_apps(launcher.run_dir, apps, kwargs, timeout_s=args.timeout))
    finally:
        launcher.stop()


def main(argv: list[str] | None = None) -> int:
    """`python -m qnemu.app ...`: the same command without the rest of the CLI."""
    parser = argparse.ArgumentParser(prog="qnemu app", description=__doc__.splitlines()[0])
    _arguments(parser)
    return cmd_app(parser.parse_args(argv))
