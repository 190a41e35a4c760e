"""Alarms with hysteresis, so that a value hovering at a threshold does not flap."""

from dataclasses import dataclass

__all__ = ["LowWaterAlarm"]


@dataclass
class LowWaterAlarm:
    """Says "low" once when a level falls below `threshold`, then stays quiet until the
    level has been back at `rearm` or more. It starts disarmed: a pool that is still
    filling up after start-up has not *fallen* anywhere."""

    threshold: int
    rearm: int
    armed: bool = False

    def __post_init__(self) -> None:
        if not 0 < self.threshold <= self.rearm:
            raise ValueError(f"need 0 < threshold <= rearm, got {self.threshold}, {self.rearm}")

    def observe(self, level: int) -> bool:
        """True when this level is news: the alarm goes off now."""
        if level >= self.rearm:
            self.armed = True
            return False
        if self.armed and level < self.threshold:
            self.armed = False
            return True
        return False
