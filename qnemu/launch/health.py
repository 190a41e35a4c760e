"""Health check for one process of a run: ping it on its own machine, exit 0 if it is ready.

Containers run it as their health check (`python -m qnemu.launch.health NAME --run-dir
DIR`, or with NAME and DIR from $QNEMU_PROCESS and $QNEMU_RUN_DIR). It always pings the
process where it listens *inside this container*, never through a Service or virtual IP:
Kubernetes routes a Service only to pods already ready, so asking through it would wait
for itself. Exit code 0 means healthy, 1 unhealthy (Docker's and Kubernetes' meaning).
"""

import argparse
import os
import sys
from pathlib import Path
from urllib.parse import urlsplit

import zmq

from qnemu.launch.plan import ProcessPlan, RunPlan, add_layout_arguments, with_layout
from qnemu.runtime.clock import EmulatedClock
from qnemu.runtime.curve import apply_client, client_identity, self_identity
from qnemu.wire import WireError, decode, encode, new_msg_id
from qnemu.wire.common import PingReply, PingRequest

__all__ = ["DEFAULT_RUN_DIR", "bind_endpoint_of", "local_endpoint", "main", "ping"]

DEFAULT_RUN_DIR = "/run/qnemu"
DEFAULT_TIMEOUT_S = 2.0
# Listening on every interface: reach it on loopback, which every interface set includes.
_WILDCARDS = {"0.0.0.0": "127.0.0.1", "*": "127.0.0.1", "::": "::1", "[::]": "[::1]"}


def bind_endpoint_of(process: ProcessPlan) -> str:
    """Where the process binds: its `bind_endpoint` once the plan has one, else its endpoint."""
    return getattr(process, "bind_endpoint", None) or process.endpoint


def local_endpoint(process: ProcessPlan) -> str:
    """The endpoint to ping the process at from its own host or container."""
    bind = bind_endpoint_of(process)
    parts = urlsplit(bind)
    host = parts.hostname if parts.hostname is not None else ""
    host = f"[{host}]" if ":" in host else host
    if parts.scheme != "tcp" or host not in _WILDCARDS:
        return bind  # a named interface: it is ours, so it resolves to this container
    return f"tcp://{_WILDCARDS[host]}:{parts.port}"


def ping(
    plan: RunPlan,
    name: str,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    run_dir: Path | None = None,
) -> PingReply | None:
    """Ping process `name` of `plan` where it listens locally; None if it did not answer.
    A secure run's client key is taken from `run_dir`; in a container (the plan has a
    `secrets_dir`) the health check proves itself with the process's own key."""
    process = plan.process(name)
    clock = EmulatedClock(plan.epoch_wall_s, plan.time_scale)
    # An identity of its own: the process's ROUTER hands an identity over to its newest
    # holder, so a health check must never borrow a peer's name.
    identity = f"health-{os.getpid()}-{os.urandom(3).hex()}"
    context = zmq.Context()
    socket = context.socket(zmq.DEALER)
    try:
        socket.setsockopt(zmq.LINGER, 0)
        socket.setsockopt(zmq.IDENTITY, identity.encode())
        if plan.secure and run_dir is not None:
            if plan.secrets_dir is not None:  # a container: only the process's own key is here
                curve = self_identity(run_dir, name, plan.secrets_dir)
            else:
                names = [p.name for p in plan.processes]
                curve = client_identity(run_dir, names, plan.public_keys)
            apply_client(socket, curve, name)
        socket.connect(local_endpoint(process))
        msg_id = new_msg_id()
        socket.send(encode(PingRequest(), sender=identity, sent_at=clock.now(), msg_id=msg_id))
        while socket.poll(timeout=int(timeout_s * 1000)):
            try:
                envelope = decode(socket.recv())
            except WireError:
                continue
            if envelope.parent_id == msg_id and isinstance(envelope.body, PingReply):
                return envelope.body
        return None
    finally:
        socket.close(linger=0)
        context.term()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m qnemu.launch.health", description="Exit 0 if the process is healthy."
    )
    parser.add_argument("name", nargs="?", default=os.environ.get("QNEMU_PROCESS"))
    parser.add_argument(
        "--run-dir", default=os.environ.get("QNEMU_RUN_DIR", DEFAULT_RUN_DIR), type=Path
    )
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="seconds")
    parser.add_argument(
        "--live", action="store_true", help="answering at all is enough (liveness, not readiness)"
    )
    add_layout_arguments(parser)
    args = parser.parse_args(argv)
    if not args.name:
        parser.error("give the process NAME or set QNEMU_PROCESS")
    try:
        plan = with_layout(RunPlan.read(args.run_dir), args.secrets_dir, args.state_dir)
        reply = ping(plan, args.name, timeout_s=args.timeout, run_dir=args.run_dir)
    except (FileNotFoundError, KeyError, ValueError, zmq.ZMQError) as error:
        print(f"unhealthy: {error}", file=sys.stderr)
        return 1
    if reply is None:
        print(f"unhealthy: {args.name} did not answer within {args.timeout} s", file=sys.stderr)
        return 1
    if not (reply.ready or args.live):
        print(f"unhealthy: {args.name} answers but is not ready", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
