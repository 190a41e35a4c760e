"""Teleportation, sender: teleport RZ(phi)·RY(theta)|0⟩ to the receiver over one Φ+ pair."""


async def main(node, receiver="bob", theta=1.0, phi=0.3):
    epr = node.epr_socket(receiver)
    sock = node.socket(receiver)
    q = await node.qubit()
    await q.rot_y(theta)
    await q.rot_z(phi)
    (e,) = await epr.create_keep(1)  # Φ+ with the receiver (Pauli frame applied there)
    await q.cnot(e)
    await q.H()
    m1, m2 = await q.measure(), await e.measure()
    await sock.send([m1, m2])
    return {"m1": m1, "m2": m2, "link_fidelity": e.pair.fidelity}
