"""What a node can tell about its links: whether each works, and which faults are on it.

A node sees three things about a link: its own fault state (a fibre it was told is cut),
whether the peer answers a ping, and whether the link's station answers (its stats carry
the station's faults: cut, eavesdropper, changed physics). `LinkWatch` probes all three
every `interval_s` and reports changes to its listeners:

- a link goes **down** when this node's fibre to the peer or station is cut, or when the
  peer or the station missed `misses_for_down` probes in a row (one lost ping is not an
  outage: a `classical --drop` fault loses some); it is **up** again at the first probe
  that finds no cut and both answering;
- a fault is **applied** when it appears (or changes) in this node's or a station's fault
  state, and **cleared** when it goes, whoever set it (`qnemu fault`, MQTT, Python).

The state machines (`LinkHealth`, `fault_items`, `fault_changes`) are plain code; only
`LinkWatch.run` does I/O, through the node's request().
"""

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import Gauge

from qnemu.wire.common import PingReply, PingRequest, StatsReply, StatsRequest

__all__ = [
    "FaultChange",
    "LinkChange",
    "LinkHealth",
    "LinkWatch",
    "fault_changes",
    "fault_items",
]

log = logging.getLogger(__name__)
PROBE_INTERVAL_S = 1.0  # wall seconds between probes of every link
PROBE_TIMEOUT_S = 1.0  # wall seconds to answer, on top of the fibre's round trip
MISSES_FOR_DOWN = 2

# (fault, link or None for the whole node, process where it is) -> its parameters
FaultKey = tuple[str, str | None, str]


@dataclass(frozen=True, slots=True)
class LinkChange:
    """A link of this node started or stopped working (`reason` says why it is down)."""

    link: str
    peer: str
    station: str
    up: bool
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class FaultChange:
    """A fault appeared, changed (applied) or went away (cleared) at `process`."""

    applied: bool
    fault: str
    link: str | None
    process: str
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass
class LinkHealth:
    """Up or down for one link, from successive probes (starts up: no news is good news)."""

    link: str
    peer: str
    station: str
    misses_for_down: int = MISSES_FOR_DOWN
    up: bool = True
    reason: str | None = None
    _peer_misses: int = 0
    _station_misses: int = 0

    def observe(self, *, cut: bool, peer_answered: bool, station_answered: bool):
        """One probe's findings; returns a LinkChange when the link changed state."""
        self._peer_misses = 0 if peer_answered else self._peer_misses + 1
        self._station_misses = 0 if station_answered else self._station_misses + 1
        reason = None
        if cut:
            reason = "fibre_cut"
        elif self._peer_misses >= self.misses_for_down:
            reason = "peer_unreachable"
        elif self._station_misses >= self.misses_for_down:
            reason = "station_unreachable"
        working = reason is None and peer_answered and station_answered
        if self.up and reason is not None:
            self.up, self.reason = False, reason
            return LinkChange(self.link, self.peer, self.station, False, reason)
        if not self.up and working:
            self.up, self.reason = True, None
            return LinkChange(self.link, self.peer, self.station, True)
        return None


def fault_items(
    node: str, node_faults: dict[str, Any], neighbours: dict[str, Any], stations: dict[str, dict]
) -> dict[FaultKey, dict[str, Any]]:
    """The faults on a node and its links as flat items.

    Args:
        node_faults: the node's own `describe_faults()`.
        neighbours: peer -> Neighbour (its `link_name` and `station`).
        stations: station -> its last known `describe_faults()` (missing: unknown).
    """
    items: dict[FaultKey, dict[str, Any]] = {}
    cut = set(node_faults.get("cut_peers", ()))
    for peer, neighbour in neighbours.items():
        if peer in cut or neighbour.station in cut:
            items[("cut", neighbour.link_name, node)] = {"peer": peer}
    _classical(items, node_faults, None, node)
    for neighbour in neighbours.values():
        faults = stations.get(neighbour.station)
        if faults is None:
            continue
        link, station = neighbour.link_name, neighbour.station
        if faults.get("link_cut"):
            items[("cut", link, station)] = {}
        if faults.get("eavesdrop_fraction"):
            items[("eavesdrop", link, station)] = {"fraction": faults["eavesdrop_fraction"]}
        if faults.get("link_changed"):
            items[("set_link", link, station)] = dict(faults["link_changed"])
        _classical(items, faults, link, station)
    return items


def _classical(items: dict, faults: dict[str, Any], link: str | None, process: str) -> None:
    drop, delay = faults.get("drop_fraction", 0.0), faults.get("extra_delay_s", 0.0)
    if drop or delay:
        items[("classical", link, process)] = {"drop_fraction": drop, "extra_delay_s": delay}


def fault_changes(before: dict[FaultKey, dict], after: dict[FaultKey, dict]) -> list[FaultChange]:
    """What was applied (new or changed) and cleared between two `fault_items`."""
    changes = [
        FaultChange(False, fault, link, process, before[key])
        for key in before
        if key not in after
        for fault, link, process in [key]
    ]
    changes += [
        FaultChange(True, fault, link, process, parameters)
        for key, parameters in after.items()
        if before.get(key) != parameters
        for fault, link, process in [key]
    ]
    return changes


class LinkWatch:
    """Probes a node's links and tells listeners about link and fault changes."""

    def __init__(
        self,
        node: Any,
        *,
        interval_s: float = PROBE_INTERVAL_S,
        timeout_s: float = PROBE_TIMEOUT_S,
        misses_for_down: int = MISSES_FOR_DOWN,
    ):
        self.node = node
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.health = {
            peer: LinkHealth(n.link_name, peer, n.station, misses_for_down)
            for peer, n in node.neighbours.items()
        }
        self.link_listeners: list[Callable[[LinkChange], None]] = []
        self.fault_listeners: list[Callable[[FaultChange], None]] = []
        self._stations: dict[str, dict] = {}  # station -> its faults at the last answer
        self._faults: dict[FaultKey, dict] = {}
        self._poke = asyncio.Event()
        self.m_up = Gauge(
            "qnemu_link_up",
            "1 while the node finds its link working (no cut, peer and station answer).",
            ["peer", "link"],
            registry=node.registry,
        )
        for peer, health in self.health.items():
            self.m_up.labels(peer=peer, link=health.link).set(1)

    def poke(self) -> None:
        """Look again now (a fault was just applied here)."""
        self._poke.set()

    def stats(self) -> dict[str, dict[str, Any]]:
        """peer -> {"up", "reason"} for the node's retained state."""
        return {peer: {"up": h.up, "reason": h.reason} for peer, h in self.health.items()}

    async def run(self) -> None:
        while True:
            self._poke.clear()
            await self.probe()
            try:
                async with asyncio.timeout(self.interval_s):
                    await self._poke.wait()
                # poked: the local fault state changed; tell at once, probe fully next time
                self._check_faults()
            except TimeoutError:
                pass

    async def probe(self) -> None:
        """One round: every peer and station asked at once, then changes told."""
        node = self.node
        results = await asyncio.gather(
            *(self._answers(peer) for peer in self.health), return_exceptions=True
        )
        for (peer, health), result in zip(self.health.items(), results, strict=True):
            if isinstance(result, BaseException):
                log.warning("%s: probing %s failed: %r", node.name, peer, result)
                continue
            peer_answered, station_faults = result
            neighbour = node.neighbours[peer]
            if station_faults is not None:
                self._stations[neighbour.station] = station_faults
            change = health.observe(
                cut=node.faults.blocks(peer) or node.faults.blocks(neighbour.station),
                peer_answered=peer_answered,
                station_answered=station_faults is not None,
            )
            if change is not None:
                self.m_up.labels(peer=peer, link=health.link).set(int(change.up))
                self._tell(self.link_listeners, change)
        self._check_faults()

    def _check_faults(self) -> None:
        node = self.node
        after = fault_items(node.name, node.describe_faults(), node.neighbours, self._stations)
        for change in fault_changes(self._faults, after):
            self._tell(self.fault_listeners, change)
        self._faults = after

    async def _answers(self, peer: str) -> tuple[bool, dict | None]:
        """(the peer answered, the station's faults or None if it did not answer)."""
        neighbour = self.node.neighbours[peer]
        delays = self.node.delays_s
        round_trip_s = 2 * max(delays.get(peer, 0.0), delays.get(neighbour.station, 0.0))
        timeout_s = self.timeout_s + self.node.clock.wall_delay_s(round_trip_s)
        ping, stats = await asyncio.gather(
            self._ask(peer, PingRequest(), timeout_s),
            self._ask(neighbour.station, StatsRequest(), timeout_s),
        )
        peer_answered = isinstance(ping, PingReply)
        station_faults = stats.stats.get("faults", {}) if isinstance(stats, StatsReply) else None
        return peer_answered, station_faults

    async def _ask(self, process: str, body: Any, timeout_s: float) -> Any:
        if self.node.faults.blocks(process):
            return None  # the fibre is cut: the question could not leave
        try:
            return (await self.node.request(process, body, timeout_s=timeout_s)).body
        except TimeoutError:
            return None

    def _tell(self, listeners: list, change: Any) -> None:
        for listener in listeners:
            try:
                listener(change)
            except Exception:
                log.exception("%s: a link-watch listener failed", self.node.name)
