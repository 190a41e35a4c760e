"""CurveZMQ for every socket of a run: who a process is, and whom it accepts.

Each process of a run has a Curve key pair in `RUN_DIR/zmq/` (`<name>.key` public,
`<name>.key_secret` secret, mode 0600), and so do the run's clients (`client`: the CLI,
the Python client, apps, the launcher). A process's ROUTER is a Curve server that
accepts only the public keys its `CurveIdentity.accepts` lists; every DEALER proves its
own key and checks the server's. A run started with `--insecure` has no keys and
sockets talk plain text.
"""

import os
from dataclasses import dataclass, field
from pathlib import Path

import zmq
import zmq.auth

__all__ = [
    "CLIENT",
    "CurveIdentity",
    "apply_client",
    "client_identity",
    "generate_keys",
    "keys_dir",
    "load_public",
    "process_identity",
]

CLIENT = "client"  # the key pair every client of a run uses
KEYS_DIR = "zmq"


def keys_dir(run_dir: Path) -> Path:
    return Path(run_dir) / KEYS_DIR


def generate_keys(run_dir: Path, names: list[str]) -> None:
    """A key pair per name (and for the clients), secrets readable by the owner only."""
    directory = keys_dir(run_dir)
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    for name in [*names, CLIENT]:
        if (directory / f"{name}.key_secret").exists():
            continue
        _public, secret = zmq.auth.create_certificates(directory, name)
        os.chmod(secret, 0o600)


def load_public(run_dir: Path, name: str) -> bytes:
    public, _ = zmq.auth.load_certificate(keys_dir(run_dir) / f"{name}.key")
    return public


def _load_pair(run_dir: Path, name: str) -> tuple[bytes, bytes]:
    public, secret = zmq.auth.load_certificate(keys_dir(run_dir) / f"{name}.key_secret")
    if secret is None:
        raise ValueError(f"{name}: no secret key in {keys_dir(run_dir)}")
    return public, secret


@dataclass(frozen=True)
class CurveIdentity:
    """A process's own key pair, its peers' public keys, and the keys it accepts."""

    public: bytes
    secret: bytes
    servers: dict[str, bytes] = field(default_factory=dict)  # peer name -> its public key
    accepts: frozenset[bytes] = frozenset()  # client public keys (z85) allowed to connect

    def callback(self, domain: str, client_key: bytes) -> bool:
        """ZAP credentials provider: is this client one we talk to?"""
        return client_key in self.accepts

    def serve(self, socket: zmq.Socket) -> None:
        socket.curve_secretkey = self.secret
        socket.curve_publickey = self.public
        socket.curve_server = True

    def connect_to(self, socket: zmq.Socket, peer: str) -> None:
        try:
            server = self.servers[peer]
        except KeyError:
            raise ValueError(f"no public key for {peer!r}: it is not part of this run") from None
        socket.curve_secretkey = self.secret
        socket.curve_publickey = self.public
        socket.curve_serverkey = server


def process_identity(
    run_dir: Path, name: str, peers: list[str], accepts: list[str]
) -> CurveIdentity:
    """The identity of process `name`: it may reach `peers`, and accepts `accepts` + clients."""
    public, secret = _load_pair(run_dir, name)
    return CurveIdentity(
        public=public,
        secret=secret,
        servers={peer: load_public(run_dir, peer) for peer in peers},
        accepts=frozenset(load_public(run_dir, who) for who in [*accepts, CLIENT]),
    )


def client_identity(run_dir: Path, processes: list[str]) -> CurveIdentity | None:
    """The clients' identity, or None when the run is insecure (no keys)."""
    if not (keys_dir(run_dir) / f"{CLIENT}.key_secret").exists():
        return None
    public, secret = _load_pair(run_dir, CLIENT)
    return CurveIdentity(
        public, secret, servers={name: load_public(run_dir, name) for name in processes}
    )


def apply_client(socket: zmq.Socket, identity: CurveIdentity | None, peer: str) -> None:
    """Make a client DEALER speak Curve to `peer` (no-op for an insecure run)."""
    if identity is not None:
        identity.connect_to(socket, peer)
