"""Two KMEs over HTTPS with mutual TLS, driven by the unmodified `etsi-qkd-014-client`.

The run's PKI is made by `ensure_pki`; alice_app (at node A) is master, bob_app (at B)
is slave; the reservation goes from KME A to KME B by a direct call, as the node layer's
classical channel would carry it.
"""

import asyncio
import base64
import random
import ssl
import stat
from pathlib import Path

import pytest
import requests
from cryptography import x509
from etsi_qkd_014_client import QKD014Client

from qnemu.keys import KeyStore, Reservation
from qnemu.kme import KeyDeliveryApi, create_app, kme_ssl_context, serve_kme
from qnemu.launch.pki import ensure_pki, kme_name

SAES = {"alice_app": "A", "bob_app": "B"}


@pytest.fixture
async def kmes(tmp_path: Path):
    pki = ensure_pki(tmp_path, nodes=["A", "B"], saes=SAES)
    store_a = KeyStore(tmp_path / "keys" / "A.sqlite", "A")
    store_b = KeyStore(tmp_path / "keys" / "B.sqlite", "B")
    material = random.Random(14).randbytes(8192)
    store_a.add_block("B", "A-B/0", material)
    store_b.add_block("A", "A-B/0", material)

    async def a_to_b(peer: str, reservation: Reservation) -> None:
        store_b.reserve_for("A", Reservation.from_dict(reservation.to_dict()))

    async def b_to_a(peer: str, reservation: Reservation) -> None:
        store_a.reserve_for("B", Reservation.from_dict(reservation.to_dict()))

    servers = {}
    for node, saes, store, to_peer in (
        ("A", {"alice_app"}, store_a, a_to_b),
        ("B", {"bob_app"}, store_b, b_to_a),
    ):
        api = KeyDeliveryApi(node, saes, SAES.get, store, to_peer)
        context = kme_ssl_context(pki.ca_cert, pki.cert(kme_name(node)), pki.key(kme_name(node)))
        servers[node] = await serve_kme(create_app(api), "127.0.0.1", 0, context)
    yield pki, servers
    for server in servers.values():
        await server.stop()
    store_a.close()
    store_b.close()


def client_for(pki, sae_id: str, server) -> QKD014Client:
    return QKD014Client(
        f"127.0.0.1:{server.port}",
        str(pki.cert(sae_id)),
        str(pki.key(sae_id)),
        str(pki.ca_cert),
    )


async def test_unmodified_etsi_client_gets_matching_keys_at_both_ends(kmes) -> None:
    pki, servers = kmes
    alice = client_for(pki, "alice_app", servers["A"])
    bob = client_for(pki, "bob_app", servers["B"])

    code, status = await asyncio.to_thread(alice.get_status, "bob_app")
    assert code == 200
    assert (status.source_kme_id, status.target_kme_id) == ("A", "B")
    assert status.stored_key_count > 0 and status.max_sae_id_count == 0

    code, container = await asyncio.to_thread(alice.get_key, "bob_app", 3, 512)
    assert code == 200
    sent = {key.key_id: base64.b64decode(key.key) for key in container.keys}
    assert len(sent) == 3 and all(len(material) == 64 for material in sent.values())

    code, container = await asyncio.to_thread(bob.get_key_with_key_IDs, "alice_app", list(sent))
    assert code == 200
    assert {key.key_id: base64.b64decode(key.key) for key in container.keys} == sent

    # Again: never twice.
    code, error = await asyncio.to_thread(bob.get_key_with_key_IDs, "alice_app", list(sent)[:1])
    assert code == 400 and "delivered already" in error.message

    # The simplified GET form, and the reverse direction.
    code, container = await asyncio.to_thread(alice.get_key, "bob_app")
    assert code == 200 and len(base64.b64decode(container.keys[0].key)) == 32
    code, container = await asyncio.to_thread(bob.get_key, "alice_app", 1, 128)
    assert code == 200
    code, fetched = await asyncio.to_thread(
        alice.get_key_with_key_IDs, "bob_app", [container.keys[0].key_id]
    )
    assert code == 200 and fetched.keys[0].key == container.keys[0].key


async def test_a_kme_refuses_saes_it_does_not_serve_and_clients_without_certificates(
    kmes,
) -> None:
    pki, servers = kmes
    # bob_app's valid certificate at KME A: authenticated, but not one of A's SAEs.
    code, error = await asyncio.to_thread(
        client_for(pki, "bob_app", servers["A"]).get_status, "alice_app"
    )
    assert code == 401 and "not registered" in error.message
    # A KME certificate is no SAE either.
    intruder = client_for(pki, kme_name("B"), servers["A"])
    code, _ = await asyncio.to_thread(intruder.get_key, "bob_app")
    assert code == 401
    # No client certificate: the TLS handshake itself fails.
    url = f"{servers['A'].url}/api/v1/keys/bob_app/status"
    with pytest.raises(requests.exceptions.RequestException):
        await asyncio.to_thread(requests.get, url, verify=str(pki.ca_cert), timeout=5)


def test_pki_files_modes_and_names(tmp_path: Path) -> None:
    pki = ensure_pki(tmp_path, nodes=["A"], saes=["alice_app"])
    for entity in ("ca", "kme-A", "alice_app"):
        assert stat.S_IMODE(pki.key(entity).stat().st_mode) == 0o600
        assert pki.cert(entity).is_file()
    kme = x509.load_pem_x509_certificate(pki.cert("kme-A").read_bytes())
    names = kme.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {"localhost", "A"} <= set(names.get_values_for_type(x509.DNSName))
    assert [str(ip) for ip in names.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    sae = x509.load_pem_x509_certificate(pki.cert("alice_app").read_bytes())
    assert sae.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == "alice_app"
    # Verifies against the CA the way an SAE's TLS stack would.
    context = ssl.create_default_context(cafile=str(pki.ca_cert))
    context.load_cert_chain(str(pki.cert("alice_app")), str(pki.key("alice_app")))
    # Running it again keeps the CA and issues only what is missing.
    ca_before = pki.ca_cert.read_bytes()
    ensure_pki(tmp_path, nodes=["A", "B"], saes=["alice_app", "bob_app"])
    assert pki.ca_cert.read_bytes() == ca_before
    assert pki.cert("kme-B").is_file() and pki.key("bob_app").is_file()
    with pytest.raises(ValueError):
        ensure_pki(tmp_path, nodes=["A"], saes=["../evil"])
    with pytest.raises(ValueError):
        ensure_pki(tmp_path, nodes=["A"], saes=["kme-A"])
