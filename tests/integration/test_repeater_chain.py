"""A chain of identical Werner links through the whole stack: the closed form per length."""

import pytest

from qnemu.client import QnemuClient
from qnemu.node.routing import werner_parameter

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

LINK_F = 0.95
TOPOLOGY = {
    "name": "identical-chain",
    "time_scale": 1.0,
    "seed": 19,
    "defaults": {
        "node": {"qubits": 8, "t1_s": None, "t2_s": None},
        "link": {
            "model": "depolarise",
            "fidelity": LINK_F,
            "prob_success": 0.5,
            "t_cycle_s": 1e-4,
            "length_km": 1,
        },
    },
    "nodes": {f"c{i}": {} for i in range(5)},
    "links": [{"nodes": [f"c{i}", f"c{i + 1}"]} for i in range(4)],
}


@pytest.mark.parametrize("hops", [1, 2, 3, 4])
async def test_n_identical_links_give_a_quarter_plus_three_quarters_w_to_the_n(network, hops):
    """F = 1/4 + 3/4 ((4F − 1)/3)^n (perfect repeaters, no memory decay)."""
    expected = 0.25 + 0.75 * werner_parameter(LINK_F) ** hops
    async with QnemuClient(network.run_dir) as client:
        async for pair in client.entangle("c0", f"c{hops}", pairs=3, timeout_s=20):
            assert pair.fidelity == pytest.approx(expected, abs=1e-9)
            await client.free("c0", [pair.qubits[0]])
            await client.free(f"c{hops}", [pair.qubits[1]])
