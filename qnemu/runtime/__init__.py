"""What every qnemu process runs on: the emulated clock, metrics, and the messaging core."""

from qnemu.runtime.clock import EmulatedClock
from qnemu.runtime.service import Origin, Service, ServiceAddress

__all__ = ["EmulatedClock", "Origin", "Service", "ServiceAddress"]
