"""The link layer's EXPIRE, as pure bookkeeping (no I/O).

A kept pair lives on after its OK: the client or app holds both halves, one at each
end. When one end loses its half (cutoff, or a cut fibre while the half waited for the
peer's report), the other half is worthless too, and whoever was given the pair must
hear of it. So each node remembers, for every kept half it delivered (initiator) or
reported (peer), which request and sequence number it belongs to, the other end's
handle and whom to tell (`KeptPairs`). An EXPIRE for the peer cannot cross a cut fibre:
it waits in `HeldNotices` until the fibre is back.
"""

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

__all__ = ["EXPIRE_REASONS", "HeldNotices", "KeptPair", "KeptPairs"]

# Why pairs expire (the `reason` of EXPIRE messages and the metric label):
#   cut          the fibre to the peer was cut while the half waited for the peer's report
#   cutoff       this node's half waited longer than the memory's cutoff_s
#   peer_cut     the peer lost its half to a cut and told us
#   peer_cutoff  the peer's half passed its cutoff and the peer told us
EXPIRE_REASONS = ("cut", "cutoff", "peer_cut", "peer_cutoff")


def peer_reason(reason: str) -> str:
    """The reason as the other end records it."""
    return reason if reason.startswith("peer_") else f"peer_{reason}"


@dataclass(frozen=True, slots=True)
class KeptPair:
    """This node's half of a kept pair handed over (OK'd, or reported to the initiator)."""

    qubit: int | None  # None: a measured half (nothing to free, the owner is still told)
    peer: str
    initiator: str
    create_id: int
    sequence_number: int
    peer_qubit: int | None
    sink: Any = None  # initiator: where the OK went (client, app, workload); peer: None
    # False: the initiator's half of a pair lost before its OK (the request makes another).
    delivered: bool = True
    path: bool = False  # an end-to-end pair (peer: the other end node, maybe not adjacent)


class KeptPairs:
    """Kept halves handed over and still held, by this node's qubit handle."""

    def __init__(self) -> None:
        self._by_qubit: dict[int, KeptPair] = {}

    def __len__(self) -> int:
        return len(self._by_qubit)

    def __contains__(self, qubit: int) -> bool:
        return qubit in self._by_qubit

    def add(self, pair: KeptPair) -> None:
        self._by_qubit[pair.qubit] = pair

    def pop(self, qubit: int | None) -> KeptPair | None:
        """Forget a half (measured, freed or expired); None if it was not handed over."""
        return self._by_qubit.pop(qubit, None)

    def pop_named(
        self, peer: str, initiator: str, create_id: int, qubits: list[int]
    ) -> list[KeptPair]:
        """The halves the peer names in its EXPIRE, if they are of that request with that
        peer: a peer may not free qubits that are not its pairs' halves here."""
        named = []
        for qubit in qubits:
            pair = self._by_qubit.get(qubit)
            if pair is None or pair.peer != peer:
                continue
            if (pair.initiator, pair.create_id) != (initiator, create_id):
                continue
            named.append(self._by_qubit.pop(qubit))
        return named


class HeldNotices:
    """Messages for peers whose fibre is cut, sent when it is back (a reliable channel
    would retransmit them; the emulated fibre just loses what is sent across a cut)."""

    def __init__(self) -> None:
        self._by_peer: dict[str, list[Any]] = defaultdict(list)

    def hold(self, peer: str, body: Any) -> None:
        self._by_peer[peer].append(body)

    def waiting(self, peer: str) -> bool:
        return bool(self._by_peer.get(peer))

    def peers(self) -> list[str]:
        return [peer for peer, bodies in self._by_peer.items() if bodies]

    def take(self, peer: str) -> list[Any]:
        return self._by_peer.pop(peer, [])
