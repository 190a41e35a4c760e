"""The run's PKI: a CA, a server certificate per KME and a client certificate per SAE.

Layout under RUN_DIR/pki/: `ca.crt` (and `ca.key`, to issue more later), `kme-<node>.crt`
and `.key` (server and client authentication; SAN IP 127.0.0.1, DNS localhost and the
node name), `<SAE_ID>.crt` and `.key` (client authentication, CN = SAE_ID: the KME
identifies the SAE by it). ECDSA P-256 keys, written with mode 0600 and never logged.
Calling `ensure_pki` again keeps what exists and issues only what is missing.
"""

import datetime
import ipaddress
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "CA_NAME",
    "PKI_DIR",
    "PkiPaths",
    "ensure_pki",
    "kme_name",
    "pki_paths",
]

PKI_DIR = "pki"
CA_NAME = "ca"
CA_VALIDITY_DAYS = 3650
LEAF_VALIDITY_DAYS = 825
# Tolerates clocks a little behind the one that issued the certificate.
BACKDATE = datetime.timedelta(minutes=5)
PRIVATE_FILE_MODE = 0o600
PKI_DIR_MODE = 0o700
# SAE_IDs become file names and certificate CNs: keep them to a safe alphabet.
ENTITY_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class PkiPaths:
    """Where the PKI files of a run are."""

    directory: Path
    # Where the private keys are, when not beside the certificates (a container's secrets).
    key_directory: Path | None = None

    @property
    def ca_cert(self) -> Path:
        return self.directory / f"{CA_NAME}.crt"

    @property
    def ca_key(self) -> Path:
        return self.directory / f"{CA_NAME}.key"

    def cert(self, entity: str) -> Path:
        """Certificate of an SAE (by SAE_ID) or a KME (by `kme_name(node)`)."""
        return self.directory / f"{entity}.crt"

    def key(self, entity: str) -> Path:
        return (self.key_directory or self.directory) / f"{entity}.key"


def kme_name(node: str) -> str:
    """The PKI entity name of a node's KME."""
    return f"kme-{node}"


def pki_paths(run_dir: Path, secrets_dir: Path | str | None = None) -> PkiPaths:
    """The run's PKI; with `secrets_dir` (a container) the private keys are there."""
    keys = Path(secrets_dir) if secrets_dir is not None else None
    return PkiPaths(Path(run_dir) / PKI_DIR, keys)


def ensure_pki(
    run_dir: Path,
    nodes: Iterable[str],
    saes: Iterable[str],
    *,
    hosts: Iterable[str] = ("localhost",),
    ip_addresses: Iterable[str] = ("127.0.0.1",),
) -> PkiPaths:
    """Create (or complete) the run's CA, KME and SAE certificates; returns their paths.

    Args:
        nodes: names of the nodes that run a KME.
        saes: SAE_IDs of every SAE of the topology.
        hosts, ip_addresses: extra subject alternative names of every KME certificate.
    """
    paths = pki_paths(run_dir)
    paths.directory.mkdir(parents=True, exist_ok=True)
    os.chmod(paths.directory, PKI_DIR_MODE)
    nodes, saes = list(nodes), list(saes)
    for entity in [*nodes, *saes]:
        if not ENTITY_ID.match(entity):
            raise ValueError(f"{entity!r} is not usable as a node name or SAE_ID in the PKI")
    clash = ({kme_name(node) for node in nodes} | {CA_NAME}) & set(saes)
    if clash:
        raise ValueError(f"SAE_IDs clash with KME or CA names: {sorted(clash)}")

    ca_key, ca_cert = _load_or_create_ca(paths)
    for node in nodes:
        name = kme_name(node)
        if not (paths.cert(name).exists() and paths.key(name).exists()):
            san: list[x509.GeneralName] = [x509.DNSName(h) for h in dict.fromkeys([*hosts, node])]
            san += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_addresses]
            usages = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            _issue(paths, name, name, ca_key, ca_cert, usages, san)
    for sae_id in saes:
        if not (paths.cert(sae_id).exists() and paths.key(sae_id).exists()):
            _issue(paths, sae_id, sae_id, ca_key, ca_cert, [ExtendedKeyUsageOID.CLIENT_AUTH], [])
    return paths


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _load_or_create_ca(
    paths: PkiPaths,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    if paths.ca_cert.exists() and paths.ca_key.exists():
        key = serialization.load_pem_private_key(paths.ca_key.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{paths.ca_key} is not an EC key")
        return key, x509.load_pem_x509_certificate(paths.ca_cert.read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "qnemu run CA")])
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - BACKDATE)
        .not_valid_after(_now() + datetime.timedelta(days=CA_VALIDITY_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_private_key(paths.ca_key, key)
    paths.ca_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key, cert


def _issue(
    paths: PkiPaths,
    entity: str,
    common_name: str,
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    usages: list[x509.ObjectIdentifier],
    san: list[x509.GeneralName],
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    public = key.public_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - BACKDATE)
        .not_valid_after(_now() + datetime.timedelta(days=LEAF_VALIDITY_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=True,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    _write_private_key(paths.key(entity), key)
    paths.cert(entity).write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _write_private_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    """PEM, created 0600 from the start (never world-readable, not even for a moment)."""
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    temporary = path.with_name(path.name + ".tmp")
    temporary.unlink(missing_ok=True)
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(pem)
    temporary.replace(path)
