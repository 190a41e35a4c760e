"""Purify-then-swap through the whole stack: a 3-node line of Werner links, both protocols.

Every link gives Werner pairs of fidelity F = 0.9 (no memory decay, perfect gates), so
swapping raw links gives 1/4 + 3/4 w² = 0.8133 (w = (4F − 1)/3). A request for 0.85 is
above that: the planner purifies each link once, then the repeater swaps.

- One round on Werner pairs gives F' = (F² + e²)/(F² + 2Fe + 5e²), e = (1 − F)/3, with
  success probability F² + 2Fe + 5e², for DEJMPS and BBPSSW alike.
- BBPSSW twirls the survivor back to Werner (as an ensemble): the mean delivered fidelity
  is 1/4 + 3/4 w'² with w' = (4F' − 1)/3, within 5 standard errors of the mean.
- DEJMPS keeps non-Werner weights: each delivered pair has exactly the XOR-convolution of
  the purified link weights (0.86292), which the Werner chain formula on F' (0.86002)
  approximates to within 0.005.
"""

import asyncio
import contextlib
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from qnemu.client import EntangleError, QnemuClient
from qnemu.node.routing import Routing, werner_parameter
from qnemu.physics.purification import purified, swapped_coefficients, werner_coefficients

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

LINK_F = 0.9
E = (1 - LINK_F) / 3
ROUND_SUCCESS = LINK_F**2 + 2 * LINK_F * E + 5 * E**2
ROUND_F = (LINK_F**2 + E**2) / ROUND_SUCCESS
WERNER_CHAIN_F = 0.25 + 0.75 * werner_parameter(ROUND_F) ** 2
TARGET = 0.85  # above the raw chain (0.8133), below one round on each link

TOPOLOGY = {
    "name": "purified-line",
    "time_scale": 1.0,
    "seed": 29,
    "defaults": {
        "node": {"qubits": 8, "t1_s": None, "t2_s": None},
        "link": {
            "model": "depolarise",
            "fidelity": LINK_F,
            "prob_success": 0.5,
            "t_cycle_s": 1e-4,
            "length_km": 2,
        },
    },
    "nodes": {"a": {}, "b": {}, "c": {}},
    "links": [{"nodes": ["a", "b"]}, {"nodes": ["b", "c"]}],
}


def planner() -> Routing:
    links = [("a", "b", LINK_F, 1.0, 2.0), ("b", "c", LINK_F, 1.0, 2.0)]
    return Routing(links, memory={"a": 8, "b": 8, "c": 8})


async def kept_fidelities(client, protocol: str, pairs: int, target: float = TARGET) -> list:
    """Keep-mode pairs a → c; each is freed as it comes (the next rounds need its slot)."""
    fidelities = []
    async for pair in client.entangle(
        "a", "c", pairs=pairs, minimum_fidelity=target, purify=protocol, timeout_s=120
    ):
        assert pair.path == ["a", "b", "c"]
        fidelities.append(pair.fidelity)
        await client.free("a", [pair.qubits[0]])
        await client.free("c", [pair.qubits[1]])
    return fidelities


def test_the_planner_purifies_each_link_once_for_this_target():
    for protocol in ("dejmps", "bbpssw"):
        route = planner().plan("a", "c", TARGET, protocol)
        assert route.rounds == (1, 1)
    weights, successes = purified(werner_coefficients(LINK_F), "bbpssw", 1)
    assert (weights[0], successes[0]) == pytest.approx((ROUND_F, ROUND_SUCCESS), abs=1e-12)


async def test_dejmps_then_swap_gives_the_composed_weights_on_every_pair(network):
    weights, _ = purified(werner_coefficients(LINK_F), "dejmps", 1)
    assert weights[0] == pytest.approx(ROUND_F, abs=1e-12)  # the first round: same formula
    exact = swapped_coefficients([weights, weights])[0]
    assert abs(exact - WERNER_CHAIN_F) < 0.005
    async with QnemuClient(network.run_dir) as client:
        fidelities = await kept_fidelities(client, "dejmps", 10)
    assert fidelities == pytest.approx([exact] * 10, abs=1e-9)


async def test_bbpssw_then_swap_gives_the_werner_chain_formula_on_average(network):
    before = rounds_by_result(network, "a", "b")
    async with QnemuClient(network.run_dir) as client:
        fidelities = await kept_fidelities(client, "bbpssw", 90)
    after = rounds_by_result(network, "a", "b")
    n = len(fidelities)
    mean = sum(fidelities) / n
    spread = (sum((f - mean) ** 2 for f in fidelities) / (n - 1)) ** 0.5
    assert abs(mean - WERNER_CHAIN_F) < 5 * spread / n**0.5 + 1e-9, (mean, WERNER_CHAIN_F)
    # Single pairs: a round leaves the error weights (2e², 2e², 2Fe)/N on (Ψ−, Ψ+, Φ−),
    # the last twirl rotates them at random, and the swap gives A² + Σ e_k e'_k: the
    # links' big errors aligned (1 time in 3) or not.
    errors = (2 * E**2 / ROUND_SUCCESS, 2 * E**2 / ROUND_SUCCESS, 2 * LINK_F * E / ROUND_SUCCESS)
    aligned = ROUND_F**2 + sum(x * x for x in errors)
    crossed = ROUND_F**2 + sum(errors[k] * errors[k - 1] for k in range(3))
    odd = [f for f in fidelities if f != pytest.approx(aligned) and f != pytest.approx(crossed)]
    assert not odd, (odd, aligned, crossed)
    hits = sum(f == pytest.approx(aligned) for f in fidelities)
    assert abs(hits - n / 3) < 5 * (n * 2 / 9) ** 0.5 + 1
    # Every round, on both links, succeeds with F² + 2Fe + 5e².
    wins = after["success"] - before["success"]
    tries = wins + after["failure"] - before["failure"]
    assert tries >= 2 * n
    sigma = (tries * ROUND_SUCCESS * (1 - ROUND_SUCCESS)) ** 0.5
    assert abs(wins - tries * ROUND_SUCCESS) < 5 * sigma, (wins, tries, ROUND_SUCCESS)


async def test_one_bbpssw_round_on_a_link_has_the_closed_form_fidelity(network):
    """The twirl keeps the Φ+ weight, so each purified link pair has F' exactly."""
    async with QnemuClient(network.run_dir) as client:
        async for pair in client.entangle(
            "a", "b", pairs=5, minimum_fidelity=0.92, purify="bbpssw", timeout_s=30
        ):
            assert pair.fidelity == pytest.approx(ROUND_F, abs=1e-9)
            assert pair.path == ["a", "b"]
            await client.free("a", [pair.qubits[0]])
            await client.free("b", [pair.qubits[1]])


async def test_measured_purified_pairs_disagree_in_z_as_the_chain_weights_say(network):
    weights, _ = purified(werner_coefficients(LINK_F), "dejmps", 1)
    _, psi_minus, psi_plus, _ = swapped_coefficients([weights, weights])
    async with QnemuClient(network.run_dir) as client:
        pairs = [
            pair
            async for pair in client.entangle(
                "a", "c", pairs=200, minimum_fidelity=TARGET, measure="Z", timeout_s=120
            )
        ]
    # A Ψ Bell state flips the Z parity; a bit flip (Ψ± weight) flips it back.
    wrong = sum(
        (pair.outcomes[0] ^ pair.outcomes[1]) != pair.bell_state.startswith("psi") for pair in pairs
    )
    p = psi_minus + psi_plus
    sigma = (len(pairs) * p * (1 - p)) ** 0.5
    assert abs(wrong - len(pairs) * p) < 5 * sigma + 1, (wrong, len(pairs) * p)


async def test_unreachable_targets_are_refused_with_the_best_reachable_fidelity(network):
    best = planner().plan("a", "c", 0.99, "bbpssw")
    assert best.estimated_fidelity < 0.99
    async with QnemuClient(network.run_dir) as client:
        with pytest.raises(EntangleError) as notime:
            await kept_fidelities(client, "bbpssw", 1, target=0.99)
        assert notime.value.code == "NOTIME"
        assert f"{best.estimated_fidelity:.4f}" in notime.value.message
        assert "bbpssw" in notime.value.message
        with pytest.raises(EntangleError) as raw_only:
            await kept_fidelities(client, "none", 1)
        assert raw_only.value.code == "NOTIME" and "without purification" in raw_only.value.message
        assert "0.8133" in raw_only.value.message
        with pytest.raises(EntangleError) as bad:
            await kept_fidelities(client, "pumping", 1)
        assert bad.value.code == "UNSUPP" and "purify must be one of" in bad.value.message
        assert await in_use(client) == {"a": 0, "b": 0, "c": 0}


async def test_concurrent_purified_requests_keep_their_memory_promises(network):
    async with QnemuClient(network.run_dir) as client:
        # One round per link: the repeater promises 2 + 2 qubits to each; two fit in 8.
        both = await asyncio.gather(
            kept_fidelities(client, "dejmps", 5), kept_fidelities(client, "dejmps", 5)
        )
        assert [len(f) for f in both] == [5, 5]
        # Two rounds per link: 3 + 3 each; the repeater cannot promise 12, the second is
        # refused at once instead of stalling both.
        first = asyncio.create_task(kept_fidelities(client, "dejmps", 3, target=0.93))
        await asyncio.sleep(0.05)
        with pytest.raises(EntangleError) as nores:
            await kept_fidelities(client, "dejmps", 3, target=0.93)
        assert nores.value.code == "NORES" and "b: purification needs 6" in nores.value.message
        # A raw path needs one qubit per link at b: 6 + 2 fit.
        raw = [p async for p in client.entangle("a", "c", pairs=3, measure="Z", timeout_s=60)]
        assert len(raw) == 3
        assert len(await first) == 3
        assert await in_use(client) == {"a": 0, "b": 0, "c": 0}


async def in_use(client) -> dict[str, int]:
    await asyncio.sleep(0.2)  # path_end reaches the repeater and the far end
    return {node: (await client.stats(node))["memory"]["in_use"] for node in "abc"}


def metric(network, node: str, name: str) -> float:
    text = urllib.request.urlopen(network.plan.process(node).metrics_url, timeout=5).read()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text.decode())
        for sample in family.samples
        if sample.name == name
    )


def rounds_by_result(network, *nodes: str) -> dict[str, float]:
    """Purification rounds counted at the left end of each link (the one that decides)."""
    counts = {"success": 0.0, "failure": 0.0, "lost": 0.0}
    for node in nodes:
        url = network.plan.process(node).metrics_url
        text = urllib.request.urlopen(url, timeout=5).read().decode()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == "qnemu_purification_rounds_total":
                    counts[sample.labels["result"]] += sample.value
    return counts


def test_pairs_cut_off_during_purification_leak_nothing(network_factory):
    """The repeater drops pairs after 5 ms: rounds lose pairs at either end of a link;
    whatever gets delivered, every qubit is free again once the request is over."""
    spec = {
        **TOPOLOGY,
        "name": "purified-line-cutoff",
        "nodes": {"a": {}, "b": {"cutoff_s": 0.02}, "c": {}},
    }
    launched = network_factory(spec)

    async def run() -> tuple[list, dict]:
        delivered = []
        async with QnemuClient(launched.run_dir) as client:
            with contextlib.suppress(EntangleError):  # TIMEOUT is fine, so is done
                async for pair in client.entangle(
                    "a", "c", pairs=20, minimum_fidelity=TARGET, purify="bbpssw", timeout_s=5
                ):
                    delivered.append(pair)
                    await client.free("a", [pair.qubits[0]])
                    await client.free("c", [pair.qubits[1]])
            return delivered, await in_use(client)

    delivered, memory = asyncio.run(run())
    assert memory == {"a": 0, "b": 0, "c": 0}
    assert all(pair.fidelity > 0.8 for pair in delivered)
    assert metric(launched, "b", "qnemu_memory_qubits_expired_total") > 0
