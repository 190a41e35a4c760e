"""Three-node GHZ state, an outer node without correction: hold the half, then measure."""


async def main(node, middle="bob", rounds=1):
    epr, sock = node.epr_socket(middle), node.socket(middle)
    outcomes = []
    for _ in range(rounds):
        (q,) = await epr.recv_keep(1)
        await sock.send(q.handle)  # so that the middle node can ask the oracle
        await sock.recv()
        outcomes.append(await q.measure())
    return {"outcomes": outcomes}
