"""The station's success times follow the link physics even when it batches late pairs."""

import asyncio
import math

from qnemu.physics.links import depolarise
from qnemu.runtime import ServiceAddress
from qnemu.station.station import MemoryParameters, StationService, _Generation


class LaggingClock:
    """Emulated time that a sleeping station always overshoots by `lag_s` (a busy host)."""

    def __init__(self, lag_s: float):
        self.now_s = 0.0
        self.lag_s = lag_s

    def now(self) -> float:
        return self.now_s

    def wall_delay_s(self, emulated_s: float) -> float:
        return max(0.0, emulated_s)

    async def sleep_until(self, emulated_t: float) -> None:
        self.now_s = max(self.now_s, emulated_t) + self.lag_s


def test_batched_successes_keep_the_physical_rate():
    p, period_s = 0.02, 1e-6  # 20 000 pairs per second: every wake-up finds many due
    physics = depolarise(fidelity=0.9, prob_success=p, t_cycle_s=period_s)
    station = StationService(
        "station-a-b",
        ServiceAddress("inproc://unused"),
        LaggingClock(lag_s=50e-6),
        link_name="a-b",
        nodes=("a", "b"),
        physics=physics,
        memories={"a": MemoryParameters(), "b": MemoryParameters()},
        seed=7,
    )
    generation = _Generation("a", 1, credits={"a": 10**9, "b": 10**9})
    created_ahead = []

    async def no_broker(peer, body, **_):  # pairs created ahead of a success go nowhere
        created_ahead.append(body)

    station.request = no_broker

    async def run() -> tuple[list, int]:
        successes, batches = [], 0
        while len(successes) < 20_000:
            batch, ahead = await station._attempt_until_success(generation)
            if ahead is not None:
                await ahead
            successes += batch
            batches += 1
        return successes, batches

    successes, batches = asyncio.run(run())
    assert batches < len(successes) / 1.5  # the lag really made it batch
    # A success still ahead when the station goes to sleep has its pair made ahead of it.
    assert 0 < len(created_ahead) <= batches
    assert all(len(body.ops) == 1 for body in created_ahead)
    attempts = [success.attempts for success in successes]
    n = len(attempts)
    mean = sum(attempts) / n
    sigma = math.sqrt((1 - p) / p**2 / n)  # standard error of a geometric mean
    assert abs(mean - 1 / p) < 5 * sigma, (mean, 1 / p, sigma)
    # Success times are exactly the attempts laid end to end.
    assert math.isclose(successes[-1].created_at, sum(attempts) * period_s, rel_tol=1e-9)
