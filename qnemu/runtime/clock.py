"""Emulated time: wall time since the run's epoch, divided by the run's time scale."""

import asyncio
import time
from dataclasses import dataclass

__all__ = ["EmulatedClock"]


@dataclass(frozen=True)
class EmulatedClock:
    """Shared by every process of a run: same epoch (wall seconds), same time scale.

    time_scale 1.0 is real time; 10 makes emulated time run ten times slower than wall
    time, for big networks on small hosts.
    """

    epoch_wall_s: float
    time_scale: float = 1.0

    def __post_init__(self) -> None:
        if not self.time_scale > 0:
            raise ValueError(f"time_scale must be > 0, got {self.time_scale}")

    def now(self) -> float:
        return (time.time() - self.epoch_wall_s) / self.time_scale

    def wall_delay_s(self, emulated_s: float) -> float:
        return max(0.0, emulated_s) * self.time_scale

    async def sleep_until(self, emulated_t: float) -> None:
        await asyncio.sleep(self.wall_delay_s(emulated_t - self.now()))
