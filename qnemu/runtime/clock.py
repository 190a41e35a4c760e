"""Emulated time: wall time since the run's epoch, divided by the run's time scale."""

import asyncio
import time
from dataclasses import dataclass

__all__ = ["TIMER_GRANULARITY_S", "EmulatedClock", "wait_precisely"]

# asyncio's timers wake through epoll, whose timeout is in whole milliseconds rounded up:
# a timer fires up to 1 ms after its time (0.5 ms on average), and every timed delivery
# would be that late. So the last millisecond before a deadline is waited by yielding to
# the loop instead (it still serves everything else meanwhile).
TIMER_GRANULARITY_S = 1e-3


async def wait_precisely(wall_s: float, deadline: float, now) -> None:
    """Wait until `now() >= deadline` (`wall_s` wall seconds from now): a timer for all but
    the last millisecond, then yields to the event loop until the deadline."""
    if wall_s > TIMER_GRANULARITY_S:
        await asyncio.sleep(wall_s - TIMER_GRANULARITY_S)
    while now() < deadline:
        await asyncio.sleep(0)


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
        await wait_precisely(self.wall_delay_s(emulated_t - self.now()), emulated_t, self.now)
