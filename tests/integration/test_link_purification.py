"""Purification (DEJMPS) on a link, for requests above what the raw link delivers."""

import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from qnemu.client import EntangleError, QnemuClient
from qnemu.physics.bell import BellState, werner_state
from qnemu.physics.purification import bell_diagonal_coefficients, dejmps

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

RAW_F = 0.8
TOPOLOGY = {
    "name": "purification-lab",
    "time_scale": 1.0,
    "seed": 13,
    "defaults": {"node": {"qubits": 6, "t1_s": None, "t2_s": None}},
    "nodes": {"a": {}, "b": {}, "c": {"qubits": 2}},
    "links": [
        {
            "nodes": ["a", "b"],
            "model": "depolarise",
            "fidelity": RAW_F,
            "prob_success": 0.5,
            "t_cycle_s": 1e-4,
            "length_km": 2,
        },
        {
            "nodes": ["b", "c"],
            "model": "depolarise",
            "fidelity": RAW_F,
            "prob_success": 0.5,
            "t_cycle_s": 1e-4,
            "length_km": 2,
        },
    ],
}


def after_rounds(rounds: int) -> tuple[float, ...]:
    coefficients = bell_diagonal_coefficients(werner_state(RAW_F, BellState.PHI_PLUS))
    for _ in range(rounds):
        coefficients, _ = dejmps(coefficients)
    return coefficients


async def collect(client, src, dst, **options) -> list:
    return [pair async for pair in client.entangle(src, dst, **options)]


async def test_kept_pairs_have_the_dejmps_fidelity_after_the_rounds_needed(network):
    one, two = after_rounds(1)[0], after_rounds(2)[0]
    assert RAW_F < one < 0.85 < two  # so 0.85 needs exactly two rounds
    async with QnemuClient(network.run_dir) as client:
        # Each pair is freed as it comes: kept pairs hold memory the next rounds need.
        async for pair in client.entangle("a", "b", pairs=5, minimum_fidelity=0.85, timeout_s=20):
            assert pair.bell_state == "phi+" and pair.path == ["a", "b"]
            assert pair.fidelity == pytest.approx(two, abs=1e-9)
            assert pair.attempts >= 4  # four raw pairs, at least an attempt each
            await client.free("a", [pair.qubits[0]])
            await client.free("b", [pair.qubits[1]])


async def test_measured_purified_pairs_agree_in_z_as_the_map_says(network):
    async with QnemuClient(network.run_dir) as client:
        pairs = await collect(
            client, "a", "b", pairs=200, minimum_fidelity=0.83, measure="Z", timeout_s=30
        )
    _, b, c, _ = after_rounds(1)
    disagree = sum(pair.outcomes[0] != pair.outcomes[1] for pair in pairs)
    p = b + c  # Ψ components flip the Z parity
    sigma = (len(pairs) * p * (1 - p)) ** 0.5
    assert abs(disagree - len(pairs) * p) < 5 * sigma + 1


async def test_unreachable_fidelity_and_small_memory_are_refused(network):
    async with QnemuClient(network.run_dir) as client:
        with pytest.raises(EntangleError) as notime:
            await collect(client, "a", "b", pairs=1, minimum_fidelity=0.999)
        assert notime.value.code == "NOTIME" and "purification" in notime.value.message
        with pytest.raises(EntangleError) as nores:  # c has 2 qubits; two rounds need 3
            await collect(client, "c", "b", pairs=1, minimum_fidelity=0.85)
        assert nores.value.code == "NORES"
    async with QnemuClient(network.run_dir) as client:
        for node in "ab":
            assert (await client.stats(node))["memory"]["in_use"] == 0


async def test_one_round_on_werner_pairs_has_the_closed_form_fidelity_and_success_rate(network):
    """(F² + e²)/(F² + 2Fe + 5e²), e = (1 − F)/3, succeeding with probability F² + 2Fe + 5e²."""
    e = (1 - RAW_F) / 3
    success = RAW_F**2 + 2 * RAW_F * e + 5 * e**2
    fidelity = (RAW_F**2 + e**2) / success
    assert fidelity == pytest.approx(after_rounds(1)[0], abs=1e-12)
    metrics_url = network.plan.process("a").metrics_url
    before = rounds_by_result(metrics_url)
    async with QnemuClient(network.run_dir) as client:
        async for pair in client.entangle("a", "b", pairs=300, minimum_fidelity=0.83, timeout_s=30):
            assert pair.fidelity == pytest.approx(fidelity, abs=1e-9)
            await client.free("a", [pair.qubits[0]])
            await client.free("b", [pair.qubits[1]])
    after = rounds_by_result(metrics_url)
    wins = after["success"] - before["success"]
    tries = wins + after["failure"] - before["failure"]
    sigma = (tries * success * (1 - success)) ** 0.5
    assert abs(wins - tries * success) < 5 * sigma, (wins, tries, success)


def rounds_by_result(metrics_url: str) -> dict[str, float]:
    text = urllib.request.urlopen(metrics_url, timeout=5).read().decode()
    counts = {"success": 0.0, "failure": 0.0, "lost": 0.0}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "qnemu_purification_rounds_total":
                counts[sample.labels["result"]] += sample.value
    return counts
