"""ETSI GS QKD 014 requests per second and latency at one node's KME (mutual TLS).

Two nodes with SAEs on a fast `perfect` link run BBM92 (real processes, as `qnemu up`).
So that the figure is the KME's and not the rate of key generation, both key stores
are seeded before the start with the same 32 Mbit of key (as a stored block would be);
BBM92 keeps running beside the KMEs. Then, over HTTPS with the SAEs' client certificates and
`--concurrency` requests in flight (keep-alive connections, as an SAE's client library
would keep), for `--seconds` each:
  status     GET  /api/v1/keys/{slave}/status at the master's KME
  enc_keys   POST /api/v1/keys/{slave}/enc_keys {number: 1, size: 256}, then the slave's
             SAE fetches the same key by key_ID (POST dec_keys) at its own KME, so the
             key store is used as in production (each key delivered once at each end).
Reported: requests/s and latency p50/p99 per kind (target ≥ 500 requests/s).

    .venv/bin/python bench/etsi_kme.py [--quick] [--concurrency 16] [--seconds 10]
"""

import argparse
import asyncio
import json
import secrets
import ssl
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Network, cpu_s, percentiles, print_table, write_results

from qnemu.keys import KeyStore, key_store_path
from qnemu.launch.pki import pki_paths
from qnemu.topology import parse_topology

__all__ = ["main"]

TARGET_PER_S = 500
API = "/api/v1/keys"
MASTER, SLAVE = "alice_app", "bob_app"
SEED_BYTES = 4 << 20


def seed_key_stores(run_dir: Path) -> None:
    """The same key material in both nodes' stores, as if QKD had made it already."""
    material = secrets.token_bytes(SEED_BYTES)
    for node, peer in (("alice", "bob"), ("bob", "alice")):
        store = KeyStore(key_store_path(run_dir, node), node)
        try:
            store.add_block(peer, "bench-seed/0", material)
        finally:
            store.close()


TOPOLOGY = {
    "name": "etsi-bench",
    "time_scale": 1.0,
    "seed": 5,
    "defaults": {"node": {"qubits": 8, "t1_s": None, "t2_s": None}},
    "nodes": {"alice": {"saes": [MASTER]}, "bob": {"saes": [SLAVE]}},
    # Key comes from the seeded stores; BBM92 runs beside the KMEs at a modest rate.
    "links": [{"nodes": ["alice", "bob"], "model": "perfect", "t_cycle_s": 1e-3}],
}


def tls(run_dir: Path, sae: str) -> ssl.SSLContext:
    pki = pki_paths(run_dir)
    context = ssl.create_default_context(cafile=str(pki.ca_cert))
    context.load_cert_chain(str(pki.cert(sae)), str(pki.key(sae)))
    return context


def kme_url(run_dir: Path, node: str) -> str:
    return json.loads((run_dir / "kme" / f"{node}.json").read_text())["kme_url"]


async def wait_for_key(session: aiohttp.ClientSession, url: str, bits: int, timeout_s: float):
    deadline = time.monotonic() + timeout_s
    while True:
        async with session.get(f"{url}{API}/{SLAVE}/status") as reply:
            status = await reply.json()
        if status.get("stored_key_count", 0) * status.get("key_size", 256) >= bits:
            return status
        if time.monotonic() > deadline:
            raise TimeoutError(f"not enough key after {timeout_s} s: {status}")
        await asyncio.sleep(0.5)


async def hammer(request, seconds: float, concurrency: int) -> dict:
    """`concurrency` workers call `request()` until `seconds` pass; latencies and errors."""
    latencies: list[float] = []
    errors: dict[str, int] = {}
    stop_at = time.monotonic() + seconds

    async def worker() -> None:
        while time.monotonic() < stop_at:
            started = time.perf_counter()
            try:
                await request()
            except Exception as error:  # counted, shown: a benchmark must not hide failures
                errors[type(error).__name__] = errors.get(type(error).__name__, 0) + 1
                continue
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall_s = time.perf_counter() - started
    return {
        "requests": len(latencies),
        "wall_s": wall_s,
        "per_s": len(latencies) / wall_s,
        "latency_s": percentiles(latencies),
        "errors": errors,
    }


async def measure(run_dir: Path, seconds: float, concurrency: int, pids: dict[str, int]) -> dict:
    master_url, slave_url = kme_url(run_dir, "alice"), kme_url(run_dir, "bob")
    limit = aiohttp.TCPConnector(limit=concurrency, ssl=tls(run_dir, MASTER))
    slave_limit = aiohttp.TCPConnector(limit=concurrency, ssl=tls(run_dir, SLAVE))
    async with (
        aiohttp.ClientSession(connector=limit) as master,
        aiohttp.ClientSession(connector=slave_limit) as slave,
    ):
        # Each end offers the half of the shared units it owns (docs/etsi-014.md).
        await wait_for_key(master, master_url, SEED_BYTES * 8 // 4, timeout_s=60)

        async def status() -> None:
            async with master.get(f"{master_url}{API}/{SLAVE}/status") as reply:
                if reply.status != 200:
                    raise RuntimeError(f"status {reply.status}")
                await reply.read()

        async def enc_then_dec() -> None:
            body = {"number": 1, "size": 256}
            async with master.post(f"{master_url}{API}/{SLAVE}/enc_keys", json=body) as reply:
                if reply.status != 200:
                    raise RuntimeError(f"enc_keys {reply.status}")
                keys = (await reply.json())["keys"]
            ids = {"key_IDs": [{"key_ID": key["key_ID"]} for key in keys]}
            async with slave.post(f"{slave_url}{API}/{MASTER}/dec_keys", json=ids) as reply:
                if reply.status != 200:
                    raise RuntimeError(f"dec_keys {reply.status}")
                if (await reply.json())["keys"][0]["key"] != keys[0]["key"]:
                    raise RuntimeError("the two ends got different keys")

        cpu_before = {name: cpu_s(pid) for name, pid in pids.items()}
        figures = {"status": await hammer(status, seconds, concurrency)}
        figures["enc_then_dec"] = await hammer(enc_then_dec, seconds, concurrency)
        figures["node_cpu_s"] = {n: cpu_s(p) - cpu_before[n] for n, p in pids.items()}
    # An enc_then_dec is two requests, one at each KME.
    figures["enc_then_dec"]["http_requests_per_s"] = 2 * figures["enc_then_dec"]["per_s"]
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 s per kind instead of 10")
    parser.add_argument("--seconds", type=float, help="seconds per request kind")
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight")
    args = parser.parse_args(argv)
    seconds = args.seconds or (3.0 if args.quick else 10.0)
    topology = parse_topology(TOPOLOGY, origin="etsi benchmark topology")
    with tempfile.TemporaryDirectory(prefix="qnemu-bench-") as temp:
        seed_key_stores(Path(temp))  # before the nodes start and open their stores
        with Network(topology, Path(temp)) as net:
            pids = {name: pid for name, pid in net.pids().items() if name in ("alice", "bob")}
            figures = asyncio.run(measure(Path(temp), seconds, args.concurrency, pids))
    rows = [
        [
            kind,
            figures[kind]["requests"],
            figures[kind]["per_s"],
            1e3 * figures[kind]["latency_s"]["p50"],
            1e3 * figures[kind]["latency_s"]["p99"],
            sum(figures[kind]["errors"].values()),
        ]
        for kind in ("status", "enc_then_dec")
    ]
    print_table(
        f"ETSI GS QKD 014 at the KMEs, {args.concurrency} in flight, mutual TLS",
        ["kind", "requests", "per s", "p50 ms", "p99 ms", "errors"],
        rows,
    )
    status_rate = figures["status"]["per_s"]
    http_rate = figures["enc_then_dec"]["http_requests_per_s"]
    verdict = {True: "met", False: "NOT met"}
    print(
        f"\ntarget ≥ {TARGET_PER_S} requests/s: status {status_rate:,.0f}/s "
        f"({verdict[status_rate >= TARGET_PER_S]}); key delivery (enc_keys + dec_keys) "
        f"{http_rate:,.0f} requests/s ({verdict[http_rate >= TARGET_PER_S]})"
    )
    write_results(
        "etsi_kme",
        {"parameters": {"seconds": seconds, "concurrency": args.concurrency}, **figures},
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
