"""Three-node GHZ state, the outer node that applies the middle node's correction."""


async def main(node, middle="bob", rounds=1):
    epr, sock = node.epr_socket(middle), node.socket(middle)
    outcomes = []
    for _ in range(rounds):
        (q,) = await epr.recv_keep(1)
        if await sock.recv():
            await q.X()
        await sock.send(q.handle)
        await sock.recv()
        outcomes.append(await q.measure())
    return {"outcomes": outcomes}
