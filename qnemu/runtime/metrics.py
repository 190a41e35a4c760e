"""Metrics every qnemu process exports, on a registry of its own (no global state)."""

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    start_http_server,
)

__all__ = ["CommonMetrics", "serve_metrics"]

LATENESS_BUCKETS_S = (0.0, 1e-4, 3e-4, 1e-3, 3e-3, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)


class CommonMetrics:
    """Process identity, CPU/RSS, message counts, lateness and rejected messages."""

    def __init__(self, registry: CollectorRegistry, *, name: str, role: str, network: str):
        self.registry = registry
        ProcessCollector(registry=registry)
        info = Gauge(
            "qnemu_process_info",
            "Always 1; labels say which emulated process this is.",
            ["network", "name", "role"],
            registry=registry,
        )
        info.labels(network=network, name=name, role=role).set(1)
        self.rejected = Counter(
            "qnemu_wire_rejected_messages",
            "Messages rejected (malformed, unknown type, oversized, ...), by reason.",
            ["reason"],
            registry=registry,
        )
        self.messages = Counter(
            "qnemu_messages",
            "Messages handled, by direction (in/out) and message type.",
            ["direction", "msg_type"],
            registry=registry,
        )
        self.lateness = Histogram(
            "qnemu_message_lateness_seconds",
            "Emulated seconds a message was delivered after its fibre-delayed due time.",
            buckets=LATENESS_BUCKETS_S,
            registry=registry,
        )
        self.handler_errors = Counter(
            "qnemu_handler_errors",
            "Messages whose handler raised, by message type.",
            ["msg_type"],
            registry=registry,
        )


def serve_metrics(registry: CollectorRegistry, host: str, port: int):
    """Serve /metrics in a background thread; returns the server so it can be shut down."""
    server, _thread = start_http_server(port, addr=host, registry=registry)
    return server
