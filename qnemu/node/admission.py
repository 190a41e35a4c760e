"""Admission at one node: which plan serves an end-to-end request, or why it is refused,
and how much memory each link of a request is promised here.

Pure functions (no I/O) over the node's routing and the requests it serves:

- `plan_request`: the source's plan (`routing.Routing.plan`) or a refusal — `UNSUPP`
  (no path), `NOTIME` (no plan reaches `minimum_fidelity`; the message names the best
  fidelity reachable), `NORES` (only more memory than the nodes have would reach it);
- `memory_shortage`: whether a node can keep its promises with one more request: each
  link it serves is promised r + 1 qubits (r purification rounds; 1 for a raw link);
- `link_window`: the qubits one link of a request may hold: its promise plus an equal
  share of what nobody is promised.

Promises are checked while purification is involved at a node, so every purification
tree can complete and concurrent requests never deadlock; raw requests alone share
whatever is free, as they always did.
"""

from collections.abc import Iterable
from typing import TYPE_CHECKING

from qnemu.node.routing import MAX_ROUNDS, Route, Routing

if TYPE_CHECKING:
    from qnemu.node.network import EndToEndRequest
    from qnemu.wire.control import EntangleRequest

__all__ = ["link_window", "memory_shortage", "plan_request"]


def plan_request(
    request: "EntangleRequest", src: str, routing: Routing, *, direct: bool = False
) -> tuple[Route | None, tuple[str, str] | None]:
    """(plan, None), or (best plan or None, (error code, message)) for a refusal.

    Args:
        direct: a request to a neighbour above its link's fidelity: that link only.
    """
    dst, target = request.remote_node_id, request.minimum_fidelity
    protocol = "dejmps" if request.purify == "none" else request.purify
    max_rounds = 0 if request.purify == "none" else MAX_ROUNDS
    route = routing.plan(src, dst, target, protocol, max_rounds=max_rounds, direct=direct)
    if route is None:
        return None, ("UNSUPP", f"no path from {src} to {dst!r}")
    if target <= route.estimated_fidelity + 1e-12:
        return route, None
    path = "-".join(route.path)
    if max_rounds == 0:
        how = "without purification (purify: none)"
    else:
        how = f"with up to {max_rounds} rounds of {protocol} purification per link"
        unbounded = routing.plan(src, dst, target, protocol, direct=direct, within_memory=False)
        if unbounded is not None and target <= unbounded.estimated_fidelity + 1e-12:
            rounds = ", ".join(map(str, unbounded.rounds))
            return route, (
                "NORES",
                f"minimum_fidelity {target} needs {protocol} rounds ({rounds}) per link of "
                f"{'-'.join(unbounded.path)}, more than the nodes' memories hold; the best "
                f"they allow is {route.estimated_fidelity:.4f} on {path}",
            )
    return route, (
        "NOTIME",
        f"best path {path} gives fidelity {route.estimated_fidelity:.4f} at most {how}, "
        f"below minimum_fidelity {target}",
    )


def memory_shortage(
    name: str, capacity: int, e2e: "EndToEndRequest", others: Iterable["EndToEndRequest"]
) -> str | None:
    """Why node `name` cannot promise `e2e` its qubits next to `others`, or None."""
    others = list(others)
    if not e2e.rounds and not any(other.rounds for other in others):
        return None
    promised = sum(sum(other.memory_need()) for other in others)
    need = sum(e2e.memory_need())
    if promised + need <= capacity:
        return None
    what = "purification needs" if e2e.rounds else "this path needs"
    return (
        f"{name}: {what} {need} memory qubits here, "
        f"{max(0, capacity - promised)} of {capacity} are not promised to other requests"
    )


def link_window(
    capacity: int, requests: Iterable["EndToEndRequest"], e2e: "EndToEndRequest | None", peer: str
) -> int:
    """The qubits the link from here to `peer` of `e2e` may hold (a repeater serves two
    links per request): its promise plus an equal share of what no link is promised."""
    needs = [need for request in requests for need in request.memory_need()]
    spare = max(0, capacity - sum(needs)) // max(1, len(needs))
    if e2e is None or peer not in e2e.path:
        return max(1, spare)
    link = min(e2e.path.index(peer), e2e.index)
    return e2e.rounds_on(link) + 1 + spare
