"""CurveZMQ for every socket of a run: who a process is, and whom it accepts.

Each process of a run has a Curve key pair in `RUN_DIR/zmq/` (`<name>.key` public,
`<name>.key_secret` secret, mode 0600), and so do the run's clients (`client`: the CLI,
the Python client, apps, the launcher). A process's ROUTER is a Curve server that
accepts only the public keys its `CurveIdentity.accepts` lists; every DEALER proves its
own key and checks the server's. A run started with `--insecure` has no keys and
sockets talk plain text.

In a container the run directory holds only the public keys; each process's own key
pair is mounted as a secret in the plan's `secrets_dir`. A process accepts its own public
key too, so a container's health check can prove itself with the secret it already has
instead of holding the clients' key.
"""

import os
from collections.abc import Mapping
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
    "self_identity",
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


def _load_pair(directory: Path, name: str) -> tuple[bytes, bytes]:
    public, secret = zmq.auth.load_certificate(Path(directory) / f"{name}.key_secret")
    if secret is None:
        raise ValueError(f"{name}: no secret key in {directory}")
    return public, secret


def _secrets(run_dir: Path, secrets_dir: Path | str | None) -> Path:
    """Where a process's own key pair is: its mounted secrets, else RUN_DIR/zmq."""
    return Path(secrets_dir) if secrets_dir is not None else keys_dir(run_dir)


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
    run_dir: Path,
    name: str,
    peers: list[str],
    accepts: list[str],
    secrets_dir: Path | str | None = None,
    public_keys: Mapping[str, str] | None = None,
) -> CurveIdentity:
    """The identity of process `name`: it may reach `peers`, and accepts `accepts`, the
    clients and itself (its health check). Public keys come from `public_keys` when
    given (a container's plan), else from RUN_DIR/zmq."""

    def public_of(who: str) -> bytes:
        if public_keys is None:
            return load_public(run_dir, who)
        try:
            return public_keys[who].encode()
        except KeyError:
            raise ValueError(f"the plan has no public key for {who!r}") from None

    public, secret = _load_pair(_secrets(run_dir, secrets_dir), name)
    return CurveIdentity(
        public=public,
        secret=secret,
        servers={peer: public_of(peer) for peer in peers},
        accepts=frozenset(public_of(who) for who in [*accepts, CLIENT]) | {public},
    )


def self_identity(run_dir: Path, name: str, secrets_dir: Path | str | None) -> CurveIdentity:
    """Process `name`'s own key pair, as a client of itself (a container's health check)."""
    public, secret = _load_pair(_secrets(run_dir, secrets_dir), name)
    return CurveIdentity(public, secret, servers={name: public})


def client_identity(
    run_dir: Path, processes: list[str], public_keys: Mapping[str, str] | None = None
) -> CurveIdentity | None:
    """The clients' identity, or None when the run is insecure (no keys). The processes'
    public keys come from `public_keys` (the plan's) when given, else RUN_DIR/zmq."""
    if not (keys_dir(run_dir) / f"{CLIENT}.key_secret").exists():
        return None
    public, secret = _load_pair(keys_dir(run_dir), CLIENT)
    if public_keys is not None:
        servers = {name: public_keys[name].encode() for name in processes}
    else:
        servers = {name: load_public(run_dir, name) for name in processes}
    return CurveIdentity(public, secret, servers=servers)


def apply_client(socket: zmq.Socket, identity: CurveIdentity | None, peer: str) -> None:
    """Make a client DEALER speak Curve to `peer` (no-op for an insecure run)."""
    if identity is not None:
        identity.connect_to(socket, peer)
