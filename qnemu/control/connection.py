"""Where the MQTT broker is and how long to wait before connecting to it again."""

import random
from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = ["BrokerAddress", "ExponentialBackoff", "parse_broker_url"]

DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    """An MQTT broker: host, port and whether to speak TLS."""

    host: str
    port: int
    tls: bool = False

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


def parse_broker_url(url: str) -> BrokerAddress:
    """`mqtt://host[:port]` or `mqtts://host[:port]` (ports 1883 and 8883 by default)."""
    parts = urlsplit(url)
    if parts.scheme not in DEFAULT_PORTS:
        raise ValueError(f"MQTT URL must start with mqtt:// or mqtts://, got {url!r}")
    if not parts.hostname:
        raise ValueError(f"MQTT URL has no host: {url!r}")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"MQTT URL takes only a host and a port: {url!r}")
    try:
        port = parts.port
    except ValueError as error:
        raise ValueError(f"MQTT URL has a bad port: {url!r}") from error
    tls = parts.scheme == "mqtts"
    return BrokerAddress(parts.hostname, port or DEFAULT_PORTS[parts.scheme], tls)


class ExponentialBackoff:
    """Delays between reconnection attempts: doubling from `initial_s` up to `max_s`,
    each shortened by a random fraction up to `jitter` so that the nodes of a network
    do not all knock on a restarted broker at the same instant."""

    def __init__(
        self,
        initial_s: float = 0.25,
        max_s: float = 10.0,
        *,
        jitter: float = 0.2,
        rng: random.Random | None = None,
    ):
        if not 0 < initial_s <= max_s:
            raise ValueError(f"need 0 < initial_s <= max_s, got {initial_s}, {max_s}")
        if not 0 <= jitter < 1:
            raise ValueError(f"jitter must be in [0, 1), got {jitter}")
        self.initial_s = initial_s
        self.max_s = max_s
        self.jitter = jitter
        self.rng = rng or random.Random()
        self.failures = 0

    def next_delay_s(self) -> float:
        """The wait before the next attempt; each call counts one more failure."""
        ceiling_s = min(self.max_s, self.initial_s * 2.0**self.failures)
        self.failures += 1
        return ceiling_s * (1.0 - self.jitter * self.rng.random())

    def reset(self) -> None:
        """Connected: the next failure starts from `initial_s` again."""
        self.failures = 0
