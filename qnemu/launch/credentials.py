"""The credentials of an exported run: what each container gets, and what the operator keeps.

`qnemu up` keeps every key in the run directory. An export cannot: each container must
hold only its own secrets. `make_credentials` generates, once per export, a Curve key
pair per process and for the clients, and (when nodes declare SAEs) the run's PKI, and
sorts the result three ways:

- public: the Curve public keys (they travel in run.json) and the certificates a KME
  serves with (delivered as configs);
- per process: its Curve key pair and, for a node with a KME, the TLS key of its KME
  (delivered as container secrets, mounted at the plan's `secrets_dir`);
- the operator's: the CA, the SAE certificates and keys and the clients' key pair, which
  no container needs, written beside the export for whoever runs the SAEs.
"""

import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import zmq.auth

from qnemu.launch.pki import CA_NAME, PKI_DIR, ensure_pki, kme_name
from qnemu.runtime.curve import CLIENT, generate_keys, keys_dir

__all__ = ["Credentials", "make_credentials", "write_secret"]


@dataclass
class Credentials:
    public_keys: dict[str, str]  # Curve public key (z85) per process and for the clients
    # File contents by path relative to the run directory (pki/ca.crt, pki/kme-<node>.crt).
    certificates: dict[str, str] = field(default_factory=dict)
    # Per process: file name in its secrets directory -> content.
    secrets: dict[str, dict[str, str]] = field(default_factory=dict)
    # The operator's files, by path relative to the secrets folder of the export.
    operator: dict[str, str] = field(default_factory=dict)

    def write_operator_files(self, run_dir: Path) -> None:
        """Give a directory holding the run's run.json what the CLI and the Python client
        need to act on the deployment (client key, CA, SAE certificates and keys)."""
        for relative, text in self.operator.items():
            write_secret(Path(run_dir) / relative, text, base=Path(run_dir))

    def certificates_of(self, node: str) -> dict[str, str]:
        """What node `node`'s KME needs beside its secret key: the CA and its certificate."""
        own = f"{PKI_DIR}/{kme_name(node)}.crt"
        if own not in self.certificates:  # not a KME: no certificate at all
            return {}
        wanted = {f"{PKI_DIR}/{CA_NAME}.crt", own}
        return {path: text for path, text in self.certificates.items() if path in wanted}


def make_credentials(
    processes: list[str],
    kme_nodes: dict[str, str],
    saes: list[str],
    ip_addresses: Iterable[str] = ("127.0.0.1",),
) -> Credentials:
    """Fresh credentials for one export.

    Args:
        processes: every process name of the run.
        kme_nodes: node name -> the host name its KME is reached at (its service name).
        saes: every SAE_ID of the topology.
        ip_addresses: addresses SAEs may reach KMEs at (subject alternative names).
    """
    with tempfile.TemporaryDirectory(prefix="qnemu-export-") as scratch:
        run_dir = Path(scratch)
        generate_keys(run_dir, processes)
        keys = keys_dir(run_dir)
        public_keys = {}
        for name in [*processes, CLIENT]:
            public, _ = zmq.auth.load_certificate(keys / f"{name}.key")
            public_keys[name] = public.decode()
        credentials = Credentials(public_keys)
        for name in processes:
            secret = f"{name}.key_secret"
            credentials.secrets[name] = {secret: (keys / secret).read_text()}
        credentials.operator[f"zmq/{CLIENT}.key_secret"] = (
            keys / f"{CLIENT}.key_secret"
        ).read_text()
        if kme_nodes:
            hosts = ["localhost", *sorted(set(kme_nodes.values()) - set(kme_nodes))]
            paths = ensure_pki(
                run_dir, list(kme_nodes), saes, hosts=hosts, ip_addresses=ip_addresses
            )
            credentials.certificates[f"{PKI_DIR}/{CA_NAME}.crt"] = paths.ca_cert.read_text()
            for node in kme_nodes:
                entity = kme_name(node)
                credentials.certificates[f"{PKI_DIR}/{entity}.crt"] = paths.cert(entity).read_text()
                credentials.secrets[node][f"{entity}.key"] = paths.key(entity).read_text()
            for entity in [CA_NAME, *saes]:
                for path in (paths.cert(entity), paths.key(entity)):
                    credentials.operator[f"{PKI_DIR}/{path.name}"] = path.read_text()
    return credentials


def write_secret(path: Path, text: str, base: Path) -> None:
    """Write `text` at `path` readable by its owner only, every folder under `base` 0700.
    The mode is set before the content goes in, so the secret is never readable by others."""
    path.parent.mkdir(parents=True, exist_ok=True)
    folder = path.parent
    while folder != base and base in folder.parents:
        os.chmod(folder, 0o700)
        folder = folder.parent
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(descriptor, 0o600)  # an existing file keeps its mode otherwise
    with os.fdopen(descriptor, "w") as handle:
        handle.write(text)
