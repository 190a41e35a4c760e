"""Every handler of every process, fed well-typed nonsense: nothing dies, raises or stops serving.

The decoder is fuzzed in tests/unit/wire/test_messages_fuzz.py; here the bodies decode
fine (right field names, right types) but carry values no peer would send: unknown
qubits and node names, negative and huge numbers, create_ids nobody issued, empty
lists, odd strings. Each process of a running network gets a few hundred of them from
an authenticated client; afterwards every process must still be up, answer a ping,
show no handler exception (no `internal` reply, no handler_errors, no traceback in its
log), and the network must still deliver pairs.
"""

import asyncio
import dataclasses
import re
import time
import types
import typing
import urllib.request
from collections import Counter
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import msgpack
import numpy as np
import pytest
import zmq
from hypothesis import Phase, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

import qnemu.wire.qkd  # noqa: F401  (registers the QKD message types)
from qnemu.client import QnemuClient
from qnemu.physics.bell import BellState, bell_density
from qnemu.runtime.curve import apply_client, client_identity
from qnemu.wire import PROTOCOL_VERSION, decode, encode, message_class, message_types
from qnemu.wire.common import ErrorReply, FaultRequest, PingReply, PingRequest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

TOPOLOGY = {
    "name": "integration-handler-fuzz",
    "time_scale": 1.0,
    "seed": 17,
    "defaults": {"node": {"qubits": 4, "t1_s": None, "t2_s": None}},
    # bob and carol declare SAEs: their link runs QKD, so its handlers are fuzzed too
    "nodes": {"alice": {}, "bob": {"saes": ["bob_app"]}, "carol": {"saes": ["carol_app"]}},
    "links": [
        {"nodes": ["alice", "bob"], "model": "perfect", "t_cycle_s": 0.02},
        {"nodes": ["bob", "carol"], "model": "perfect", "t_cycle_s": 0.02},
    ],
}
PROCESSES = ["broker", "station-alice-bob", "station-bob-carol", "alice", "bob", "carol"]
FUZZER = "fuzzer"  # the DEALER identity and header.sender of everything sent here
EXAMPLES_PER_PROCESS = 30
BATCH = 10  # messages per example: 300 per process
HANDLER_ERRORS = "qnemu_handler_errors_total"
# Only what a handler raising leaves in a log; rejected input is logged as a warning.
FAILURE_LINES = re.compile(r"Traceback|handler for \S+ failed|background task failed")

# ---- values no peer would send, but of the right type --------------------------------

NAMES = ["alice", "bob", "carol", "broker", "station-alice-bob", "station-bob-carol", FUZZER]
ODD_STRINGS = [
    "",
    " ",
    "\x00",
    "\n\t",
    "é☃🜁\u202e",
    "x" * 5000,
    "../../etc/passwd",
    "%s%n{0}",
    "nobody",
    "alice:1",
    "alice:-1",
    "alice:x",
    ":",
    "alice:1:2",
    "alice:0:0",
    "relay/alice>carol/0",
    "bob-carol/0/0",
    "Z",
    "X",
    "Y",
    "random",
    "keep",
    "measure",
    "cut",
    "restore",
    "clear",
    "classical",
    "set_link",
    "eavesdrop",
    "H",
    "CNOT",
    "RX",
    "depolarise",
    "drop_fraction",
    "extra_delay_s",
    "fraction",
    "fidelity",
    "t_cycle_s",
    "prob_success",
]
STRINGS = st.sampled_from(NAMES + ODD_STRINGS) | st.text(max_size=8)
INTS = st.sampled_from(
    [-1, 0, 1, 2, 3, 255, 256, 2**31, 2**32, 2**53 + 1, 2**63 - 1, -(2**63)]
) | st.integers(-3, 40)
FLOATS = st.sampled_from(
    [0.0, -0.0, -1.0, 0.5, 1.0, 1.5, 1e-300, 5e-324, 1e300, 1.7976931348623157e308, -1e308]
) | st.floats(-1e3, 1e3)
BELL_BYTES = bell_density(BellState.PHI_PLUS).astype("<c16").tobytes()
BYTES = st.sampled_from(
    [b"", b"\x00", b"\xff" * 7, b"\x00" * 256, BELL_BYTES, b"\xff" * 256, b"\x01" * 64]
) | st.binary(max_size=40)
ANY = st.recursive(
    st.none() | st.booleans() | INTS | FLOATS | STRINGS | BYTES,
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(STRINGS, kids, max_size=3),
    max_leaves=6,
)


def odd_value(annotation: Any) -> st.SearchStrategy:
    """Values of this field type, drawn towards the edges (wire-valid, semantically odd)."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Annotated:
        return odd_value(args[0])
    if annotation is Any:
        return ANY
    if annotation is type(None):
        return st.none()
    if origin is Literal:
        return st.sampled_from(args)
    if origin in (Union, types.UnionType):
        return st.one_of([odd_value(arg) for arg in args])
    if origin is list:
        return st.lists(odd_value(args[0]), max_size=4)
    if origin is tuple:
        return st.tuples(*(odd_value(arg) for arg in args))
    if origin is dict:
        return st.dictionaries(STRINGS, odd_value(args[1]), max_size=3)
    simple = {bool: st.booleans(), int: INTS, float: FLOATS, str: STRINGS, bytes: BYTES}
    if annotation in simple:
        return simple[annotation]
    assert dataclasses.is_dataclass(annotation), f"no strategy for {annotation!r}"
    hints = typing.get_type_hints(annotation, include_extras=True)
    fields = {f.name: odd_value(hints[f.name]) for f in dataclasses.fields(annotation)}
    return st.builds(annotation, **fields)


MESSAGE_TYPES = message_types()
ROLE_ONLY = {"broker": ["ops_request"], "station": ["generate_credit", "generate_cancel"]}
COMMON = ["ping_request", "stats_request", "fault_request", "error_reply"]


def messages(types: list[str]) -> st.SearchStrategy:
    return st.sampled_from(types).flatmap(lambda t: odd_value(message_class(t)))


def messages_for(process: str) -> st.SearchStrategy:
    """Mostly what the process handles (so the fuzz goes deep), sometimes anything."""
    role = "broker" if process == "broker" else "station" if "-" in process else "node"
    if role == "node":
        elsewhere = {t for types in ROLE_ONLY.values() for t in types}
        own = [t for t in MESSAGE_TYPES if t not in elsewhere]
    else:
        own = ROLE_ONLY[role] * 6 + COMMON  # ops and credits weigh more than the rest
    return st.one_of(messages(own), messages(own), messages(own), messages(MESSAGE_TYPES))


# Handler exceptions the fuzz run tolerates: none (the two it found are fixed: a node
# answering a non-peer on its own connection, and app_epr_half checking its label).
KNOWN_BUGS: dict[str, re.Pattern] = {}
HANDLER_FAILED = re.compile(r"handler for (\S+) failed")


def known_bug(message: str) -> str | None:
    return next((bug for bug, pattern in KNOWN_BUGS.items() if pattern.search(message)), None)


# ---- the regression list: the most interesting of them, sent even without the search ---

OPS = "ops_request"
REGRESSIONS: list = [
    ("ping_request", {}),
    ("fault_request", {"kind": "classical", "parameters": {"drop_fraction": "lots"}}),
    ("fault_request", {"kind": "classical", "parameters": {"extra_delay_s": 1e308}}),
    ("fault_request", {"kind": "classical", "parameters": {"drop_fraction": [1]}}),
    ("fault_request", {"kind": "set_link", "parameters": {"t_cycle_s": -1.0}}),
    ("fault_request", {"kind": "set_link", "parameters": {"fidelity": 1e300}}),
    ("fault_request", {"kind": "set_link", "parameters": {"nodes": ["x", "y"]}}),
    ("fault_request", {"kind": "eavesdrop", "parameters": {"fraction": "\x00"}}),
    ("fault_request", {"kind": "\u202e", "target": "nobody"}),
    ("fault_request", {"kind": "cut", "target": ""}),
    ("error_reply", {"code": "internal", "message": "x" * 5000}),
    (OPS, {"ops": []}),
    (OPS, {"ops": [{"op": "free", "qubit": -1}, {"op": "free", "qubit": 2**63 - 1}]}),
    (OPS, {"ops": [{"op": "gate", "gate": "CNOT", "qubits": [0, 0]}]}),
    (OPS, {"ops": [{"op": "gate", "gate": "RX", "qubits": [0], "angle": 1e308}]}),
    (OPS, {"ops": [{"op": "gate", "gate": "H", "qubits": []}]}),
    (OPS, {"ops": [{"op": "measure", "qubit": 0, "basis": "\x00"}]}),
    (OPS, {"ops": [{"op": "alloc", "t1_s": -1.0, "t2_s": 1e300}]}),
    (
        OPS,
        {
            "ops": [
                {"op": "alloc"},
                {"op": "noise", "channel": "dephase", "qubits": [0], "parameter": 1.5},
            ]
        },
    ),
    (OPS, {"ops": [{"op": "create_pair", "owners": [FUZZER, FUZZER], "state": b"\xff" * 256}]}),
    (OPS, {"ops": [{"op": "create_pair", "owners": ["alice", "bob"], "state": BELL_BYTES}]}),
    (OPS, {"ops": [{"op": "create_pair", "owners": [FUZZER, ""], "state": BELL_BYTES}]}),
    (OPS, {"ops": [{"op": "bell_measure", "qubits": [-1, -1]}]}),
    (OPS, {"ops": [{"op": "reduced_state", "qubits": [0, 1, 2, 3]}]}),
    (OPS, {"ops": [{"op": "fidelity", "qubits": [0], "target_real": [], "target_imag": [1.0]}]}),
    (
        OPS,
        {
            "ops": [
                {"op": "fidelity", "qubits": [0], "target_real": [1.0, 0.0], "target_imag": [0.0]}
            ]
        },
    ),
    ("entangle_request", {"remote_node_id": "nobody", "number": 2**63 - 1}),
    ("entangle_request", {"remote_node_id": FUZZER, "number": -1}),
    ("entangle_request", {"remote_node_id": "bob", "number": 0, "max_time_s": -1.0}),
    ("entangle_request", {"remote_node_id": "bob", "type": "teleport", "basis": "W"}),
    (
        "entangle_request",
        {"remote_node_id": "bob", "minimum_fidelity": 1e300, "max_time_s": 0.1},
    ),
    ("entangle_request", {"remote_node_id": "", "max_time_s": 1e300}),
    pytest.param(
        "create_request",
        {
            "create_id": -1,
            "remote_node_id": "alice",
            "number": 2**63 - 1,
            "minimum_fidelity": -1.0,
            "max_time_s": 0.1,
            "type": "keep",
            "basis": "Z",
            "purpose": "alice:x",
        },
    ),
    pytest.param(
        "create_request",
        {
            "create_id": 0,
            "remote_node_id": "nobody",
            "number": 1,
            "minimum_fidelity": 0.0,
            "max_time_s": 0.1,
            "type": "\x00",
            "basis": "",
            "purpose": ":",
        },
    ),
    ("create_accept", {"create_id": 2**63 - 1}),
    ("create_reject", {"create_id": 0, "error_code": "", "message": "\x00"}),
    ("request_end", {"create_id": -(2**63), "reason": ""}),
    pytest.param(
        "pair_report",
        {
            "create_id": 1,
            "halves": [{"sequence_number": -1, "delivered_at": 1e300, "qubit": 2**63 - 1}],
        },
    ),
    ("pair_report", {"create_id": 1, "halves": [{"sequence_number": 0, "delivered_at": 0.0}]}),
    ("herald", {"initiator": "nobody", "create_id": 0, "pairs": []}),
    (
        "herald",
        {
            "initiator": "alice",
            "create_id": 1,
            "pairs": [
                {
                    "sequence_number": 0,
                    "qubit": -1,
                    "peer_qubit": -1,
                    "bell_state": 99,
                    "created_at": -1e308,
                    "attempts": -1,
                    "fidelity": 2.0,
                }
            ],
        },
    ),
    (
        "generate_credit",
        {"initiator": "alice", "create_id": 1, "peer": "bob", "credits": 2**63 - 1},
    ),
    ("generate_credit", {"initiator": "", "create_id": -1, "peer": "nobody", "credits": -5}),
    ("generate_cancel", {"initiator": "nobody", "create_id": 2**63 - 1}),
    ("measure_request", {"qubit": -1, "basis": "W"}),
    ("measure_request", {"qubit": 0, "basis": "Z"}),
    ("free_request", {"qubits": []}),
    ("free_request", {"qubits": [0, 0, -1, 2**63 - 1]}),
    (
        "path_request",
        {"src": "alice", "request_id": -1, "path": [], "type": "keep", "basis": "Z"},
    ),
    (
        "path_request",
        {
            "src": "nobody",
            "request_id": 0,
            "path": ["carol", "nobody", "carol"],
            "type": "measure",
            "basis": "?",
            "purify_rounds": [-3],
        },
    ),
    (
        "path_request",
        {
            "src": "alice",
            "request_id": 7,
            "path": ["alice"],
            "type": "keep",
            "basis": "Z",
            "purify_rounds": [2**63 - 1],
            "purify": "pumping",
        },
    ),
    ("path_end", {"src": "alice", "request_id": 2**63 - 1, "reason": "", "delivered": ["::"]}),
    ("path_failed", {"src": "", "request_id": 0, "error_code": "", "message": ""}),
    (
        "swap_report",
        {
            "src": "alice",
            "request_id": 0,
            "outcome": 99,
            "left": {
                "pair_id": "alice:x:y",
                "link_index": -1,
                "bell_state": 7,
                "qubits": [-1, -1],
                "attempts": 0,
            },
            "right": {
                "pair_id": "",
                "link_index": 2**63 - 1,
                "bell_state": -1,
                "qubits": [0, 0],
                "attempts": -1,
            },
        },
    ),
    ("segment_broken", {"src": "alice", "request_id": 0, "pair_ids": ["", ":"], "reason": ""}),
    (
        "end_half",
        {
            "src": "alice",
            "request_id": 0,
            "first_pair_id": "a:b:c",
            "delivered_at": -1.0,
            "outcome": 7,
            "basis": "W",
        },
    ),
    ("purify_step", {"src": "alice", "request_id": 0, "keep_id": "", "sacrifice_id": ""}),
    (
        "purify_step",
        {
            "src": "alice",
            "request_id": 1,
            "keep_id": "a",
            "sacrifice_id": "a",
            "link_index": -1,
            "twirls": [99, -1, 3],
        },
    ),
    (
        "purify_result",
        {
            "src": "alice",
            "request_id": 1,
            "keep_id": "a",
            "success": True,
            "final": True,
            "link_index": 2**63 - 1,
            "attempts": -5,
            "twirl": 12,
        },
    ),
    ("purify_outcome", {"src": "alice", "request_id": 0, "keep_id": "x", "outcome": -1}),
    (
        "purify_result",
        {"src": "alice", "request_id": 0, "keep_id": "x", "success": True, "final": True},
    ),
    ("app_gate_request", {"gate": "H", "qubits": [0]}),  # no app attached yet
    ("app_attach_request", {"app": "\x00" * 300}),
    ("app_alloc_request", {}),
    ("app_gate_request", {"gate": "CNOT", "qubits": [0, 0]}),
    ("app_gate_request", {"gate": "RZ", "qubits": [2**63 - 1], "angle": 1e308}),
    ("app_measure_request", {"qubit": -1, "basis": "", "inplace": True}),
    ("app_free_request", {"qubits": [-1, -1]}),
    ("app_state_request", {"qubits": []}),
    ("app_state_request", {"qubits": list(range(30))}),
    ("app_send_request", {"remote_node_id": "nobody", "payload": "{"}),
    ("app_send_request", {"remote_node_id": "alice", "payload": "x" * 5000}),
    ("app_epr_create_request", {"remote_node_id": "nobody", "number": -1}),
    (
        "app_epr_create_request",
        {"remote_node_id": "bob", "number": 0, "type": "\x00", "max_time_s": 0.1},
    ),
    ("app_epr_recv_request", {"remote_node_id": "", "number": 2**63 - 1, "type": "?"}),
    ("app_message", {"payload": "\x00"}),
    pytest.param(
        "app_epr_half",
        {
            "type": "keep",
            "pair": {"create_id": -1, "sequence_number": -1, "bell_state": "", "qubit": -1},
        },
    ),
    (
        "app_epr_half",
        {
            "type": "measure",
            "pair": {
                "create_id": 0,
                "sequence_number": 0,
                "bell_state": "psi-",
                "outcome": 2**63 - 1,
                "basis": "W",
            },
        },
    ),
    ("app_detach_request", {}),
    (
        "qkd_sift_request",
        {
            "link": "bob-carol",
            "block": "bob-carol/x/0",
            "pairs": b"\x00" * 3,
            "bases": b"\xff",
            "session": "\x00",
            "sequence_number": -1,
            "tag": b"\x00" * 32,
        },
    ),
    (
        "qkd_parity_request",
        {"link": "", "block": "", "pass_index": b"\xff" * 4, "start": b"\xff" * 4, "end": b""},
    ),
    (
        "qkd_verify_reply",
        {"link": "nobody", "block": ":", "verified": True, "key_bits": 2**63 - 1, "pa_seed": -1},
    ),
    ("qkd_block_abort", {"link": "bob-carol", "block": "bob-carol/0/0", "reason": ""}),
    ("kme_reserve_request", {"reservation": {"keys": [None], "size": -1}, "tag": b"x"}),
    ("kme_reserve_request", {}),
    (
        "key_relay_request",
        {"relay_id": "", "route": [], "segments": [["", -1, 2**63 - 1]], "ciphertext": b""},
    ),
    (
        "key_relay_request",
        {
            "relay_id": "relay/alice>carol/0",
            "route": ["alice", "bob", "carol"],
            "segments": [],
            "ciphertext": b"\x00" * 32,
            "session": "x",
            "sequence_number": 2**63 - 1,
        },
    ),
    ("key_relay_reply", {"relay_id": "", "ok": True}),
    ("stats_request", {}),
    (
        "ops_reply",
        {"results": [None, {"x": [1]}], "error": {"index": -1, "code": "", "message": ""}},
    ),
    (
        "entangle_ok",
        {
            "create_id": 0,
            "sequence_number": 0,
            "src": "",
            "dst": "",
            "bell_state": "",
            "fidelity": 2.0,
            "created_at": 0.0,
            "delivered_at": 0.0,
            "attempts": 0,
        },
    ),
]

# ---- talking to the network ----------------------------------------------------------


def raw_envelope(msg_type: str, body: Any, msg_id: str) -> bytes:
    """An envelope as a peer would pack it; `body` a dataclass or a plain map."""
    if dataclasses.is_dataclass(body):
        return encode(body, sender=FUZZER, sent_at=0.0, msg_id=msg_id)
    header = {
        "msg_id": msg_id,
        "msg_type": msg_type,
        "sender": FUZZER,
        "sent_at": 0.0,
        "version": PROTOCOL_VERSION,
    }
    return msgpack.packb({"header": header, "parent_id": None, "body": body}, use_bin_type=True)


@dataclasses.dataclass
class Failure:
    """An `internal` error reply: the handler for what we sent raised."""

    process: str
    msg_type: str
    body: Any
    message: str


class Fuzzer:
    """One authenticated DEALER per process; remembers what it sent and what came back."""

    def __init__(self, network):
        self.network = network
        self.context = zmq.Context()
        names = [p.name for p in network.plan.processes]
        self.identity = client_identity(network.run_dir, names)
        self.dealers: dict[str, zmq.Socket] = {}
        self.sent: dict[str, tuple[str, str, Any]] = {}  # msg_id -> (process, type, body)
        self.failures: list[Failure] = []  # `internal` replies: a handler raised
        self.replies: Counter = Counter()
        self.count = 0

    def dealer(self, process: str) -> zmq.Socket:
        if process not in self.dealers:
            dealer = self.context.socket(zmq.DEALER)
            dealer.setsockopt(zmq.IDENTITY, FUZZER.encode())
            dealer.setsockopt(zmq.LINGER, 0)
            apply_client(dealer, self.identity, process)
            dealer.connect(self.network.plan.process(process).endpoint)
            self.dealers[process] = dealer
        return self.dealers[process]

    def send(self, process: str, msg_type: str, body: Any) -> str:
        self.count += 1
        msg_id = f"fuzz-{self.count}"
        self.sent[msg_id] = (process, msg_type, body)
        self.dealer(process).send(raw_envelope(msg_type, body, msg_id))
        return msg_id

    def drain(self, process: str, quiet_ms: int = 0) -> None:
        """Read every reply waiting (and, with quiet_ms, until none came for that long)."""
        dealer = self.dealer(process)
        while dealer.poll(timeout=quiet_ms):
            envelope = decode(dealer.recv())
            body = envelope.body
            self.replies[body.code if isinstance(body, ErrorReply) else body.msg_type] += 1
            if isinstance(body, ErrorReply) and body.code == "internal":
                self.failed(process, envelope.parent_id, body.message)

    def failed(self, process: str, parent_id: str | None, message: str) -> None:
        _, msg_type, body = self.sent.get(parent_id or "", (process, "?", None))
        self.failures.append(Failure(process, msg_type, body, message))

    def ping(self, process: str, timeout_ms: int = 3000) -> PingReply:
        msg_id = self.send(process, "ping_request", PingRequest())
        deadline = time.monotonic() + timeout_ms / 1000
        dealer = self.dealer(process)
        while (left := deadline - time.monotonic()) > 0:
            if not dealer.poll(timeout=int(left * 1000) + 1):
                break
            envelope = decode(dealer.recv())
            if envelope.parent_id == msg_id and isinstance(envelope.body, PingReply):
                return envelope.body
            if isinstance(envelope.body, ErrorReply) and envelope.body.code == "internal":
                self.failed(process, envelope.parent_id, envelope.body.message)
        raise AssertionError(f"{process} did not answer a ping within {timeout_ms} ms")

    def close(self) -> None:
        for dealer in self.dealers.values():
            dealer.close(linger=0)
        self.context.term()


def handler_errors(metrics_url: str) -> Counter:
    with urllib.request.urlopen(metrics_url, timeout=5) as response:
        text = response.read().decode()
    counts: Counter = Counter()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == HANDLER_ERRORS:
                counts[sample.labels["msg_type"]] += int(sample.value)
    return counts


def failure_lines(network, process: str) -> list[str]:
    path = network.run_dir / "logs" / f"{process}.log"
    text = path.read_text(errors="replace") if path.exists() else ""
    return [line for line in text.splitlines() if FAILURE_LINES.search(line)]


def assert_alive(network, process: str, last_sent: Any = None) -> None:
    child = network.launcher.processes[process]
    assert child.poll() is None, f"{process} exited ({child.returncode}) after {last_sent!r}"


def clear_faults(fuzzer: Fuzzer) -> None:
    """Fuzzed fault requests may have cut fibres or dropped traffic: undo them all."""
    for process in PROCESSES:
        fuzzer.send(process, "fault_request", FaultRequest("clear"))
        fuzzer.send(process, "app_detach_request", {})  # and let go of any fuzz app's qubits
        fuzzer.drain(process, quiet_ms=100)


async def entangle_pairs(run_dir, src: str, dst: str, pairs: int = 2) -> list:
    async with QnemuClient(run_dir) as client:
        delivered = client.entangle(src, dst, pairs=pairs, measure="Z", timeout_s=10.0)
        return [pair async for pair in delivered]


def check_network_still_works(network, fuzzer: Fuzzer, before: dict[str, tuple]) -> None:
    for process in PROCESSES:
        assert_alive(network, process)
        reply = fuzzer.ping(process)
        assert reply.name == process and reply.ready
        assert reply.pid == network.pids()[process]
    for process in PROCESSES:
        fuzzer.drain(process, quiet_ms=50)
    unknown = [f for f in fuzzer.failures if known_bug(f.message) is None]
    assert unknown == [], "handlers raised:\n" + "\n".join(map(str, unknown[:20]))
    for process in PROCESSES:
        # Every handler exception shows as an `internal` reply we saw, in the handler_errors
        # counter and in the log; nothing fails in the background.
        errors, lines = before[process]
        raised = Counter(f.msg_type for f in fuzzer.failures if f.process == process)
        after = handler_errors(network.plan.process(process).metrics_url)
        assert after - errors == raised, process
        new_lines = failure_lines(network, process)[len(lines) :]
        assert not [line for line in new_lines if "background task failed" in line], process
        logged = Counter(m.group(1) for line in new_lines if (m := HANDLER_FAILED.search(line)))
        assert logged == raised, process
    for src, dst in (("alice", "bob"), ("alice", "carol")):
        pairs = asyncio.run(entangle_pairs(network.run_dir, src, dst))
        assert len(pairs) == 2, (src, dst)
        for pair in pairs:  # perfect links: Z outcomes agree on phi, differ on psi
            assert (pair.outcomes[0] != pair.outcomes[1]) == pair.bell_state.startswith("psi")


@pytest.fixture(scope="module")
def fuzzer(network):
    fuzz = Fuzzer(network)
    for process in PROCESSES:  # an app session everywhere, so app handlers go deep
        fuzz.send(process, "app_attach_request", {"app": "fuzz"})
    try:
        yield fuzz
    finally:
        fuzz.close()


@pytest.fixture
def baseline(network, fuzzer) -> dict[str, tuple[Counter, list[str]]]:
    """Handler errors counted and failure lines logged before a test; failures forgotten."""
    fuzzer.failures.clear()
    plan = network.plan
    return {
        p: (handler_errors(plan.process(p).metrics_url), failure_lines(network, p))
        for p in PROCESSES
    }


# ---- the tests -----------------------------------------------------------------------


def test_the_regression_list_decodes_so_it_reaches_the_handlers():
    for case in REGRESSIONS:
        msg_type, body = case.values if hasattr(case, "values") else case
        data = raw_envelope(msg_type, body, "check")
        assert type(decode(data).body) is message_class(msg_type), (msg_type, body)


@pytest.mark.parametrize(("msg_type", "body"), REGRESSIONS)
def test_a_malformed_request_leaves_every_process_serving(network, fuzzer, msg_type, body):
    fuzzer.failures.clear()
    for process in PROCESSES:
        fuzzer.send(process, msg_type, body)
    for process in PROCESSES:
        fuzzer.ping(process)  # answered after the handler ran (one loop, in order)
        assert_alive(network, process, (msg_type, body))
        fuzzer.drain(process, quiet_ms=5)  # an async handler's failure may come just after
    assert fuzzer.failures == []


def test_the_network_still_works_after_the_regression_list(network, fuzzer, baseline):
    clear_faults(fuzzer)
    check_network_still_works(network, fuzzer, baseline)


def fuzz_one_process(network, fuzzer: Fuzzer, process: str) -> None:
    """EXAMPLES_PER_PROCESS batches of BATCH fuzzed messages; the process must stay up."""

    @settings(
        max_examples=EXAMPLES_PER_PROCESS,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.generate],  # a dead process fails every later example: no shrinking
    )
    @given(batch=st.lists(messages_for(process), min_size=BATCH, max_size=BATCH))
    def fuzz(batch):
        for body in batch:
            fuzzer.send(process, body.msg_type, body)
        fuzzer.drain(process)
        assert_alive(network, process, batch)

    fuzz()
    fuzzer.drain(process, quiet_ms=50)


def test_fuzzed_bodies_to_every_handler_of_every_process(network, fuzzer, baseline):
    for process in PROCESSES:
        fuzz_one_process(network, fuzzer, process)
    assert fuzzer.count >= len(PROCESSES) * EXAMPLES_PER_PROCESS * BATCH
    # Everything decoded and reached dispatch: the fuzz tested handlers, not the decoder.
    assert fuzzer.replies["bad_body"] == fuzzer.replies["malformed"] == 0, fuzzer.replies
    assert fuzzer.replies["ops_reply"] >= EXAMPLES_PER_PROCESS  # the broker executed batches
    clear_faults(fuzzer)
    check_network_still_works(network, fuzzer, baseline)


def test_bell_bytes_are_the_wire_form_of_a_pair_state():
    # The regression list's valid pair state: 16 little-endian complex128, row-major.
    state = np.frombuffer(BELL_BYTES, dtype="<c16").reshape(4, 4)
    assert state.shape == (4, 4) and abs(np.trace(state) - 1.0) < 1e-12
