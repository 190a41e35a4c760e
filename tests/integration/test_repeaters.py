"""End-to-end pairs through repeaters (swap as soon as possible), on real processes."""

import asyncio

import pytest

from qnemu.client import EntangleError, QnemuClient
from qnemu.node.routing import swapped_fidelity, werner_parameter

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

F_AB, F_BC, F_CD = 0.95, 0.9, 0.97
BSM_NOISE = 0.05  # two-qubit gate depolarising at the repeater d

# a - b - c: two Werner links, perfect repeater b; c - d - e: repeater d with gate noise;
# x is an island. Memories never decay, so fidelities are exact.
TOPOLOGY = {
    "name": "repeater-chain",
    "time_scale": 1.0,
    "seed": 11,
    "defaults": {
        "node": {"qubits": 8, "t1_s": None, "t2_s": None},
        "link": {"model": "depolarise", "prob_success": 0.5, "t_cycle_s": 1e-4, "length_km": 2},
    },
    "nodes": {
        "a": {},
        "b": {},
        "c": {},
        "d": {"two_qubit_gate_depolar_prob": BSM_NOISE},
        "e": {},
        "x": {},
    },
    "links": [
        {"nodes": ["a", "b"], "fidelity": F_AB},
        {"nodes": ["b", "c"], "fidelity": F_BC},
        {"nodes": ["c", "d"], "fidelity": F_CD},
        {"nodes": ["d", "e"], "model": "perfect"},
        {"nodes": ["x", "a"], "model": "perfect", "length_km": 1},
    ],
}


async def collect(client, src, dst, **options) -> list:
    return [pair async for pair in client.entangle(src, dst, **options)]


async def test_kept_end_to_end_pairs_have_the_swapped_werner_fidelity(network):
    async with QnemuClient(network.run_dir) as client:
        pairs = await collect(client, "a", "c", pairs=6, timeout_s=20)
        expected = swapped_fidelity([F_AB, F_BC])
        for pair in pairs:
            assert pair.path == ["a", "b", "c"]
            assert pair.fidelity == pytest.approx(expected, abs=1e-9)
            assert pair.attempts >= 2  # at least one attempt per link
            await client.free("a", [pair.qubits[0]])
            await client.free("c", [pair.qubits[1]])


async def test_gate_noise_at_the_repeater_scales_the_werner_parameter(network):
    async with QnemuClient(network.run_dir) as client:
        pairs = await collect(client, "c", "e", pairs=4, timeout_s=20)
        w = werner_parameter(F_CD) * (1 - BSM_NOISE)  # 2-qubit depolarising before the BSM
        for pair in pairs:
            assert pair.fidelity == pytest.approx((3 * w + 1) / 4, abs=1e-9)
            await client.free("c", [pair.qubits[0]])
            await client.free("e", [pair.qubits[1]])


async def test_the_reported_bell_state_is_the_tracked_pauli_frame(network):
    # Four hops with perfect links but one: outcomes in Z agree on phi, differ on psi,
    # as often as the Werner noise allows.
    async with QnemuClient(network.run_dir) as client:
        pairs = await collect(client, "x", "e", pairs=300, measure="Z", timeout_s=30)
    assert all(pair.path == ["x", "a", "b", "c", "d", "e"] for pair in pairs)
    wrong = sum(
        (pair.outcomes[0] != pair.outcomes[1]) != pair.bell_state.startswith("psi")
        for pair in pairs
    )
    w = werner_parameter(F_AB) * werner_parameter(F_BC) * werner_parameter(F_CD) * (1 - BSM_NOISE)
    p_error = 2 * (1 - (3 * w + 1) / 4) / 3  # Z disagreement with the frame: 2(1 - F)/3
    sigma = (len(pairs) * p_error * (1 - p_error)) ** 0.5
    assert abs(wrong - len(pairs) * p_error) < 5 * sigma + 1, (wrong, len(pairs) * p_error)


async def test_unreachable_and_too_demanding_requests_are_refused_at_once(network):
    async with QnemuClient(network.run_dir) as client:
        with pytest.raises(EntangleError) as refused:  # raw links only: 0.8567 at most
            await collect(client, "a", "c", pairs=1, minimum_fidelity=0.99, purify="none")
        assert refused.value.code == "NOTIME"
        assert "a-b-c" in refused.value.message and "0.8567" in refused.value.message
        with pytest.raises(EntangleError) as beyond:  # 3 DEJMPS rounds per link: 0.9990
            await collect(client, "a", "c", pairs=1, minimum_fidelity=0.9999)
        assert beyond.value.code == "NOTIME" and "0.9990" in beyond.value.message
        with pytest.raises(EntangleError) as unknown:
            await collect(client, "a", "nowhere", pairs=1)
        assert unknown.value.code == "UNSUPP"


async def test_concurrent_end_to_end_requests_share_links_without_deadlock(network):
    async with QnemuClient(network.run_dir) as client:
        first, second = await asyncio.gather(
            collect(client, "a", "c", pairs=20, measure="Z", timeout_s=30),
            collect(client, "b", "d", pairs=20, measure="Z", timeout_s=30),
        )
    assert len(first) == len(second) == 20
    # Pairs still in flight when the requests ended are freed as they arrive.
    async with QnemuClient(network.run_dir) as client:
        for _ in range(40):
            in_use = {node: (await client.stats(node))["memory"]["in_use"] for node in "abcde"}
            if not any(in_use.values()):
                break
            await asyncio.sleep(0.05)
        assert not any(in_use.values()), in_use
