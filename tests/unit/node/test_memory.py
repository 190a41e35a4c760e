import pytest

from qnemu.node.memory import HeldQubit, MemoryFull, QuantumMemory


def test_reserve_is_bounded_by_free_slots():
    memory = QuantumMemory(4)
    assert memory.reserve(3) == 3
    assert memory.reserve(3) == 1
    assert memory.free_slots == 0
    memory.unreserve(2)
    assert memory.free_slots == 2


def test_store_uses_a_reservation_then_a_free_slot():
    memory = QuantumMemory(2)
    memory.reserve(1)
    memory.store(HeldQubit(10, 0.0), reserved=True)
    assert (memory.reserved, len(memory.held)) == (0, 1)
    memory.store(HeldQubit(11, 0.0), reserved=False)
    with pytest.raises(MemoryFull):
        memory.store(HeldQubit(12, 0.0), reserved=False)
    with pytest.raises(ValueError, match="already"):
        memory.store(HeldQubit(11, 0.0), reserved=False)


def test_release_and_cutoff():
    memory = QuantumMemory(3)
    memory.store(HeldQubit(1, stored_at=0.0), reserved=False)
    memory.store(HeldQubit(2, stored_at=0.9), reserved=False)
    assert [h.qubit for h in memory.expired(1.5, cutoff_s=1.0)] == [1]
    assert memory.expired(100.0, cutoff_s=None) == []
    assert memory.release(1).qubit == 1
    with pytest.raises(KeyError, match="not held"):
        memory.release(1)


def test_capacity_must_be_positive():
    with pytest.raises(ValueError):
        QuantumMemory(0)
