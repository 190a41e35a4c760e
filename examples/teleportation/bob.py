"""Teleportation, receiver: correct with the sender's bits, then ask the oracle how well
the state arrived (over a Werner pair of fidelity F the answer is (2F + 1)/3)."""

import numpy as np


async def main(node, sender="alice", theta=1.0, phi=0.3):
    epr = node.epr_socket(sender)
    sock = node.socket(sender)
    (q,) = await epr.recv_keep(1)
    m1, m2 = await sock.recv()
    if m2:
        await q.X()
    if m1:
        await q.Z()
    rho = await q.state()  # emulator only: the qubit's density matrix
    await q.free()
    psi = np.array(
        [np.exp(-0.5j * phi) * np.cos(theta / 2), np.exp(0.5j * phi) * np.sin(theta / 2)]
    )
    fidelity = float(np.real(psi.conj() @ rho @ psi))
    return {"fidelity": fidelity, "corrections": [m1, m2]}
