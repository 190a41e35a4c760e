"""Distributed CNOT, target side."""


async def main(node, control_node="alice", target_angle=0.0):
    epr, sock = node.epr_socket(control_node), node.socket(control_node)
    t = await node.qubit()
    await t.rot_y(target_angle)
    (b,) = await epr.recv_keep(1)
    if await sock.recv():
        await b.X()
    await b.cnot(t)
    await b.H()
    await sock.send(await b.measure())  # the control side applies Z on a 1
    await sock.send(t.handle)
    await sock.recv()
    await t.free()
    return {"target": t.handle}
