"""CHSH game, Bob: for input y measure (Z + X)/√2 (y = 0) or (Z − X)/√2 (y = 1)."""

import asyncio
import random

ANGLES = (0.7853981633974483, -0.7853981633974483)  # ±π/4


async def measure_at(qubit, angle):
    await qubit.rot_y(-angle)
    return await qubit.measure()


async def main(node, partner="alice", rounds=200, batch=10, seed=1):
    epr, sock = node.epr_socket(partner), node.socket(partner)
    rng = random.Random(seed + 1)  # Bob's inputs independent of Alice's
    inputs, outputs = [], []
    while len(inputs) < rounds:
        pairs = await epr.recv_keep(min(batch, rounds - len(inputs)))
        ys = [rng.randrange(2) for _ in pairs]
        outputs += await asyncio.gather(
            *(measure_at(q, ANGLES[y]) for q, y in zip(pairs, ys, strict=True))
        )
        inputs += ys
    await sock.send([inputs, outputs])
    return {"rounds": rounds}
