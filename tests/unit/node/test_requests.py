import math

from qnemu.node.requests import MEASURE_WINDOW, LinkRequest, LocalHalf, validate_request
from qnemu.wire.link import ReportedHalf


def make(**overrides) -> LinkRequest:
    fields = dict(
        create_id=7,
        initiator="a",
        peer="b",
        number=3,
        minimum_fidelity=0.0,
        max_time_s=2.0,
        type="measure",
        basis="Z",
        started_at=10.0,
        accepted=True,
    )
    fields.update(overrides)
    return LinkRequest(**fields)


def test_validate_request_names_the_problem():
    good = dict(number=1, minimum_fidelity=0.5, max_time_s=1.0, type="keep", basis="random")
    assert validate_request(**good) is None
    assert "type" in validate_request(**{**good, "type": "teleport"})
    assert "basis" in validate_request(**{**good, "basis": "W"})
    assert "number" in validate_request(**{**good, "number": -1})
    assert "minimum_fidelity" in validate_request(**{**good, "minimum_fidelity": 1.5})
    assert "max_time_s" in validate_request(**{**good, "max_time_s": math.nan})
    assert validate_request(**{**good, "purify": "bbpssw"}) is None
    problem = validate_request(**{**good, "purify": "BBPSSW"})
    assert problem == "purify must be one of dejmps, bbpssw, none, got 'BBPSSW'"


def test_deadline_and_completion():
    request = make()
    assert request.deadline == 12.0
    assert make(max_time_s=0.0).deadline == math.inf
    request.delivered = 3
    assert request.complete
    assert not make(number=0, delivered=10**6).complete  # 0: until cancelled


def test_credits_never_exceed_what_the_request_needs():
    request = make(number=3)
    assert request.credits_wanted(memory_free=0) == 3  # measure mode does not hold memory
    request.granted, request.heralded = 2, 1
    assert request.credits_wanted(memory_free=0) == 0
    forever = make(number=0)
    assert forever.credits_wanted(memory_free=0) == MEASURE_WINDOW
    keep = make(type="keep", number=10)
    assert keep.credits_wanted(memory_free=4) == 4
    assert make(accepted=False).credits_wanted(memory_free=4) == 0


def test_assemble_joins_both_halves_once():
    request = make()
    half = LocalHalf(
        delivered_at=1.0,
        bell_state=1,
        created_at=0.5,
        attempts=4,
        fidelity=0.9,
        outcome=0,
        basis="Z",
    )
    request.local[0] = half
    assert request.assemble(0, "a", "b") is None  # the peer's half has not arrived
    request.remote[0] = ReportedHalf(sequence_number=0, delivered_at=1.1, outcome=1, basis="Z")
    pair = request.assemble(0, "a", "b")
    assert pair.bell_state == "psi+"
    assert pair.outcomes == (0, 1) and pair.bases == ("Z", "Z")
    assert pair.qubits is None
    assert request.assemble(0, "a", "b") is None
