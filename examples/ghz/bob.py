"""Three-node GHZ state, the middle node: one Φ+ pair with each neighbour, a CNOT and a
measurement turn them into (|000⟩ + |111⟩)/√2 over left, middle and right."""

import numpy as np

GHZ = np.zeros(8)
GHZ[0] = GHZ[7] = 2**-0.5


async def main(node, left="alice", right="charlie", rounds=1):
    to_left, to_right = node.socket(left), node.socket(right)
    fidelities, outcomes = [], []
    for _ in range(rounds):
        (a,) = await node.epr_socket(left).create_keep(1)
        (c,) = await node.epr_socket(right).create_keep(1)
        await a.cnot(c)
        await to_right.send(await c.measure())  # the right node flips its half on a 1
        left_qubit, right_qubit = await to_left.recv(), await to_right.recv()
        rho = await node.state(left_qubit, a, right_qubit)  # emulator only: the GHZ state
        fidelities.append(float(np.real(GHZ @ rho @ GHZ)))
        await to_left.send("measure")
        await to_right.send("measure")
        outcomes.append(await a.measure())
    return {"fidelities": fidelities, "outcomes": outcomes}
