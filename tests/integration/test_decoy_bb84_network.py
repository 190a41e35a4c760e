"""Decoy-state BB84 links between real node processes (the shipped qkd-decoy-metro).

Two bb84_decoy fibres (dc1–hub 25 km, branch–hub 50 km, GYS parameters, 1 GHz) run with
no station; keys reach the ETSI 014 KMEs at both ends of each link (and dc1↔branch by
relay through the hub) and match; the measured detection rate and QBER agree with the
closed forms of `qnemu.qkd.decoy_bb84` within binomial bounds, the secret bits per pulse
with the asymptotic rate within the finite-size cost; an intercept–resend eavesdropper
on every pulse gets every block discarded.
"""

import asyncio
import base64
import math
import time
import urllib.request
from pathlib import Path

import pytest
from etsi_qkd_014_client import QKD014Client

from qnemu.client import QnemuClient
from qnemu.launch.faults import link_fault
from qnemu.launch.pki import pki_paths
from qnemu.node.qkd import DECOY_BLOCKS_IN_FLIGHT
from qnemu.qkd.decoy_bb84 import (
    SIGNAL,
    gain,
    qber,
    secret_key_rate_bps,
    single_photon_error,
    single_photon_yield,
)
from qnemu.topology import load_topology, shipped_topologies

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

WAIT_S = 40.0
SIGMAS = 6.0  # binomial tolerance of counted rates
# Secret bits per pulse / asymptotic GLLP rate. The key length is finite-size: on blocks
# of about 2^18 detections the Chernoff margins (ε_PE = 1e-10 each) on the ~110 decoy
# errors and the decoy gain leave 0.16 (25 km) and 0.12 (50 km) of what the measured
# values would certify (tests/unit/qkd/test_decoy_finite.py). Single blocks run in one
# process give 0.08–0.21 of the asymptotic rate at 25 km and 0.07–0.12 at 50 km (six
# seeds each: e1^U moves with the decoy error count). Pulses of up to three blocks still
# in post-processing are counted without their key, which can halve the ratio while few
# blocks are done. Before the bounds the ratio was 0.8–0.9 and the range (0.6, 1.0).
RATE_RATIO_RANGE = (0.02, 0.25)


def metro() -> dict:
    return load_topology(shipped_topologies()["qkd-decoy-metro"]).to_dict()


async def wait_for(client: QnemuClient, node: str, check, timeout_s: float = WAIT_S) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        stats = await client.stats(node)
        if check(stats["qkd"]):
            return stats
        if time.monotonic() > deadline:
            raise AssertionError(f"{node}: condition not met; stats {stats.get('qkd')}")
        await asyncio.sleep(0.5)


def etsi_client(run_dir: Path, sae_id: str, kme_url: str) -> QKD014Client:
    pki = pki_paths(run_dir)
    return QKD014Client(
        kme_url.removeprefix("https://"), str(pki.cert(sae_id)), str(pki.key(sae_id)),
        str(pki.ca_cert),
    )  # fmt: skip


def keys_of(container) -> dict[str, bytes]:
    return {key.key_id: base64.b64decode(key.key) for key in container.keys}


async def same_keys(master: QKD014Client, slave: QKD014Client, master_id: str, slave_id: str):
    deadline = time.monotonic() + WAIT_S
    while True:  # a KME offers only the units it owns: wait until it owns some
        code, container = await asyncio.to_thread(master.get_key, slave_id, 2, 256)
        if code == 200:
            break
        assert code == 503 and time.monotonic() < deadline, container.message
        await asyncio.sleep(0.5)
    sent = keys_of(container)
    code, container = await asyncio.to_thread(slave.get_key_with_key_IDs, master_id, list(sent))
    assert code == 200 and keys_of(container) == sent


def assert_binomial(count: int, trials: int, probability: float, what: str) -> None:
    sigma = math.sqrt(trials * probability * (1.0 - probability))
    assert abs(count - trials * probability) <= SIGMAS * sigma, (what, count, trials, probability)


def assert_physics(figures: dict, link) -> None:
    """One link's counted statistics against the closed forms (MQZL eqs. 4–6)."""
    params = link.params()
    detection = sum(
        p * gain(params, mu)
        for p, mu in zip(params.intensity_probabilities, params.intensities, strict=True)
    )
    assert_binomial(figures["detections"], figures["pulses"], detection, "detections")
    # The sample is of sifted signal bits only: E_μ.
    signal_qber = qber(params, params.intensities[SIGNAL])
    assert_binomial(figures["sample_errors"], figures["sample_bits"], signal_qber, "QBER")
    rate = figures["secret_key_bits"] / figures["pulses"]
    physical = secret_key_rate_bps(params) / params.source_rate_hz
    low, high = RATE_RATIO_RANGE
    assert low <= rate / physical <= high, (rate, physical)
    # The last block's bounds bracket the true single-photon yield and error rate (they
    # fail with probability 7e-10 per block) and lie near the finite-size values from
    # the expected counts: Y1^L ≈ 0.84 Y1, e1^U ≈ 0.083 at 25 km and 0.086 at 50 km
    # against e1 = 0.033 (the ~110 decoy errors of a block carry a Chernoff margin of ~80;
    # their Poisson σ ≈ 10.5 moves e1^U by about 0.005, so +0.09 is 5σ away; Y1^L moves
    # about 1.7 % per σ of the decoy count, so 0.7 Y1 is 8σ away).
    true_yield, true_error = single_photon_yield(params), single_photon_error(params)
    assert 0.7 * true_yield <= figures["single_photon_yield_lower"] <= true_yield
    assert true_error <= figures["single_photon_error_upper"] <= true_error + 0.09


def test_decoy_links_deliver_matching_keys_at_their_physical_statistics(network_factory):
    network = network_factory(metro())
    topology = network.topology
    assert {p.role for p in network.plan.processes} == {"broker", "node"}  # no station
    asyncio.run(keys_and_physics(network, topology))


async def keys_and_physics(network, topology) -> None:
    def keyed(peer: str):
        return lambda qkd: qkd[peer]["blocks"].get("ok", 0) >= 3

    async with QnemuClient(network.run_dir) as client:
        dc1 = await wait_for(client, "dc1", keyed("hub"))
        branch = await wait_for(client, "branch", keyed("hub"))
        hub = await wait_for(client, "hub", lambda qkd: all(keyed(p)(qkd) for p in qkd))
    assert dc1["qkd"]["hub"]["role"] == "alice" and branch["qkd"]["hub"]["role"] == "alice"
    assert_physics(dc1["qkd"]["hub"], topology.link_between("dc1", "hub"))
    assert_physics(branch["qkd"]["hub"], topology.link_between("branch", "hub"))

    run_dir = network.run_dir
    dc1_app = etsi_client(run_dir, "dc1_app", dc1["kme_url"])
    hub_app = etsi_client(run_dir, "hub_app", hub["kme_url"])
    branch_app = etsi_client(run_dir, "branch_app", branch["kme_url"])
    await same_keys(dc1_app, hub_app, "dc1_app", "hub_app")
    await same_keys(hub_app, branch_app, "hub_app", "branch_app")
    await same_keys(branch_app, dc1_app, "branch_app", "dc1_app")  # relayed through the hub

    # Eve intercepts and resends every pulse of dc1→hub: QBER ≈ 1/4, every block discarded.
    faults = await link_fault(run_dir, "hub-dc1", "eavesdrop", {"fraction": 1.0})
    assert faults["dc1"]["eavesdrop_fraction"] == {"hub": 1.0}
    async with QnemuClient(network.run_dir) as client:
        before = (await client.stats("dc1"))["qkd"]["hub"]["blocks"]

        def caught(qkd: dict) -> bool:  # blocks sampled before the fault may end later
            figures = qkd["hub"]
            aborted = figures["blocks"].get("aborted_qber", 0) - before.get("aborted_qber", 0)
            return aborted >= 2 and figures["qber_last"] > 0.2

        stats = await wait_for(client, "dc1", caught)
    made = stats["qkd"]["hub"]["blocks"].get("ok", 0) - before.get("ok", 0)
    assert made <= DECOY_BLOCKS_IN_FLIGHT  # only blocks already in post-processing

    url = next(p.metrics_url for p in network.plan.processes if p.name == "dc1")
    text = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=5).read().decode())
    assert 'qnemu_qkd_blocks_total{peer="hub",result="aborted_qber"}' in text
    assert 'qnemu_qkd_decoy_single_photon_yield{link="dc1-hub",peer="hub"}' in text
    assert 'qnemu_qkd_decoy_single_photon_error{link="dc1-hub",peer="hub"}' in text
