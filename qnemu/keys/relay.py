"""Trusted-node key relay (ITU-T Y.3800): the pure bookkeeping of one relayed key.

An end-to-end key K between two key managers that share no QKD link travels along a
path of QKD links. Each hop sends K ⊕ pad, the pad cut from the key the hop's two nodes
share (consumed for good at both ends); each trusted node on the path removes one pad
and adds the next. This module holds what needs no store and no socket: the path over
the QKD links, who comes next on it, the one-time pad itself and the relay's ID.
"""

import uuid
from collections import deque
from collections.abc import Iterable

__all__ = [
    "RelayError",
    "RelayStep",
    "new_relay_id",
    "one_time_pad",
    "qkd_route",
    "relay_step",
    "shortfall_bits",
]

BITS_PER_BYTE = 8


class RelayError(Exception):
    """A relay that cannot go on: no path, a malformed or misrouted hop, no key on a hop."""


def qkd_route(edges: Iterable[tuple[str, str]], source: str, destination: str) -> tuple[str, ...]:
    """The path with the fewest QKD links from `source` to `destination`, or ().

    Ties go to the path whose node names sort first at each step, so every node that
    computes the route finds the same one.
    """
    neighbours: dict[str, set[str]] = {}
    for a, b in edges:
        neighbours.setdefault(a, set()).add(b)
        neighbours.setdefault(b, set()).add(a)
    if source == destination or source not in neighbours or destination not in neighbours:
        return ()
    previous: dict[str, str] = {source: source}
    queue = deque([source])
    while queue:
        here = queue.popleft()
        if here == destination:
            path = [here]
            while path[-1] != source:
                path.append(previous[path[-1]])
            return tuple(reversed(path))
        for there in sorted(neighbours[here]):
            if there not in previous:
                previous[there] = here
                queue.append(there)
    return ()


class RelayStep:
    """Where a relay message stands at the node that received it."""

    __slots__ = ("destination", "next_hop", "origin")

    def __init__(self, origin: str, destination: str, next_hop: str | None):
        self.origin = origin
        self.destination = destination
        self.next_hop = next_hop  # None: this node is the destination

    @property
    def is_destination(self) -> bool:
        return self.next_hop is None


def relay_step(relay_id: str, route: Iterable[str], me: str, sender: str) -> RelayStep:
    """Check that a relay message from `sender` belongs at `me` on `route`; what comes next.

    Raises:
        RelayError: the route is malformed, does not pass through `me` once, `sender`
            is not the node before `me` on it, or the relay ID is not the route's.
    """
    path = tuple(route)
    if len(path) < 2 or len(set(path)) != len(path):
        raise RelayError(f"malformed route {list(path)}")
    prefix = f"relay/{path[0]}>{path[-1]}/"
    if not relay_id.startswith(prefix) or len(relay_id) == len(prefix):
        raise RelayError(f"relay ID {relay_id!r} does not name a relay along {list(path)}")
    if me not in path or path.index(me) == 0:
        raise RelayError(f"route {list(path)} does not lead through {me}")
    position = path.index(me)
    if path[position - 1] != sender:
        raise RelayError(f"{sender} is not the hop before {me} on route {list(path)}")
    next_hop = path[position + 1] if position + 1 < len(path) else None
    return RelayStep(path[0], path[-1], next_hop)


def one_time_pad(data: bytes, pad: bytes) -> bytes:
    """data ⊕ pad, byte by byte (encrypts and decrypts); the pad must be exactly as long."""
    if len(data) != len(pad):
        raise RelayError(f"pad of {len(pad)} bytes for {len(data)} bytes of key")
    return (int.from_bytes(data, "big") ^ int.from_bytes(pad, "big")).to_bytes(len(data), "big")


def new_relay_id(origin: str, destination: str) -> str:
    """A relay's ID, fresh and the same at every hop: its key units are derived from it."""
    return f"relay/{origin}>{destination}/{uuid.uuid4()}"


def shortfall_bits(asked_bits: int, offerable_bits: int) -> int:
    """Bits to relay so that `asked_bits` can be cut from the end-to-end pool (whole bytes)."""
    missing = max(0, asked_bits - offerable_bits)
    return -(-missing // BITS_PER_BYTE) * BITS_PER_BYTE
