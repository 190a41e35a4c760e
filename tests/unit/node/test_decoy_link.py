"""Alice's pulse source on a bb84_decoy link: block size, pacing to the emulated clock."""

import asyncio

import numpy as np
import pytest

from qnemu.node.decoy_link import (
    MAX_BLOCK_DETECTIONS,
    TARGET_BLOCK_DETECTIONS,
    DecoyPulseSource,
    block_pulses,
)
from qnemu.qkd.decoy_bb84 import gain
from qnemu.topology.models import DecoyBB84LinkConfig


def link(**fields) -> DecoyBB84LinkConfig:
    return DecoyBB84LinkConfig(model="bb84_decoy", nodes=("a", "b"), length_km=25.0, **fields)


class FakeClock:
    """Emulated time that advances only when someone sleeps."""

    def __init__(self) -> None:
        self.t = 100.0
        self.slept: list[float] = []

    def now(self) -> float:
        return self.t

    async def sleep_until(self, emulated_t: float) -> None:
        self.slept.append(max(0.0, emulated_t - self.t))
        self.t = max(self.t, emulated_t)


def test_default_block_aims_at_the_target_detections():
    config = link()
    params = config.params()
    per_pulse = sum(
        p * gain(params, mu)
        for p, mu in zip(params.intensity_probabilities, params.intensities, strict=True)
    )
    assert block_pulses(config) * per_pulse == pytest.approx(TARGET_BLOCK_DETECTIONS, rel=1e-3)
    assert block_pulses(link(block_pulses=1_000_000)) == 1_000_000


def test_a_block_too_big_for_a_message_is_refused():
    too_many = int(2 * MAX_BLOCK_DETECTIONS / 0.005)
    with pytest.raises(ValueError, match="would not fit"):
        block_pulses(link(block_pulses=too_many))


def test_blocks_are_paced_to_the_emulated_clock_and_fall_behind_without_catching_up():
    clock = FakeClock()
    source = DecoyPulseSource(link(block_pulses=1_000_000), clock, np.random.default_rng(1))
    assert source.duration_s == pytest.approx(1e-3)
    first = asyncio.run(source.next_block())
    assert first.n_pulses == 1_000_000 and clock.t == pytest.approx(100.001)
    assert clock.slept == [pytest.approx(1e-3)]
    asyncio.run(source.next_block())  # on time: waits exactly one block
    assert clock.t == pytest.approx(100.002)
    clock.t += 0.5  # post-processing took 0.5 s: one block is sampled at once, the rest lost
    asyncio.run(source.next_block())
    assert clock.slept[-1] == 0.0 and clock.t == pytest.approx(100.502)
    assert source.skipped_s == pytest.approx(0.499)


def test_the_eavesdropper_raises_the_error_rate_of_what_bob_records():
    source = DecoyPulseSource(link(block_pulses=20_000_000), FakeClock(), np.random.default_rng(3))
    source.eavesdrop_fraction = 1.0
    block = asyncio.run(source.next_block())
    sifted = block.alice_basis == block.bob_basis
    errors = np.mean(block.alice_bit[sifted] != block.bob_bit[sifted])
    assert errors > 0.2
