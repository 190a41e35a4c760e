"""`qnemu`: launch, inspect and use an emulated quantum network.

qnemu up TOPOLOGY [--run-dir DIR] [--duration S] [--detach]
qnemu status [--run-dir DIR] [--json]          qnemu down [--run-dir DIR]
qnemu entangle SRC DST --pairs N [--minimum-fidelity F] [--purify dejmps|bbpssw|none]
               [--measure BASIS] [--json]
qnemu validate FILE
qnemu report [RUN_DIR] [-o FILE]          qnemu record [RUN_DIR] [--interval S]
qnemu fault cut|restore|set|eavesdrop LINK | classical NODE | kill|restart|... NAME | clear
qnemu app RUN_DIR_OR_TOPOLOGY alice=app_a.py bob=app_b.py [--arg k=v] [--json]
qnemu export compose TOPOLOGY [-o FILE] [--swarm] [--mosquitto] [--image IMAGE] [--insecure]
qnemu export k8s TOPOLOGY [-o DIR] [--image IMAGE] [--insecure]
qnemu broker | station NAME | node NAME --run-dir DIR     (one process; used by `up`)
"""

import argparse
import asyncio
import contextlib
import json
import math
import signal
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from qnemu.app.cli import add_app_parser
from qnemu.client import EntangleError, QnemuClient, RequestError
from qnemu.launch.launcher import Launcher, LaunchError, collect_stats, stop_run
from qnemu.launch.live import link_figures, render, summary_table
from qnemu.launch.plan import RunPlan, add_layout_arguments
from qnemu.launch.record import record
from qnemu.launch.rundir import new_run_dir, read_status, resolve_run_dir, write_json
from qnemu.topology import (
    MqttConfig,
    TopologyError,
    build_topology,
    load_topology,
    parse_topology,
    validate_file,
)

__all__ = ["main"]

console = Console(stderr=True)


class UsageError(Exception):
    """A command that cannot run as asked; printed without a traceback."""


# ---- up / down / status ------------------------------------------------------------------


def topology_from_args(args: argparse.Namespace):
    """The topology named on the command line, with --link/--node/--time-scale applied:
    `qnemu up line,5 --link model=depolarise,fidelity=0.95,prob_success=0.1`."""
    link = _key_values(args.link.split(",")) if args.link else {}
    node = _key_values(args.node.split(",")) if args.node else {}
    if "," in args.topology and not Path(args.topology).exists():
        extra = {"time_scale": args.time_scale} if args.time_scale else {}
        return build_topology(args.topology, link=link, node=node, **extra)
    topology = load_topology(args.topology)
    if not (link or node or args.time_scale):
        return topology
    data = topology.to_dict()
    for entry in data.get("links", []):
        if "model" in link and link["model"] != entry.get("model"):
            # Another model: keep where the link is, drop the old model's parameters.
            kept = {key: entry[key] for key in ("nodes", "station", "length_km") if key in entry}
            entry.clear()
            entry.update(kept)
        entry.update(link)
    for name in data["nodes"]:
        data["nodes"][name] = {**(data["nodes"][name] or {}), **node}
    if args.time_scale:
        data["time_scale"] = args.time_scale
    return parse_topology(data, origin=f"{args.topology} (with command-line overrides)")


def cmd_up(args: argparse.Namespace) -> int:
    topology = topology_from_args(args)
    run_dir = Path(args.run_dir) if args.run_dir else new_run_dir(topology.name)
    if (run_dir / "run.json").exists():
        status = read_status(run_dir) if (run_dir / "status.json").exists() else {}
        if status.get("state") in ("starting", "running"):
            raise UsageError(f"{run_dir} already holds a running network; `qnemu down` it first")
    run_dir.mkdir(parents=True, exist_ok=True)
    if args.mqtt:
        try:
            topology = topology.model_copy(update={"mqtt": MqttConfig(url=args.mqtt)})
        except ValueError as error:
            raise UsageError(f"--mqtt: not an mqtt:// or mqtts:// URL: {args.mqtt}") from error
    launcher = Launcher(topology, run_dir, secure=not args.insecure)
    console.print(f"starting [bold]{topology.name}[/]: {len(launcher.plan.processes)} processes")
    launcher.start()
    try:
        started = time.monotonic()
        asyncio.run(launcher.wait_ready())
        console.print(f"ready in {time.monotonic() - started:.1f} s · run dir {launcher.run_dir}")
    except (LaunchError, KeyboardInterrupt) as error:
        launcher.stop()
        raise UsageError(f"start-up failed: {error}") from None
    if args.monitoring:
        try:
            urls = launcher.start_monitoring()
            console.print(f"prometheus: {urls['prometheus']}")
            grafana = urls["grafana"] or "not installed (dashboards: monitoring/grafana/)"
            console.print(f"grafana: {grafana}")
        except (FileNotFoundError, RuntimeError, TimeoutError) as error:
            console.print(f"[yellow]no monitoring: {error}")
    if args.detach:
        print(launcher.run_dir)
        return 0
    try:
        asyncio.run(_watch(launcher, args.duration))
    except KeyboardInterrupt:
        pass
    finally:
        console.print("stopping…")
        codes = launcher.stop()
    unclean = {name: code for name, code in codes.items() if code not in (0, None)}
    if unclean:
        console.print(f"[yellow]exit codes: {unclean} (see {launcher.run_dir}/logs)")
    return 0


async def _watch(launcher: Launcher, duration_s: float | None) -> None:
    """Live view until the duration ends, Ctrl-C/SIGTERM, or every process is gone."""
    plan = launcher.plan
    interrupted = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, interrupted.set)
    started = time.monotonic()
    previous, previous_at = None, started
    links: dict = {}
    stop_recording = asyncio.Event()  # the run records itself for `qnemu report`
    control = _launcher_control(launcher)
    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(record(launcher.run_dir, plan, 1.0, stop_recording))
        mqtt_task = tasks.create_task(control.run()) if control is not None else None
        try:
            async with QnemuClient(launcher.run_dir, name="launcher-view") as client:
                with Live(Table(), console=console, refresh_per_second=2, transient=False) as live:
                    while duration_s is None or time.monotonic() - started < duration_s:
                        stats = await collect_stats(client, plan)
                        now = time.monotonic()
                        links = link_figures(plan, stats, previous, now - previous_at)
                        previous, previous_at = links, now
                        live.update(render(plan, stats, links, started, str(launcher.run_dir)))
                        if len(launcher.dead_processes()) == len(launcher.processes):
                            console.print("[red]every process has exited")
                            break
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(interrupted.wait(), 1.0)
                        if interrupted.is_set():
                            break
                    stats = await collect_stats(client, plan)
                    links = link_figures(plan, stats, None, 0.0)
        finally:
            stop_recording.set()  # the recorder takes its last sample before the stop
            if mqtt_task is not None:  # says "stopped" on MQTT before the processes stop
                mqtt_task.cancel()
                await control.stop()
    elapsed = time.monotonic() - started
    console.print(summary_table(links, elapsed))
    write_json(launcher.run_dir / "summary.json", {"duration_s": elapsed, "links": links})


def _launcher_control(launcher: Launcher):
    """The launcher's MQTT presence, when the topology names a broker (docs/mqtt-api.md)."""
    from qnemu.control import session

    mqtt = launcher.topology.mqtt
    if mqtt is None:
        return None
    if session.aiomqtt is None:
        console.print("[yellow]no MQTT for the launcher: aiomqtt is not installed")
        return None
    from qnemu.control.connection import parse_broker_url
    from qnemu.control.topics import LAUNCHER
    from qnemu.launch.mqtt import LauncherControl

    if LAUNCHER in launcher.topology.nodes:  # its topics would be the node's
        console.print(f"[yellow]no MQTT for the launcher: a node is named {LAUNCHER!r}")
        return None

    return LauncherControl(
        launcher.run_dir,
        parse_broker_url(mqtt.url),
        network=launcher.plan.network,
        children=launcher.processes,
    )


def cmd_report(args: argparse.Namespace) -> int:
    from qnemu.launch.report import write_report

    run_dir = resolve_run_dir(args.run_dir)
    try:
        path = write_report(run_dir, Path(args.output) if args.output else None)
    except ValueError as error:
        raise UsageError(str(error)) from None
    print(path)
    return 0


def cmd_record(args: argparse.Namespace) -> int:
    from qnemu.launch.record import TIMESERIES_FILE, record_until_stopped

    run_dir = resolve_run_dir(args.run_dir)
    written = asyncio.run(record_until_stopped(run_dir, interval_s=args.interval))
    console.print(f"{written} samples in {run_dir / TIMESERIES_FILE}")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    run_dir = resolve_run_dir(args.run_dir)
    stopped = stop_run(run_dir)
    console.print(f"stopped {len(stopped)} processes of {run_dir}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    run_dir = resolve_run_dir(args.run_dir)
    plan = RunPlan.read(run_dir)
    status = read_status(run_dir)
    pids = {entry["name"]: entry["pid"] for entry in status.get("processes", [])}

    async def probe() -> dict[str, dict]:
        async with QnemuClient(run_dir) as client:
            return await collect_stats(client, plan)

    stats = asyncio.run(probe())
    processes = [
        {
            "name": process.name,
            "role": process.role,
            "pid": pids.get(process.name),
            "endpoint": process.endpoint,
            "metrics_url": process.metrics_url,
            "up": process.name in stats,
            "stats": stats.get(process.name),
        }
        for process in plan.processes
    ]
    for entry in processes:  # a node with SAEs serves ETSI GS QKD 014 keys here
        if entry["stats"] and entry["stats"].get("kme_url"):
            entry["kme_url"] = entry["stats"]["kme_url"]
    if args.json:
        print(
            json.dumps(
                {
                    "network": plan.network,
                    "run_dir": str(run_dir),
                    "state": status.get("state"),
                    "processes": processes,
                },
                default=str,
            )
        )
        return 0
    table = Table(title=f"{plan.network} · {run_dir}")
    for column in ("name", "role", "pid", "endpoint", "metrics", "up"):
        table.add_column(column)
    for p in processes:
        up = "[green]up" if p["up"] else "[red]down"
        table.add_row(p["name"], p["role"], str(p["pid"]), p["endpoint"], p["metrics_url"], up)
    Console().print(table)
    return 0 if all(p["up"] for p in processes) else 1


# ---- entangle ----------------------------------------------------------------------------


def cmd_entangle(args: argparse.Namespace) -> int:
    run_dir = resolve_run_dir(args.run_dir)
    plan = RunPlan.read(run_dir)
    nodes = [p.name for p in plan.processes if p.role == "node"]
    for node in (args.src, args.dst):
        if node not in nodes:
            raise UsageError(f"unknown node {node!r} (nodes: {', '.join(nodes)})")
    return asyncio.run(_entangle(run_dir, args))


async def _entangle(run_dir: Path, args: argparse.Namespace) -> int:
    delivered = 0
    async with QnemuClient(run_dir) as client:
        try:
            async for pair in client.entangle(
                args.src,
                args.dst,
                pairs=args.pairs,
                minimum_fidelity=args.minimum_fidelity,
                measure=args.measure,
                timeout_s=args.timeout,
                purify=args.purify,
                on_expire=lambda expire: console.print(f"[yellow]EXPIRE[/]: {expire.message}"),
            ):
                delivered += 1
                record = {
                    "src": pair.src,
                    "dst": pair.dst,
                    "create_id": pair.create_id,
                    "sequence_number": pair.sequence_number,
                    "bell_state": pair.bell_state,
                    "fidelity": pair.fidelity,
                    "created_at": pair.created_at,
                    "delivered_at": pair.delivered_at,
                    "attempts": pair.attempts,
                }
                if pair.path is not None:
                    record["path"] = list(pair.path)
                if pair.outcomes is not None:
                    record["outcomes"] = list(pair.outcomes)
                    record["bases"] = list(pair.bases)
                if pair.qubits is not None:
                    record["qubits"] = list(pair.qubits)
                    if not args.hold:  # a CLI pair is reported, then its memory freed
                        await client.free(args.src, [pair.qubits[0]])
                        await client.free(args.dst, [pair.qubits[1]])
                if args.json:
                    print(json.dumps(record), flush=True)
                else:
                    outcome = (
                        f" outcomes {record['outcomes']} bases {record['bases']}"
                        if pair.outcomes
                        else ""
                    )
                    print(
                        f"pair {pair.sequence_number}: {pair.bell_state} F={pair.fidelity:.4f} "
                        f"attempts={pair.attempts} t={pair.delivered_at:.6f} s{outcome}",
                        flush=True,
                    )
        except EntangleError as error:
            console.print(
                f"[red]ERR {error.code}[/]: {error.message} ({error.delivered} delivered)"
            )
            return 2
        except (RequestError, TimeoutError) as error:
            console.print(f"[red]error[/]: {error}")
            return 2
    return 0


def cmd_fault(args: argparse.Namespace) -> int:
    from qnemu.launch import faults

    run_dir = resolve_run_dir(args.run_dir)
    try:
        if args.fault in faults.PROCESS_FAULTS:
            print(faults.process_fault(run_dir, args.name, args.fault))
            return 0
        if args.fault == "classical":
            result = asyncio.run(faults.classical_fault(run_dir, args.node, args.drop, args.delay))
        elif args.fault == "clear":
            result = asyncio.run(faults.clear_faults(run_dir))
        else:
            parameters = _key_values(getattr(args, "settings", []))
            if args.fault == "eavesdrop":
                parameters = {"fraction": args.fraction}
            result = asyncio.run(faults.link_fault(run_dir, args.link, args.fault, parameters))
    except (ValueError, RequestError, TimeoutError) as error:
        raise UsageError(str(error)) from None
    print(json.dumps(result, indent=2, default=str))
    return 0


def cmd_keys(args: argparse.Namespace) -> int:
    from qnemu.kme.fetch import KeyFetchError, fetch_key_pairs

    run_dir = resolve_run_dir(args.run_dir)
    try:
        pairs = asyncio.run(
            fetch_key_pairs(
                run_dir, args.src, args.dst, bits=args.bits, number=args.number, wait_s=args.wait
            )
        )
    except (KeyFetchError, OSError) as error:
        raise UsageError(str(error)) from None
    for pair in pairs:
        print(json.dumps({"key_ID": pair.key_ID, "key": pair.master_key, "match": pair.matches}))
    if not all(pair.matches for pair in pairs):
        console.print("[red]the two ends got different keys")
        return 1
    return 0


def cmd_eavesdrop(args: argparse.Namespace) -> int:
    """`qnemu eavesdrop LINK --fraction F` / `--off`: the fault, under its own name."""
    args.fault, args.settings = "eavesdrop", []
    args.fraction = 0.0 if args.off else args.fraction
    return cmd_fault(args)


def _key_values(items: list[str]) -> dict[str, Any]:
    """key=value pairs, values read as YAML scalars (numbers stay numbers)."""
    import yaml

    parameters = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"expected key=value, got {item!r}")
        parameters[key] = yaml.safe_load(value)
    return parameters


def cmd_validate(args: argparse.Namespace) -> int:
    problems = validate_file(args.file)
    if problems:
        for problem in problems:
            print(problem, file=sys.stderr)
        return 1
    print(f"{args.file}: ok")
    return 0


def cmd_process(args: argparse.Namespace) -> int:
    from qnemu.launch.processes import serve

    name = "broker" if args.command == "broker" else args.name
    return serve(Path(args.run_dir), name, args.secrets_dir, args.state_dir)


def cmd_export(args: argparse.Namespace) -> int:
    from qnemu.launch.export import export_compose
    from qnemu.launch.k8s import export_k8s

    topology = load_topology(args.topology)
    try:
        if args.target == "compose":
            default = f"qnemu-{topology.name}/{'stack' if args.swarm else 'compose'}.yaml"
            path = export_compose(
                topology,
                Path(args.output or default),
                swarm=args.swarm,
                mosquitto=args.mosquitto,
                image=args.image,
                secure=not args.insecure,
            )
            written = [path]
        else:
            written = export_k8s(
                topology,
                Path(args.output or f"qnemu-{topology.name}/k8s"),
                image=args.image,
                secure=not args.insecure,
            )
    except ValueError as error:
        raise UsageError(str(error)) from None
    print(written[0] if args.target == "compose" else written[0].parent)
    return 0


# ---- argument parsing --------------------------------------------------------------------


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0 or math.isinf(value):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qnemu", description="quantum network emulator")
    commands = parser.add_subparsers(dest="command", required=True)

    up = commands.add_parser("up", help="launch a network and show it live")
    up.add_argument("topology", help="YAML file, shipped name (two-node-metro) or spec (line,4)")
    up.add_argument("--run-dir", help="run directory (default qnemu-runs/<network>-<time>)")
    up.add_argument("--duration", type=_positive, help="stop after this many seconds")
    up.add_argument("--link", help="link parameters for every link: k=v,k=v (e.g. model=perfect)")
    up.add_argument("--node", help="node parameters for every node: k=v,k=v (e.g. qubits=8)")
    up.add_argument("--time-scale", type=_positive, help="emulated time = wall time / this")
    up.add_argument("--mqtt", metavar="URL", help="northbound MQTT broker (mqtt://host:port)")
    up.add_argument(
        "--monitoring",
        action="store_true",
        help="also start a local Prometheus for the run (and Grafana, if installed)",
    )
    up.add_argument("--detach", action="store_true", help="return once every process is ready")
    up.add_argument("--insecure", action="store_true", help="plain-text ZeroMQ (no CurveZMQ keys)")
    up.set_defaults(handler=cmd_up)

    for name, handler, text in (
        ("down", cmd_down, "stop a running network"),
        ("status", cmd_status, "show a network's processes"),
    ):
        command = commands.add_parser(name, help=text)
        command.add_argument("--run-dir", help="run directory (default: the latest run)")
        if name == "status":
            command.add_argument("--json", action="store_true")
        command.set_defaults(handler=handler)

    entangle = commands.add_parser("entangle", help="ask for entangled pairs between two nodes")
    entangle.add_argument("src")
    entangle.add_argument("dst")
    entangle.add_argument("--pairs", type=int, default=1)
    entangle.add_argument(
        "--minimum-fidelity",
        type=float,
        default=0.0,
        help="refuse (NOTIME, with the best reachable) unless the pairs can reach it",
    )
    entangle.add_argument(
        "--purify",
        choices=["dejmps", "bbpssw", "none"],
        default="dejmps",
        help="above what the links give, purify link pairs before swapping them with this "
        "protocol (up to 3 rounds per link, chosen by the planner); none: refuse instead "
        "(default: dejmps)",
    )
    entangle.add_argument("--measure", choices=["Z", "X", "Y", "random"], help="measure mode")
    entangle.add_argument("--timeout", type=_positive, default=10.0, help="emulated seconds")
    entangle.add_argument("--hold", action="store_true", help="keep kept pairs in memory")
    entangle.add_argument("--json", action="store_true", help="one JSON object per pair")
    entangle.add_argument("--run-dir")
    entangle.set_defaults(handler=cmd_entangle)

    add_app_parser(commands)

    report = commands.add_parser("report", help="write a self-contained HTML report of a run")
    report.add_argument("run_dir", nargs="?", help="run directory (default: the latest run)")
    report.add_argument("-o", "--output", metavar="FILE", help="default RUN_DIR/report.html")
    report.set_defaults(handler=cmd_report)
    recorder = commands.add_parser("record", help="record a detached run for `qnemu report`")
    recorder.add_argument("run_dir", nargs="?", help="run directory (default: the latest run)")
    recorder.add_argument("--interval", type=_positive, default=1.0, help="seconds between samples")
    recorder.set_defaults(handler=cmd_record)

    keys = commands.add_parser("keys", help="fetch a key pair through the KMEs of two nodes")
    keys.add_argument("src")
    keys.add_argument("dst")
    keys.add_argument("--bits", type=int, default=256)
    keys.add_argument("--number", type=int, default=1)
    keys.add_argument("--wait", type=float, default=30.0, help="seconds to wait for key")
    keys.add_argument("--run-dir")
    keys.set_defaults(handler=cmd_keys)

    eavesdrop = commands.add_parser("eavesdrop", help="intercept-resend on a link (or --off)")
    eavesdrop.add_argument("link")
    eavesdrop.add_argument("--fraction", type=float, default=1.0)
    eavesdrop.add_argument("--off", action="store_true")
    eavesdrop.add_argument("--run-dir")
    eavesdrop.set_defaults(handler=cmd_eavesdrop)

    fault = commands.add_parser("fault", help="break a running network on purpose, and mend it")
    kinds = fault.add_subparsers(dest="fault", required=True)
    for kind, text in (
        ("cut", "cut a link's fibre (quantum and classical)"),
        ("restore", "restore a cut fibre"),
        ("set", "change a link's parameters, e.g. attenuation_db_per_km=0.3"),
        ("eavesdrop", "intercept-resend on a fraction of a link's pairs"),
    ):
        sub = kinds.add_parser(kind, help=text)
        sub.add_argument("link", help="a-b (either order) or the station's name")
        if kind == "set":
            sub.add_argument("settings", nargs="+", metavar="KEY=VALUE")
        if kind == "eavesdrop":
            sub.add_argument("--fraction", type=float, default=1.0)
    classical = kinds.add_parser("classical", help="drop or delay a node's incoming messages")
    classical.add_argument("node")
    classical.add_argument("--drop", type=float, default=0.0, help="fraction lost")
    classical.add_argument("--delay", type=float, default=0.0, help="extra emulated seconds")
    kinds.add_parser("clear", help="clear every fault of every process")
    for kind in ("kill", "stop", "pause", "resume", "restart"):
        sub = kinds.add_parser(kind, help=f"{kind} one process (broker, station or node)")
        sub.add_argument("name")
    for sub in kinds.choices.values():
        sub.add_argument("--run-dir")
        sub.set_defaults(handler=cmd_fault)

    validate = commands.add_parser("validate", help="check a topology file")
    validate.add_argument("file")
    validate.set_defaults(handler=cmd_validate)

    export = commands.add_parser("export", help="write Compose/Swarm or Kubernetes files")
    targets = export.add_subparsers(dest="target", required=True)
    compose = targets.add_parser("compose", help="Docker Compose file (--swarm: for a Swarm)")
    kube = targets.add_parser("k8s", help="Kubernetes manifests, one file per object")
    for target, output in ((compose, "FILE"), (kube, "DIR")):
        target.add_argument("topology", help="YAML file, shipped name or builder spec")
        target.add_argument("-o", "--output", metavar=output, help="default qnemu-<network>/...")
        target.add_argument("--image", default="qnemu:latest", help="the qnemu image to run")
        target.add_argument(
            "--insecure",
            action="store_true",
            help="plain-text ZeroMQ, no keys generated (only on a network you trust)",
        )
        target.set_defaults(handler=cmd_export)
    compose.add_argument("--swarm", action="store_true", help="for `docker stack deploy`")
    compose.add_argument("--mosquitto", action="store_true", help="add an MQTT broker")

    for role in ("broker", "station", "node"):
        process = commands.add_parser(role, help=f"run one {role} process of a run")
        if role != "broker":
            process.add_argument("name")
        process.add_argument("--run-dir", required=True)
        add_layout_arguments(process)
        process.set_defaults(handler=cmd_process)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "pairs", 1) < 1:
        console.print("[red]error[/]: --pairs must be >= 1")
        return 2
    try:
        return args.handler(args)
    except (UsageError, TopologyError, FileNotFoundError, KeyError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        console.print(f"[red]error[/]: {message}")
        return 2


if __name__ == "__main__":
    sys.exit(main())
