"""What fault requests do at a node and its link's processes, with a fake node."""

from types import SimpleNamespace

import pytest

from qnemu.control.dispatch import RequestFailed
from qnemu.control.payloads import FaultRequestPayload
from qnemu.node.mqtt_services import NodeFaults
from qnemu.wire.common import ErrorReply, FaultReply


class FakeNode:
    """A node with one neighbour (bob, through station s); records what happens where."""

    name = "alice"

    def __init__(self, silent=(), refusing=()):
        self.neighbours = {"bob": SimpleNamespace(station="s", link_name="alice-bob")}
        self.log: list[tuple[str, str, str | None]] = []
        self.cut: set[str] = set()
        self.silent, self.refusing = set(silent), set(refusing)

    def apply_fault(self, kind, target, parameters):
        self.log.append(("alice", kind, target))
        if kind == "cut":
            self.cut.add(target)
        elif kind in ("restore", "clear"):
            self.cut.discard(target)

    def describe_faults(self):
        return {"cut_peers": sorted(self.cut)}

    async def request(self, process, body, timeout_s):
        # A real node cannot send across its own cut fibre: the order must avoid it.
        assert process not in self.cut and "bob" not in self.cut, (process, body)
        self.log.append((process, body.kind, body.target))
        if process in self.silent:
            raise TimeoutError
        if process in self.refusing:
            return SimpleNamespace(body=ErrorReply("bad_fault", "no such parameter"))
        return SimpleNamespace(body=FaultReply(process, {"kind": body.kind}))


def fault(**fields) -> FaultRequestPayload:
    return FaultRequestPayload(correlation_id="c", **fields)


async def test_a_cut_reaches_peer_and_station_before_this_node_cuts_itself():
    node = FakeNode()
    result = await NodeFaults(node).apply(fault(fault="cut", remote_node_id="bob"))
    assert node.log == [("bob", "cut", "alice"), ("s", "cut", None), ("alice", "cut", "bob")]
    assert result["alice"] == {"cut_peers": ["bob"]} and result["s"] == {"kind": "cut"}


async def test_a_restore_mends_this_node_first_so_its_messages_can_leave():
    node = FakeNode()
    node.cut.add("bob")
    await NodeFaults(node).apply(fault(fault="restore", remote_node_id="bob"))
    assert node.log[0] == ("alice", "restore", "bob")
    assert node.log[1:] == [("bob", "restore", "alice"), ("s", "restore", None)]


async def test_a_silent_peer_is_noted_but_a_silent_station_fails_a_station_fault():
    node = FakeNode(silent={"bob", "s"})
    result = await NodeFaults(node, timeout_s=0.1).apply(fault(fault="clear"))
    assert result["bob"].startswith("not reached") and result["s"].startswith("not reached")
    with pytest.raises(RequestFailed) as failed:
        await NodeFaults(node).apply(fault(fault="eavesdrop", remote_node_id="bob"))
    assert failed.value.code == "unreachable"


async def test_a_refused_link_change_fails_with_the_station_reason():
    node = FakeNode(refusing={"s"})
    with pytest.raises(RequestFailed) as failed:
        await NodeFaults(node).apply(
            fault(fault="set_link", remote_node_id="bob", link={"colour": 1})
        )
    assert failed.value.code == "bad_fault" and "s: no such parameter" in failed.value.message


async def test_classical_faults_stay_at_this_node():
    node = FakeNode()
    await NodeFaults(node).apply(fault(fault="classical", drop_fraction=0.5))
    assert node.log == [("alice", "classical", None)]
