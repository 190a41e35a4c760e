"""JSON Schemas of the MQTT API's payloads, rendered into docs/mqtt-api.md.

python -m qnemu.control.schema            # print the schema section
python -m qnemu.control.schema --write docs/mqtt-api.md   # replace it in the page
"""

import argparse
import json
import sys
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, TypeAdapter

from qnemu.control.launcher_payloads import (
    LauncherState,
    ProcessExitedEvent,
    ProcessPausedEvent,
    ProcessRequestPayload,
    ProcessResponse,
    ProcessResumedEvent,
    ProcessStartedEvent,
)
from qnemu.control.payloads import (
    AppRequestPayload,
    AppResponse,
    DoneResponse,
    EntangleRequestPayload,
    ErrorResponse,
    FaultAppliedEvent,
    FaultClearedEvent,
    FaultRequestPayload,
    FaultResponse,
    FreedResponse,
    FreeRequestPayload,
    KeyPoolLowEvent,
    KeyRequestPayload,
    KeysResponse,
    LinkDownEvent,
    LinkUpEvent,
    NodeStartedEvent,
    NodeState,
    NodeStoppingEvent,
    PairDeliveredEvent,
    PairResponse,
    QberAlarmEvent,
    RequestFailedEvent,
    RequestRejectedEvent,
)

__all__ = ["BEGIN", "END", "TOPIC_SCHEMAS", "json_schema", "render_markdown", "update_document"]

BEGIN = "<!-- BEGIN GENERATED SCHEMAS (python -m qnemu.control.schema --write docs/mqtt-api.md) -->"
END = "<!-- END GENERATED SCHEMAS -->"

Response = Annotated[
    PairResponse
    | DoneResponse
    | ErrorResponse
    | FreedResponse
    | KeysResponse
    | FaultResponse
    | AppResponse,
    Field(discriminator="kind"),
]
LauncherResponse = Annotated[ProcessResponse | ErrorResponse, Field(discriminator="kind")]

# (topic under qnemu/<network>/, who publishes, payload type)
TOPIC_SCHEMAS: list[tuple[str, str, Any]] = [
    ("<node>/request/entangle", "controller", EntangleRequestPayload),
    ("<node>/request/free", "controller", FreeRequestPayload),
    ("<node>/request/key", "controller", KeyRequestPayload),
    ("<node>/request/fault", "controller", FaultRequestPayload),
    ("<node>/request/app", "controller", AppRequestPayload),
    ("<node>/response/<correlation_id>", "node", Response),
    ("<node>/event/node_started", "node", NodeStartedEvent),
    ("<node>/event/node_stopping", "node", NodeStoppingEvent),
    ("<node>/event/pair_delivered", "node", PairDeliveredEvent),
    ("<node>/event/request_failed", "node", RequestFailedEvent),
    ("<node>/event/request_rejected", "node", RequestRejectedEvent),
    ("<node>/event/link_up", "node", LinkUpEvent),
    ("<node>/event/link_down", "node", LinkDownEvent),
    ("<node>/event/qber_alarm", "node", QberAlarmEvent),
    ("<node>/event/key_pool_low", "node", KeyPoolLowEvent),
    ("<node>/event/fault_applied", "node", FaultAppliedEvent),
    ("<node>/event/fault_cleared", "node", FaultClearedEvent),
    ("<node>/state (retained)", "node", NodeState),
    ("launcher/request/process", "controller", ProcessRequestPayload),
    ("launcher/response/<correlation_id>", "launcher", LauncherResponse),
    ("launcher/event/process_started", "launcher", ProcessStartedEvent),
    ("launcher/event/process_exited", "launcher", ProcessExitedEvent),
    ("launcher/event/process_paused", "launcher", ProcessPausedEvent),
    ("launcher/event/process_resumed", "launcher", ProcessResumedEvent),
    ("launcher/state (retained)", "launcher", LauncherState),
]


def json_schema(payload_type: Any, publisher: str) -> dict[str, Any]:
    """The JSON Schema of one topic's payload: what is accepted (requests) or sent."""
    mode = "validation" if publisher == "controller" else "serialization"
    return TypeAdapter(payload_type).json_schema(mode=mode)


def render_markdown() -> str:
    """The generated section of docs/mqtt-api.md, markers included."""
    parts = [BEGIN, ""]
    for topic, publisher, payload_type in TOPIC_SCHEMAS:
        schema = json.dumps(json_schema(payload_type, publisher), indent=2, sort_keys=True)
        parts += [
            f"### `qnemu/<network>/{topic}`",
            "",
            f"Published by the {publisher}.",
            "",
            "```json",
            schema,
            "```",
            "",
        ]
    parts.append(END)
    return "\n".join(parts)


def update_document(path: Path) -> bool:
    """Replace the generated section of `path`; True if the file changed."""
    text = path.read_text()
    start, end = text.index(BEGIN), text.index(END) + len(END)
    updated = text[:start] + render_markdown() + text[end:]
    if updated == text:
        return False
    path.write_text(updated)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m qnemu.control.schema")
    parser.add_argument("--write", type=Path, help="a Markdown file with the markers")
    args = parser.parse_args(argv)
    if args.write is None:
        print(render_markdown())
    elif update_document(args.write):
        print(f"updated {args.write}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
