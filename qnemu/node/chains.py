"""Which link pairs have been swapped into one end-to-end pair, and its Pauli frame.

Pure bookkeeping for an end node. Every repeater reports each swap (the two link pairs
it joined and its Bell-measurement outcome); a set of joined pairs that covers every
link of the path is an end-to-end pair. Its Bell state is the XOR of the Bell states of
its link pairs and of the swap outcomes (BellState values are Pauli-frame bits).
"""

from dataclasses import dataclass, field
from typing import Protocol

__all__ = ["Chain", "ChainTracker", "LinkPair"]


class LinkPair(Protocol):
    """What a swap report says of one link pair (qnemu.wire.network.LinkPairRef)."""

    pair_id: str
    link_index: int
    bell_state: int
    qubits: tuple[int, int]
    attempts: int


@dataclass
class Chain:
    """Link pairs joined so far (a component of the swap graph)."""

    pairs: dict[str, tuple[int, int]] = field(default_factory=dict)  # pair_id -> (link, bell)
    qubits: dict[str, tuple[int, int]] = field(default_factory=dict)  # pair_id -> halves
    attempts: dict[str, int] = field(default_factory=dict)  # pair_id -> attempts it took
    frame: int = 0  # XOR of swap outcomes
    swaps: int = 0
    created_at: float = 0.0  # emulated time of the latest swap

    @property
    def links(self) -> set[int]:
        return {link for link, _ in self.pairs.values()}

    @property
    def bell_state(self) -> int:
        state = self.frame
        for _, bell in self.pairs.values():
            state ^= bell
        return state

    def end_qubits(self, last_link: int) -> tuple[int, int]:
        """(first node's qubit, last node's qubit) of a complete chain."""
        first = next(q for pid, q in self.qubits.items() if self.pairs[pid][0] == 0)
        last = next(q for pid, q in self.qubits.items() if self.pairs[pid][0] == last_link)
        return first[0], last[1]

    def first_pair_id(self) -> str:
        return next(pid for pid, (link, _) in self.pairs.items() if link == 0)


class ChainTracker:
    """Joins swap reports into chains for one end-to-end request over `links` links."""

    def __init__(self, links: int):
        if links < 2:
            raise ValueError("a chain needs at least two links (one repeater)")
        self.links = links
        self._chain_of: dict[str, Chain] = {}

    def add_swap(
        self, left: "LinkPair", right: "LinkPair", outcome: int, swapped_at: float = 0.0
    ) -> Chain | None:
        """Record a swap of two link pairs; the chain it completes, or None."""
        chains = []
        for pair in (left, right):
            chain = self._chain_of.get(pair.pair_id)
            if chain is None:
                chain = Chain()
                self._chain_of[pair.pair_id] = chain
            chain.pairs[pair.pair_id] = (pair.link_index, pair.bell_state)
            chain.qubits[pair.pair_id] = tuple(pair.qubits)
            chain.attempts[pair.pair_id] = pair.attempts
            chains.append(chain)
        merged = chains[0]
        if chains[1] is not merged:
            other = chains[1]
            merged.pairs.update(other.pairs)
            merged.qubits.update(other.qubits)
            merged.attempts.update(other.attempts)
            merged.frame ^= other.frame
            merged.swaps += other.swaps
            merged.created_at = max(merged.created_at, other.created_at)
            for pair_id in other.pairs:
                self._chain_of[pair_id] = merged
        merged.frame ^= outcome
        merged.swaps += 1
        merged.created_at = max(merged.created_at, swapped_at)
        if merged.swaps == self.links - 1 and merged.links == set(range(self.links)):
            for pair_id in merged.pairs:
                del self._chain_of[pair_id]
            return merged
        return None

    def discard(self, pair_ids: list[str]) -> list[Chain]:
        """Forget the chains these pairs belong to (a pair was lost); returns them."""
        lost = []
        for pair_id in pair_ids:
            chain = self._chain_of.get(pair_id)
            if chain is not None and chain not in lost:
                lost.append(chain)
                for member in chain.pairs:
                    self._chain_of.pop(member, None)
        return lost

    def chain_of(self, pair_id: str) -> Chain | None:
        return self._chain_of.get(pair_id)

    def __len__(self) -> int:
        return len({id(chain) for chain in self._chain_of.values()})
