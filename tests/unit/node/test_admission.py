import pytest

from qnemu.node.admission import link_window, memory_shortage, plan_request
from qnemu.node.network import EndToEndRequest
from qnemu.node.routing import Routing
from qnemu.wire.control import EntangleRequest

PATH = ("a", "b", "c")


def served(index: int, rounds: tuple[int, ...] = (), request_id: int = 1) -> EndToEndRequest:
    return EndToEndRequest("a", request_id, PATH, index, "keep", "random", rounds=rounds)


def test_each_link_gets_its_promise_plus_a_share_of_the_rest():
    repeater = served(1, rounds=(2, 1))  # promised 3 (left link) + 2 (right link)
    assert link_window(8, [repeater], repeater, "a") == 3 + 1
    assert link_window(8, [repeater], repeater, "c") == 2 + 1
    # Raw links only: capacity ÷ links, at least one, as before purification existed.
    raw = [served(1, request_id=i) for i in range(2)]
    assert link_window(8, raw, raw[0], "a") == 2
    many = [served(1, request_id=i) for i in range(6)]
    assert link_window(8, many, many[0], "c") == 1
    assert link_window(8, raw, None, "a") == 1  # a request no longer served here: the spare


def test_promises_are_checked_only_when_purification_is_involved():
    raw = [served(1, request_id=i) for i in range(6)]
    assert memory_shortage("b", 8, served(1, request_id=9), raw) is None  # 14 > 8: as before
    purifying = served(1, rounds=(2, 2), request_id=9)  # promised 6 at the repeater
    assert memory_shortage("b", 8, purifying, []) is None
    problem = memory_shortage("b", 8, served(1, rounds=(2, 2), request_id=10), [purifying])
    assert (
        problem
        == "b: purification needs 6 memory qubits here, 2 of 8 are not promised to other requests"
    )
    assert memory_shortage("b", 8, served(1, request_id=11), [purifying]) is None  # 6 + 2
    full = [purifying, served(1, request_id=11)]
    assert memory_shortage("b", 8, served(1, request_id=12), full).startswith(
        "b: this path needs 2 memory qubits"
    )


def request(minimum_fidelity: float, purify: str = "dejmps", dst: str = "c") -> EntangleRequest:
    return EntangleRequest(dst, 1, minimum_fidelity, 10.0, "keep", "random", purify)


@pytest.mark.parametrize(
    ("ask", "code", "words"),
    [
        (request(0.85), None, None),
        (request(0.85, "none"), "NOTIME", "0.8133 at most without purification (purify: none)"),
        (request(0.9999, "bbpssw"), "NOTIME", "with up to 3 rounds of bbpssw purification"),
        (request(0.5, dst="zz"), "UNSUPP", "no path from a to 'zz'"),
    ],
)
def test_plans_and_refusals_name_what_limits_them(ask, code, words):
    routing = Routing([("a", "b", 0.9, 10.0, 1.0), ("b", "c", 0.9, 10.0, 1.0)])
    route, refusal = plan_request(ask, "a", routing)
    if code is None:
        assert refusal is None and route.rounds == (1, 1)
    else:
        assert refusal[0] == code and words in refusal[1], refusal


def test_memory_that_cannot_hold_the_rounds_is_a_nores_with_what_it_allows():
    links = [("a", "b", 0.8, 10.0, 1.0), ("b", "c", 0.8, 10.0, 1.0)]
    routing = Routing(links, memory={"a": 8, "b": 3, "c": 8})  # b: (r+1) + (r'+1) <= 3
    route, (code, message) = plan_request(request(0.85), "a", routing)
    assert code == "NORES" and "more than the nodes' memories hold" in message
    assert f"the best they allow is {route.estimated_fidelity:.4f}" in message
