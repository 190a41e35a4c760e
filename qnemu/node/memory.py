"""A node's quantum memory as slots: free, reserved for a pair to come, or holding a qubit.

Pure bookkeeping (no I/O): the amplitudes live in the broker, the node only knows
which handle sits in which slot, since when, and for which request.
"""

from dataclasses import dataclass

__all__ = ["HeldQubit", "MemoryFull", "QuantumMemory"]


class MemoryFull(Exception):
    """No free slot for a qubit that needs one."""


@dataclass(frozen=True, slots=True)
class HeldQubit:
    qubit: int
    stored_at: float  # emulated seconds
    create_id: int | None = None
    sequence_number: int | None = None
    peer_qubit: int | None = None
    request_key: tuple[str, int] | None = None  # the link request it came with (initiator, id)


class QuantumMemory:
    """`capacity` qubit slots (communication and storage qubits alike)."""

    def __init__(self, capacity: int):
        if capacity < 1:
            raise ValueError(f"a memory needs at least one qubit, got {capacity}")
        self.capacity = capacity
        self.reserved = 0
        self.held: dict[int, HeldQubit] = {}

    @property
    def in_use(self) -> int:
        return self.reserved + len(self.held)

    @property
    def free_slots(self) -> int:
        return self.capacity - self.in_use

    def reserve(self, wanted: int) -> int:
        """Reserve up to `wanted` slots for pairs to come; returns how many were reserved."""
        granted = max(0, min(wanted, self.free_slots))
        self.reserved += granted
        return granted

    def unreserve(self, count: int) -> None:
        self.reserved = max(0, self.reserved - count)

    def store(self, held: HeldQubit, *, reserved: bool) -> None:
        """Put a qubit in a slot: a reserved one (a heralded pair) or a free one."""
        if held.qubit in self.held:
            raise ValueError(f"qubit {held.qubit} is already in memory")
        if reserved and self.reserved > 0:
            self.reserved -= 1
        elif self.free_slots <= 0:
            raise MemoryFull(f"no free slot for qubit {held.qubit} ({self.capacity} in use)")
        self.held[held.qubit] = held

    def holding(self, request_key: tuple[str, int]) -> int:
        """Qubits held for one link request."""
        return sum(1 for held in self.held.values() if held.request_key == request_key)

    def release(self, qubit: int) -> HeldQubit:
        try:
            return self.held.pop(qubit)
        except KeyError:
            raise KeyError(f"qubit {qubit} is not held in this memory") from None

    def expired(self, now_s: float, cutoff_s: float | None) -> list[HeldQubit]:
        """Held qubits stored longer than the cutoff time."""
        if cutoff_s is None:
            return []
        return [held for held in self.held.values() if now_s - held.stored_at > cutoff_s]
