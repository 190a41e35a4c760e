"""The ETSI 014 API through aiohttp's test client: every endpoint, every refusal."""

import asyncio
import base64
import random
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from qnemu.keys import KeyStore, Reservation
from qnemu.kme import KeyDeliveryApi, KmeLimits, create_app

SAE_HEADER = "X-Test-SAE"  # stands in for the client certificate's CN in these tests
SAES = {"alice_app": "A", "bob_app": "B", "carol_app": "B", "dave_app": "A", "zed_app": "Z"}
POOL_BYTES = 4096


def by_header(request: web.Request) -> str | None:
    return request.headers.get(SAE_HEADER)


class Link:
    """Two KMEs (A, B) over two key stores, the reservation handed across directly."""

    def __init__(self, tmp_path: Path) -> None:
        self.store_a = KeyStore(tmp_path / "a.sqlite", "A", synchronous="NORMAL")
        self.store_b = KeyStore(tmp_path / "b.sqlite", "B", synchronous="NORMAL")
        material = random.Random(5).randbytes(POOL_BYTES)
        self.store_a.add_block("B", "A-B/0", material, unit_bits=1024)
        self.store_b.add_block("A", "A-B/0", material, unit_bits=1024)
        self.peer_down = False
        self.jitter = random.Random(3)
        limits = KmeLimits(max_key_per_request=8)
        self.api_a = KeyDeliveryApi(
            "A", {"alice_app", "dave_app"}, SAES.get, self.store_a, self.to_b, limits
        )
        self.api_b = KeyDeliveryApi(
            "B", {"bob_app", "carol_app"}, SAES.get, self.store_b, self.to_a, limits
        )

    async def to_b(self, peer: str, reservation: Reservation) -> None:
        assert peer == "B"
        if self.peer_down:
            raise ConnectionError("classical channel to B is down")
        # Reservations of concurrent requests reach B in any order.
        await asyncio.sleep(self.jitter.uniform(0, 0.01))
        self.store_b.reserve_for("A", reservation)

    async def to_a(self, peer: str, reservation: Reservation) -> None:
        self.store_a.reserve_for("B", reservation)


@pytest.fixture
async def kmes(tmp_path: Path):
    link = Link(tmp_path)
    client_a = TestClient(TestServer(create_app(link.api_a, identify=by_header)))
    client_b = TestClient(TestServer(create_app(link.api_b, identify=by_header)))
    await client_a.start_server()
    await client_b.start_server()
    yield link, client_a, client_b
    await client_a.close()
    await client_b.close()
    link.store_a.close()
    link.store_b.close()


def as_sae(sae_id: str) -> dict[str, str]:
    return {SAE_HEADER: sae_id}


async def expect_error(response, status: int) -> str:
    assert response.status == status
    body = await response.json()
    assert isinstance(body["message"], str) and body["message"]
    return body["message"]


async def test_status_reports_the_spec_fields(kmes) -> None:
    link, client_a, _ = kmes
    response = await client_a.get("/api/v1/keys/bob_app/status", headers=as_sae("alice_app"))
    assert response.status == 200
    status = await response.json()
    assert status == {
        "source_KME_ID": "A",
        "target_KME_ID": "B",
        "master_SAE_ID": "alice_app",
        "slave_SAE_ID": "bob_app",
        "key_size": 256,
        "stored_key_count": link.store_a.pool_bits("B", offerable=True) // 256,
        "max_key_count": 100_000,
        "max_key_per_request": 8,
        "max_key_size": 8192,
        "min_key_size": 64,
        "max_SAE_ID_count": 0,
    }
    assert status["stored_key_count"] > 0


async def test_enc_keys_post_then_dec_keys_gives_the_same_keys(kmes) -> None:
    _, client_a, client_b = kmes
    response = await client_a.post(
        "/api/v1/keys/bob_app/enc_keys",
        json={"number": 3, "size": 512, "extension_optional": [{"route": "direct"}]},
        headers=as_sae("alice_app"),
    )
    assert response.status == 200
    sent = (await response.json())["keys"]
    assert len(sent) == 3
    assert all(len(base64.b64decode(key["key"])) == 64 for key in sent)
    response = await client_b.post(
        "/api/v1/keys/alice_app/dec_keys",
        json={"key_IDs": [{"key_ID": key["key_ID"]} for key in sent]},
        headers=as_sae("bob_app"),
    )
    assert response.status == 200
    assert (await response.json())["keys"] == sent
    # Never twice.
    response = await client_b.post(
        "/api/v1/keys/alice_app/dec_keys",
        json={"key_IDs": [{"key_ID": sent[0]["key_ID"]}]},
        headers=as_sae("bob_app"),
    )
    assert "delivered already" in await expect_error(response, 400)


async def test_concurrent_requests_all_match_at_the_other_end(kmes) -> None:
    _, client_a, client_b = kmes

    async def fetch_pair() -> tuple[list, list]:
        sent = await client_a.post(
            "/api/v1/keys/bob_app/enc_keys",
            json={"number": 2, "size": 200},
            headers=as_sae("alice_app"),
        )
        keys = (await sent.json())["keys"]
        received = await client_b.post(
            "/api/v1/keys/alice_app/dec_keys",
            json={"key_IDs": [{"key_ID": k["key_ID"]} for k in keys]},
            headers=as_sae("bob_app"),
        )
        return keys, (await received.json())["keys"]

    pairs = await asyncio.gather(*(fetch_pair() for _ in range(20)))
    assert all(sent == received for sent, received in pairs)
    materials = [key["key"] for sent, _ in pairs for key in sent]
    assert len(set(materials)) == 40


async def test_get_forms_use_query_parameters_and_defaults(kmes) -> None:
    _, client_a, client_b = kmes
    response = await client_a.get(
        "/api/v1/keys/bob_app/enc_keys?number=2&size=128", headers=as_sae("alice_app")
    )
    assert response.status == 200
    keys = (await response.json())["keys"]
    assert [len(base64.b64decode(k["key"])) for k in keys] == [16, 16]
    response = await client_a.get("/api/v1/keys/bob_app/enc_keys", headers=as_sae("alice_app"))
    default = (await response.json())["keys"]
    assert len(default) == 1 and len(base64.b64decode(default[0]["key"])) == 32
    for key in [*keys, *default]:
        response = await client_b.get(
            f"/api/v1/keys/alice_app/dec_keys?key_ID={key['key_ID']}", headers=as_sae("bob_app")
        )
        assert response.status == 200
        assert (await response.json())["keys"] == [key]


async def test_both_directions_at_once(kmes) -> None:
    _, client_a, client_b = kmes
    to_bob = await client_a.post(
        "/api/v1/keys/bob_app/enc_keys", json={"number": 2}, headers=as_sae("alice_app")
    )
    to_alice = await client_b.post(
        "/api/v1/keys/alice_app/enc_keys", json={"number": 2}, headers=as_sae("bob_app")
    )
    keys_to_bob = (await to_bob.json())["keys"]
    keys_to_alice = (await to_alice.json())["keys"]
    fetched = await client_a.post(
        "/api/v1/keys/bob_app/dec_keys",
        json={"key_IDs": [{"key_ID": k["key_ID"]} for k in keys_to_alice]},
        headers=as_sae("alice_app"),
    )
    assert (await fetched.json())["keys"] == keys_to_alice
    assert not {k["key"] for k in keys_to_bob} & {k["key"] for k in keys_to_alice}


async def test_an_sae_cannot_fetch_keys_addressed_to_another(kmes) -> None:
    _, client_a, client_b = kmes
    response = await client_a.post(
        "/api/v1/keys/bob_app/enc_keys", json={"number": 1}, headers=as_sae("alice_app")
    )
    key_id = (await response.json())["keys"][0]["key_ID"]
    path = f"/api/v1/keys/alice_app/dec_keys?key_ID={key_id}"
    await expect_error(await client_b.get(path, headers=as_sae("carol_app")), 401)
    # alice_app is not attached to B: B does not serve her at all.
    await expect_error(await client_b.get(path, headers=as_sae("alice_app")), 401)
    # A key from another master is unknown for this one.
    other = f"/api/v1/keys/dave_app/dec_keys?key_ID={key_id}"
    await expect_error(await client_b.get(other, headers=as_sae("bob_app")), 400)
    # bob_app still gets it, once.
    assert (await client_b.get(path, headers=as_sae("bob_app"))).status == 200


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/api/v1/keys/bob_app/status", None),
        ("GET", "/api/v1/keys/bob_app/enc_keys", None),
        ("POST", "/api/v1/keys/bob_app/enc_keys", {"number": 1}),
        ("POST", "/api/v1/keys/alice_app/dec_keys", {"key_IDs": []}),
    ],
)
async def test_unidentified_or_foreign_callers_get_401(kmes, method, path, body) -> None:
    _, client_a, _ = kmes
    await expect_error(await client_a.request(method, path, json=body), 401)
    await expect_error(
        await client_a.request(method, path, json=body, headers=as_sae("bob_app")), 401
    )


@pytest.mark.parametrize(
    ("path", "body", "fragment"),
    [
        ("/api/v1/keys/nobody/enc_keys", {"number": 1}, "unknown slave_SAE_ID"),
        ("/api/v1/keys/dave_app/enc_keys", {"number": 1}, "attached to this KME"),
        ("/api/v1/keys/bob_app/enc_keys", {"number": 0}, "number"),
        ("/api/v1/keys/bob_app/enc_keys", {"number": 9}, "number"),
        ("/api/v1/keys/bob_app/enc_keys", {"number": "2"}, "KeyRequest"),
        ("/api/v1/keys/bob_app/enc_keys", {"size": 100}, "multiple of 8"),
        ("/api/v1/keys/bob_app/enc_keys", {"size": 16384}, "size"),
        ("/api/v1/keys/bob_app/enc_keys", {"size": 32}, "size"),
        ("/api/v1/keys/bob_app/enc_keys", {"nombre": 1}, "KeyRequest"),
        ("/api/v1/keys/bob_app/enc_keys", [1, 2], "KeyRequest"),
        (
            "/api/v1/keys/bob_app/enc_keys",
            {"additional_slave_SAE_IDs": ["carol_app"]},
            "multicast",
        ),
        (
            "/api/v1/keys/bob_app/enc_keys",
            {"extension_mandatory": [{"abc_route_type": "direct"}]},
            "extension_mandatory",
        ),
        ("/api/v1/keys/bob_app/dec_keys", {"key_IDs": [{"key_ID": "zzz"}]}, "not a UUID"),
        ("/api/v1/keys/bob_app/dec_keys", {"key_IDs": []}, "no key_ID"),
        ("/api/v1/keys/bob_app/dec_keys", {"keys": []}, "KeyIDsRequest"),
        ("/api/v1/keys/nobody/dec_keys", {"key_IDs": []}, "unknown master_SAE_ID"),
        (
            "/api/v1/keys/bob_app/dec_keys",
            {"key_IDs": [{"key_ID": "9a8b7c6d-0000-4000-8000-000000000000"}]},
            "no key",
        ),
    ],
)
async def test_bad_requests_get_400_with_a_message(kmes, path, body, fragment) -> None:
    _, client_a, _ = kmes
    response = await client_a.post(path, json=body, headers=as_sae("alice_app"))
    assert fragment in await expect_error(response, 400)


async def test_malformed_bodies_and_queries_get_400(kmes) -> None:
    _, client_a, _ = kmes
    headers = {**as_sae("alice_app"), "Content-Type": "application/json"}
    response = await client_a.post("/api/v1/keys/bob_app/enc_keys", data=b"{nope", headers=headers)
    await expect_error(response, 400)
    response = await client_a.get("/api/v1/keys/bob_app/enc_keys?number=two", headers=headers)
    await expect_error(response, 400)
    response = await client_a.get("/api/v1/keys/bob_app/dec_keys", headers=headers)
    await expect_error(response, 400)
    response = await client_a.get("/api/v1/keys/bob_app/nothing", headers=headers)
    await expect_error(response, 404)


async def test_exhausted_pool_and_unreachable_peer_get_503(kmes) -> None:
    link, client_a, _ = kmes
    headers = as_sae("alice_app")
    link.peer_down = True
    response = await client_a.post(
        "/api/v1/keys/bob_app/enc_keys", json={"number": 2}, headers=headers
    )
    assert "did not confirm" in await expect_error(response, 503)
    # Those bits went to nobody and are never offered again; B reserved nothing.
    assert link.store_a.key_counts() == {("master", "discarded"): 2}
    assert link.store_b.key_counts() == {}
    link.peer_down = False
    assert link.store_a.pool_bits("B", offerable=True) < 8 * 8192
    response = await client_a.post(
        "/api/v1/keys/bob_app/enc_keys", json={"number": 8, "size": 8192}, headers=headers
    )
    assert "insufficient" in await expect_error(response, 503)
    response = await client_a.get("/api/v1/keys/zed_app/enc_keys", headers=headers)
    assert "insufficient" in await expect_error(response, 503)  # no link to Z: no key yet
    assert link.api_a.stats[("enc_keys", 503)] == 3


async def test_unexpected_failures_become_503_not_a_crash(kmes) -> None:
    link, client_a, _ = kmes

    def broken(*_: object, **__: object) -> int:
        raise RuntimeError("disk on fire")

    link.store_a.pool_bits = broken  # type: ignore[method-assign]
    response = await client_a.get("/api/v1/keys/bob_app/status", headers=as_sae("alice_app"))
    assert await expect_error(response, 503) == "internal error of the KME"
