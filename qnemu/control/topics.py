"""MQTT topic names of the northbound API: `qnemu/<network>/<node>/<section>[/<leaf>]`."""

from dataclasses import dataclass

__all__ = [
    "EVENT_KINDS",
    "LAUNCHER",
    "LAUNCHER_EVENT_KINDS",
    "LAUNCHER_REQUEST_KINDS",
    "REQUEST_KINDS",
    "TOPIC_ROOT",
    "NodeTopics",
    "ParsedTopic",
    "network_events_filter",
    "network_states_filter",
    "parse_topic",
]

TOPIC_ROOT = "qnemu"
REQUEST_KINDS = ("entangle", "free", "key", "fault", "app")
EVENT_KINDS = (
    "node_started",
    "node_stopping",
    "pair_delivered",
    "request_failed",
    "request_rejected",
    "link_up",
    "link_down",
    "qber_alarm",
    "key_pool_low",
    "fault_applied",
    "fault_cleared",
)
LAUNCHER = "launcher"  # the launcher's topics: qnemu/<network>/launcher/...
LAUNCHER_REQUEST_KINDS = ("process",)
LAUNCHER_EVENT_KINDS = ("process_started", "process_exited", "process_paused", "process_resumed")
SECTIONS = ("request", "response", "event", "state")


@dataclass(frozen=True, slots=True)
class NodeTopics:
    """The topics of one node of one network."""

    network: str
    node: str

    @property
    def base(self) -> str:
        return f"{TOPIC_ROOT}/{self.network}/{self.node}"

    def request(self, kind: str) -> str:
        return f"{self.base}/request/{kind}"

    @property
    def requests_filter(self) -> str:
        """What the node subscribes to: every request kind, known or not."""
        return f"{self.base}/request/+"

    def response(self, correlation_id: str) -> str:
        return f"{self.base}/response/{correlation_id}"

    def event(self, kind: str) -> str:
        return f"{self.base}/event/{kind}"

    @property
    def state(self) -> str:
        return f"{self.base}/state"


@dataclass(frozen=True, slots=True)
class ParsedTopic:
    """A topic of the API taken apart; `leaf` is the kind or correlation id, if any."""

    network: str
    node: str
    section: str
    leaf: str | None


def parse_topic(topic: str) -> ParsedTopic | None:
    """The parts of an API topic, or None when the topic is not one of ours."""
    parts = topic.split("/")
    if len(parts) < 4 or parts[0] != TOPIC_ROOT or parts[3] not in SECTIONS:
        return None
    if parts[3] == "state":
        return ParsedTopic(parts[1], parts[2], "state", None) if len(parts) == 4 else None
    if len(parts) != 5 or not parts[4]:
        return None
    return ParsedTopic(parts[1], parts[2], parts[3], parts[4])


def network_events_filter(network: str) -> str:
    """Every event of every node of a network."""
    return f"{TOPIC_ROOT}/{network}/+/event/+"


def network_states_filter(network: str) -> str:
    """The retained state of every node of a network."""
    return f"{TOPIC_ROOT}/{network}/+/state"
