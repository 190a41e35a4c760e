"""`qnemu keys SRC DST`: fetch a key pair through two KMEs, as a pair of SAEs would.

The first SAE of SRC asks its KME for keys for the first SAE of DST (`enc_keys`), then
DST's SAE asks its own KME for the same key_IDs (`dec_keys`); both over HTTPS with the
SAEs' client certificates from RUN_DIR/pki. For quick checks of a running network.
"""

import asyncio
import json
import ssl
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from qnemu.launch.pki import pki_paths
from qnemu.launch.plan import RunPlan

__all__ = ["KeyFetchError", "KeyPair", "fetch_key_pairs"]

API = "/api/v1/keys"


class KeyFetchError(Exception):
    """A KME refused, or the run has no KME where one is needed."""


@dataclass(frozen=True)
class KeyPair:
    key_ID: str
    master_key: str  # Base64, as SRC's SAE got it
    slave_key: str  # Base64, as DST's SAE got it

    @property
    def matches(self) -> bool:
        return self.master_key == self.slave_key


def _sae(plan: RunPlan, node: str) -> str:
    topology = plan.topology_model()
    if node not in topology.nodes:
        raise KeyFetchError(f"unknown node {node!r} (nodes: {', '.join(topology.nodes)})")
    saes = topology.nodes[node].saes
    if not saes:
        raise KeyFetchError(f"{node} has no SAEs, so no KME (declare saes: [...] on it)")
    return saes[0]


def _kme_url(plan: RunPlan, run_dir: Path, node: str) -> str:
    """A KME on a fixed port (a deployment) is where the plan says; one on a port of its
    choosing (`qnemu up`) wrote its URL in the run directory."""
    process = plan.process(node)
    if process.kme_port is not None:
        host = f"[{process.metrics_host}]" if ":" in process.metrics_host else process.metrics_host
        return f"https://{host}:{process.kme_port}"
    info = run_dir / "kme" / f"{node}.json"
    if not info.is_file():
        raise KeyFetchError(f"{node}'s KME has not started (no {info})")
    return json.loads(info.read_text())["kme_url"]


def _tls(run_dir: Path, sae: str) -> ssl.SSLContext:
    pki = pki_paths(run_dir)
    context = ssl.create_default_context(cafile=str(pki.ca_cert))
    context.load_cert_chain(str(pki.cert(sae)), str(pki.key(sae)))
    return context


async def _post(url: str, body: dict, context: ssl.SSLContext) -> tuple[int, dict]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, json=body, ssl=context) as reply,
    ):
        return reply.status, await reply.json(content_type=None)


async def fetch_key_pairs(
    run_dir: Path, src: str, dst: str, *, bits: int = 256, number: int = 1, wait_s: float = 0.0
) -> list[KeyPair]:
    """`number` keys of `bits` bits, from both ends; waits up to `wait_s` for key material."""
    plan = RunPlan.read(run_dir)
    master, slave = _sae(plan, src), _sae(plan, dst)
    master_kme, slave_kme = _kme_url(plan, run_dir, src), _kme_url(plan, run_dir, dst)
    deadline = time.monotonic() + wait_s
    while True:
        status, body = await _post(
            f"{master_kme}{API}/{slave}/enc_keys", {"number": number, "size": bits},
            _tls(run_dir, master),
        )  # fmt: skip
        if status == 200:
            break
        if status != 503 or time.monotonic() > deadline:
            raise KeyFetchError(f"{src}'s KME answered {status}: {body.get('message', body)}")
        await asyncio.sleep(0.5)  # not enough key yet
    keys = body["keys"]
    ids = {"key_IDs": [{"key_ID": key["key_ID"]} for key in keys]}
    status, answer = await _post(f"{slave_kme}{API}/{master}/dec_keys", ids, _tls(run_dir, slave))
    if status != 200:
        raise KeyFetchError(f"{dst}'s KME answered {status}: {answer.get('message', answer)}")
    slave_keys = {key["key_ID"]: key["key"] for key in answer["keys"]}
    return [KeyPair(key["key_ID"], key["key"], slave_keys.get(key["key_ID"], "")) for key in keys]
