"""A heralding station: one process per link, between its two nodes.

Knows the link physics and when the next attempt succeeds; asks the broker to create
the heralded state and tells both nodes, each after its fibre delay. Holds no state.
"""

from qnemu.station.station import MemoryParameters, StationService

__all__ = ["MemoryParameters", "StationService"]
