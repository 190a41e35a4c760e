"""Faults a process can be told to emulate on its classical channels (for testing).

Pure state, consulted by the messaging core: peers whose fibre is cut (nothing crosses
in either direction), and a fraction of incoming messages dropped or delayed.
"""

import math
import random
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ChannelFaults"]


@dataclass
class ChannelFaults:
    """What goes wrong on this process's classical channels now."""

    cut_peers: set[str] = field(default_factory=set)
    drop_fraction: float = 0.0
    extra_delay_s: float = 0.0
    rng: random.Random = field(default_factory=random.Random)

    def set_classical(self, drop_fraction: float, extra_delay_s: float) -> None:
        if not 0.0 <= drop_fraction <= 1.0:
            raise ValueError(f"drop fraction must be in [0, 1], got {drop_fraction}")
        if not (extra_delay_s >= 0.0 and math.isfinite(extra_delay_s)):
            raise ValueError(f"extra delay must be >= 0 s, got {extra_delay_s}")
        self.drop_fraction = drop_fraction
        self.extra_delay_s = extra_delay_s

    def blocks(self, peer: str) -> bool:
        return peer in self.cut_peers

    def drops_incoming(self, sender: str, from_peer: bool) -> bool:
        """Lose this message? Cut fibres lose everything; the fraction applies to peers."""
        if sender in self.cut_peers:
            return True
        return from_peer and self.drop_fraction > 0 and self.rng.random() < self.drop_fraction

    def clear(self) -> None:
        self.cut_peers.clear()
        self.drop_fraction = 0.0
        self.extra_delay_s = 0.0

    def describe(self) -> dict[str, Any]:
        return {
            "cut_peers": sorted(self.cut_peers),
            "drop_fraction": self.drop_fraction,
            "extra_delay_s": self.extra_delay_s,
        }
