"""CHSH game, Alice: for input x measure Z (x = 0) or X (x = 1) on her half of Φ+.

Win when a ⊕ b = x·y; the best quantum strategy wins with cos²(π/8) ≈ 0.854, over a
Werner pair with parameter w = (4F − 1)/3 with (1 + w/√2)/2.
"""

import asyncio
import random

ANGLES = (0.0, 1.5707963267948966)  # Z, X: observables cos(θ)Z + sin(θ)X


async def measure_at(qubit, angle):
    await qubit.rot_y(-angle)  # the +1 eigenvector of cos(θ)Z + sin(θ)X goes to |0⟩
    return await qubit.measure()


async def main(node, partner="bob", rounds=200, batch=10, seed=1):
    epr, sock = node.epr_socket(partner), node.socket(partner)
    rng = random.Random(seed)
    inputs, outputs = [], []
    while len(inputs) < rounds:
        pairs = await epr.create_keep(min(batch, rounds - len(inputs)))
        xs = [rng.randrange(2) for _ in pairs]
        outputs += await asyncio.gather(
            *(measure_at(q, ANGLES[x]) for q, x in zip(pairs, xs, strict=True))
        )
        inputs += xs
    ys, bs = await sock.recv()
    wins = sum((a ^ b) == (x & y) for x, a, y, b in zip(inputs, outputs, ys, bs, strict=True))
    return {"rounds": rounds, "wins": wins, "win_rate": wins / rounds}
