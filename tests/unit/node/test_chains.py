from dataclasses import dataclass

import pytest

from qnemu.node.chains import ChainTracker


@dataclass
class Pair:
    pair_id: str
    link_index: int
    bell_state: int
    qubits: tuple[int, int]
    attempts: int = 1


def pairs(*bells: int) -> list[Pair]:
    return [
        Pair(f"p{i}", i, bell, (10 * i, 10 * i + 1), attempts=i + 1) for i, bell in enumerate(bells)
    ]


def test_a_chain_completes_when_every_link_is_joined_in_any_order():
    links = pairs(1, 2, 3, 0)  # four links, three repeaters
    tracker = ChainTracker(4)
    assert tracker.add_swap(links[2], links[3], outcome=1, swapped_at=3.0) is None
    assert tracker.add_swap(links[0], links[1], outcome=2, swapped_at=1.0) is None
    assert len(tracker) == 2
    chain = tracker.add_swap(links[1], links[2], outcome=3, swapped_at=2.0)
    assert chain is not None
    assert chain.bell_state == 1 ^ 2 ^ 3 ^ 0 ^ 1 ^ 2 ^ 3  # link Bell states, then outcomes
    assert chain.end_qubits(last_link=3) == (0, 31)
    assert chain.first_pair_id() == "p0"
    assert chain.created_at == 3.0
    assert sum(chain.attempts.values()) == 1 + 2 + 3 + 4
    assert len(tracker) == 0


def test_discard_forgets_the_whole_chain():
    links = pairs(0, 0, 0)
    tracker = ChainTracker(3)
    tracker.add_swap(links[0], links[1], outcome=0)
    (lost,) = tracker.discard(["p1"])
    assert set(lost.pairs) == {"p0", "p1"}
    assert tracker.chain_of("p0") is None
    assert tracker.add_swap(links[1], links[2], outcome=0) is None  # p0 is gone for good


def test_a_chain_needs_a_repeater():
    with pytest.raises(ValueError):
        ChainTracker(1)
