"""Distributed CNOT (gate teleportation, Eisert et al. 2000), control side: one Φ+ pair
and one bit each way apply CNOT(control here, target there)."""

import numpy as np


def ry(angle):
    return np.array([np.cos(angle / 2), np.sin(angle / 2)])


async def main(node, target_node="bob", control_angle=np.pi / 2, target_angle=0.0):
    epr, sock = node.epr_socket(target_node), node.socket(target_node)
    c = await node.qubit()
    await c.rot_y(control_angle)
    (a,) = await epr.create_keep(1)
    await c.cnot(a)
    m1 = await a.measure()
    await sock.send(m1)  # the target side flips its half on a 1: it now copies the control
    m2 = await sock.recv()
    if m2:
        await c.Z()
    target = await sock.recv()
    rho = await node.state(c, target)  # emulator only: control and target together
    cnot = np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 1], [0, 0, 1, 0]])
    expected = cnot @ np.kron(ry(control_angle), ry(target_angle))
    await sock.send("done")
    await c.free()
    return {"fidelity": float(np.real(expected.conj() @ rho @ expected)), "bits": [m1, m2]}
