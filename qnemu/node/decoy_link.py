"""Alice's transmitter on a bb84_decoy link: blocks of pulses paced to the emulated clock.

A 1 GHz source cannot be emulated pulse by pulse. Each block of `pulses` pulses lasts
pulses / source_rate_hz of emulated time; when that time has passed, the whole block
is sampled at once (`qnemu.qkd.decoy_bb84.sample_block`, vectorised numpy), so raw key
appears at the physical rate and never faster. The node asks for the next block when
post-processing has room for it (`qnemu.node.qkd.DECOY_BLOCKS_IN_FLIGHT`); when that
comes later than the block's end, one elapsed block is sampled at once and the rest of
the elapsed time is skipped: the link then simply falls behind its physical rate (what
`bench/decoy_bb84.py` reports as the ratio emulated/physical).
"""

import math

import numpy as np

from qnemu.qkd.decoy_bb84 import DecoyBlock, sample_block
from qnemu.runtime import EmulatedClock
from qnemu.topology.models import DecoyBB84LinkConfig

__all__ = ["MAX_BLOCK_DETECTIONS", "TARGET_BLOCK_DETECTIONS", "DecoyPulseSource", "block_pulses"]

# Detections a block aims at: ~10^5 signal bits after sifting, enough to keep Cascade's
# and the decoy estimators' statistical cost small, few enough to stay well inside a
# message (one byte per detection in each of three messages; MAX_MESSAGE_BYTES is 4 MiB).
TARGET_BLOCK_DETECTIONS = 2**18
MAX_BLOCK_DETECTIONS = 2**20


def block_pulses(config: DecoyBB84LinkConfig) -> int:
    """Pulses per block: the configured number, or enough for TARGET_BLOCK_DETECTIONS.

    Raises:
        ValueError: when the configured number would make blocks too big for a message.
    """
    params = config.params()
    detected = params.intensity_probabilities * (
        1.0
        - (1.0 - params.background_probability) * np.exp(-params.transmittance * params.intensities)
    )
    per_pulse = float(detected.sum())
    if config.block_pulses is None:
        return max(1000, math.ceil(TARGET_BLOCK_DETECTIONS / per_pulse))
    if config.block_pulses * per_pulse > MAX_BLOCK_DETECTIONS:
        raise ValueError(
            f"link {config.name}: block_pulses {config.block_pulses} gives about"
            f" {config.block_pulses * per_pulse:.3g} detections per block, more than"
            f" {MAX_BLOCK_DETECTIONS}: a block's messages would not fit"
        )
    return config.block_pulses


class DecoyPulseSource:
    """Alice's weak-coherent source and the fibre to Bob's detectors, one block at a time."""

    def __init__(self, config: DecoyBB84LinkConfig, clock: EmulatedClock, rng: np.random.Generator):
        self.params = config.params()
        self.pulses = block_pulses(config)
        self.duration_s = self.pulses / self.params.source_rate_hz
        self.clock = clock
        self.rng = rng
        self.eavesdrop_fraction = 0.0  # intercept-resend (`qnemu eavesdrop LINK`)
        self.window_start: float | None = None  # emulated start of the next block
        self.skipped_s = 0.0  # emulated time no block covered (the emulator fell behind)

    async def next_block(self) -> DecoyBlock:
        """The next block, once its last pulse has left (emulated time)."""
        now = self.clock.now()
        if self.window_start is None:
            self.window_start = now
        elif now > self.window_start + self.duration_s:  # fell behind: catch up one block only
            self.skipped_s += now - self.duration_s - self.window_start
            self.window_start = now - self.duration_s
        end = self.window_start + self.duration_s
        await self.clock.sleep_until(end)
        self.window_start = end
        return sample_block(self.params, self.pulses, self.rng, self.eavesdrop_fraction)
