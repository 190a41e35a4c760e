"""A private Ethernet segment of Linux network namespaces, for tests that need real hosts.

Switch: a namespace holding one bridge. Host: a namespace with one veth to that bridge and
one address in a /24 that exists nowhere else. Lab: creates them, cuts or delays a host's
link, and deletes them. Every interface is created from inside a namespace of the lab, so
nothing ever appears on the host, and deleting the namespaces removes every veth, the
bridge and every address; the host's own interfaces and routes are never touched.
"""

import atexit
import contextlib
import os
import random
import shutil
import subprocess
from dataclasses import dataclass

__all__ = [
    "Host",
    "Lab",
    "NetemUnavailable",
    "NetnsError",
    "delete_namespaces",
    "lab_prefix",
    "run",
    "unavailable_reason",
]

COMMAND_TIMEOUT_S = 10.0
FIRST_HOST_OCTET = 10
BRIDGE = "br0"  # lives alone in the switch namespace, so the short name cannot clash


class NetnsError(RuntimeError):
    """An `ip` or `tc` command failed; the message holds the command and its stderr."""


class NetemUnavailable(NetnsError):
    """The kernel has no netem queueing discipline (module sch_netem missing)."""


def lab_prefix(pid: int | None = None) -> str:
    """`qn` + the pid modulo 10 000: two test runs at once never share a name."""
    return f"qn{(os.getpid() if pid is None else pid) % 10_000:04d}"


def run(*argv: str) -> str:
    """Run one command; its stdout, or NetnsError with the command and stderr."""
    try:
        done = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=COMMAND_TIMEOUT_S,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise NetnsError(f"{' '.join(argv)}: {error}") from error
    if done.returncode != 0:
        raise NetnsError(f"{' '.join(argv)}: {done.stderr.strip() or done.returncode}")
    return done.stdout


def ip(netns: str, *args: str) -> str:
    """`ip` inside a namespace (never on the host's own)."""
    return run("ip", "-netns", netns, *args)


def list_namespaces() -> list[str]:
    # Lines read "NAME" or "NAME (id: N)".
    return [line.split()[0] for line in run("ip", "netns", "list").splitlines() if line.strip()]


def delete_namespaces(prefix: str) -> list[str]:
    """Delete every namespace named `<prefix>-...` (with its veths and bridge); returns them.

    A safety net for runs that died before their own clean-up: it never raises, and
    does nothing where `ip` is missing or namespaces cannot be listed.
    """
    if shutil.which("ip") is None:
        return []
    try:
        names = [name for name in list_namespaces() if name.startswith(f"{prefix}-")]
    except NetnsError:
        return []
    for name in names:
        with contextlib.suppress(NetnsError):
            run("ip", "netns", "delete", name)
    return names


def unavailable_reason(prefix: str) -> str | None:
    """Why network namespaces cannot be used here, or None when they can."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "the `ip` command (iproute2) is missing"
    probe = f"{prefix}-probe"
    try:
        run("ip", "netns", "add", probe)
    except NetnsError as error:
        return f"cannot create a network namespace: {error}"
    with contextlib.suppress(NetnsError):
        run("ip", "netns", "delete", probe)
    return None


@dataclass(frozen=True)
class Host:
    """One machine on the segment: its namespace, its end of the veth and its address."""

    label: str
    netns: str
    interface: str
    address: str

    def command(self, *argv: str) -> list[str]:
        """`argv` run inside this host's namespace (as `ip netns exec` does; same pid)."""
        return ["ip", "netns", "exec", self.netns, *argv]


class Lab:
    """A switch namespace with a bridge and hosts on veths, all in one private /24.

    Use as a context manager; `destroy()` is idempotent and also runs at interpreter exit,
    so an interrupted test run leaves nothing behind.
    """

    def __init__(self, prefix: str | None = None, subnet_octet: int | None = None):
        self.prefix = prefix or lab_prefix()
        # 10.231.X.0/24 exists only inside this lab's namespaces, so X may be anything.
        octet = random.randrange(256) if subnet_octet is None else subnet_octet
        self.subnet = f"10.231.{octet}"
        self.switch = f"{self.prefix}-switch"
        self.hosts: dict[str, Host] = {}
        self.namespaces: list[str] = []

    def __enter__(self) -> "Lab":
        self.create()
        return self

    def __exit__(self, *exc: object) -> None:
        self.destroy()

    def _add_namespace(self, name: str) -> None:
        run("ip", "netns", "add", name)
        self.namespaces.append(name)
        ip(name, "link", "set", "lo", "up")

    def create(self) -> None:
        atexit.register(self.destroy)
        self._add_namespace(self.switch)
        ip(self.switch, "link", "add", BRIDGE, "type", "bridge")
        ip(self.switch, "link", "set", BRIDGE, "up")

    def add_host(self, label: str) -> Host:
        """A new namespace `<prefix>-<label>` on the bridge with the next free address."""
        index = len(self.hosts)
        host = Host(
            label=label,
            netns=f"{self.prefix}-{label}",
            interface=f"{self.prefix}h{index}",
            address=f"{self.subnet}.{FIRST_HOST_OCTET + index}",
        )
        port = f"{self.prefix}s{index}"
        self._add_namespace(host.netns)
        # Created inside the switch namespace and moved straight into the host's.
        ip(self.switch, "link", "add", port, "type", "veth", "peer", "name", host.interface)
        ip(self.switch, "link", "set", host.interface, "netns", host.netns)
        ip(self.switch, "link", "set", port, "master", BRIDGE, "up")
        ip(host.netns, "addr", "add", f"{host.address}/24", "dev", host.interface)
        ip(host.netns, "link", "set", host.interface, "up")
        self.hosts[label] = host
        return host

    def set_link(self, host: Host, *, up: bool) -> None:
        """Cut (or restore) the host's only link, from inside its own namespace."""
        ip(host.netns, "link", "set", host.interface, "up" if up else "down")

    def add_delay(self, host: Host, delay_ms: float) -> None:
        """netem delay on everything the host sends; NetemUnavailable without sch_netem."""
        try:
            run(
                *host.command("tc", "qdisc", "add", "dev", host.interface, "root", "netem"),
                "delay",
                f"{delay_ms}ms",
            )
        except NetnsError as error:
            if "unknown" in str(error).lower() or "not found" in str(error).lower():
                raise NetemUnavailable(f"no netem in this kernel: {error}") from error
            raise

    def clear_delay(self, host: Host) -> None:
        with contextlib.suppress(NetnsError):  # nothing to remove
            run(*host.command("tc", "qdisc", "del", "dev", host.interface, "root"))

    def destroy(self) -> None:
        """Delete every namespace of the lab; their veths and the bridge go with them."""
        for name in reversed(self.namespaces):
            with contextlib.suppress(NetnsError):
                run("ip", "netns", "delete", name)
        self.namespaces.clear()
        self.hosts.clear()
        atexit.unregister(self.destroy)
