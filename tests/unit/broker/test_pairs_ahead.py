"""A station may create a pair shortly before its success, and discard it if never heralded."""

import numpy as np
import pytest

from qnemu.broker.server import CREATE_AHEAD_MAX_S, DISCARD_WINDOW_S, BrokerService
from qnemu.broker.store import StoreError
from qnemu.physics.bell import BellState, bell_density
from qnemu.runtime import EmulatedClock, ServiceAddress
from qnemu.wire.broker import CreatePairOp, FreeOp, GateOp, OpsRequest

STATION, OTHER_STATION = "station-a-b", "station-c-d"
PHI_PLUS = np.ascontiguousarray(bell_density(BellState.PHI_PLUS), dtype="<c16").tobytes()


@pytest.fixture
def broker():
    service = BrokerService(
        "broker",
        ServiceAddress("inproc://pairs-ahead"),
        EmulatedClock(0.0),
        pair_creators={STATION, OTHER_STATION},
    )
    yield service
    service.close()


def create(broker, who: str, created_at: float, now_s: float) -> list[int]:
    op = CreatePairOp(owners=("a", "b"), state=PHI_PLUS, created_at=created_at)
    reply = broker.execute(OpsRequest([op]), who, now_s)
    assert reply.error is None, reply.error
    return reply.results[0]


def free(broker, who: str, qubit: int, now_s: float):
    return broker.execute(OpsRequest([FreeOp(qubit)]), who, now_s).error


def test_a_station_may_date_a_pair_ahead_but_not_beyond_the_limit(broker):
    create(broker, STATION, created_at=10.3, now_s=10.0)
    create(broker, STATION, created_at=100.0, now_s=10.0)
    # Owners creating their own pair cannot date it ahead at all.
    create(broker, "a", created_at=10.5, now_s=10.0)
    # What the store recorded: dated at most CREATE_AHEAD_MAX_S ahead, owners never.
    records = sorted(broker.store._qubits.values(), key=lambda r: r.handle)
    assert [r.updated_at for r in records[::2]] == [10.3, 10.0 + CREATE_AHEAD_MAX_S, 10.0]


def test_the_creating_station_may_discard_its_unheralded_pair(broker):
    qubit_a, qubit_b = create(broker, STATION, created_at=5.05, now_s=5.0)
    assert free(broker, STATION, qubit_a, now_s=5.06) is None
    assert free(broker, STATION, qubit_b, now_s=5.06) is None
    with pytest.raises(StoreError):
        broker.store.owner_of(qubit_a)


def test_nobody_else_may_and_not_after_the_window(broker):
    qubit_a, qubit_b = create(broker, STATION, created_at=5.05, now_s=5.0)
    assert free(broker, OTHER_STATION, qubit_a, now_s=5.06).code == "not_owner"
    assert free(broker, "b", qubit_a, now_s=5.06).code == "not_owner"
    late = 5.05 + DISCARD_WINDOW_S + 0.01
    assert free(broker, STATION, qubit_b, now_s=late).code == "not_owner"
    # The owners use their qubits as ever.
    assert broker.execute(OpsRequest([GateOp("H", [qubit_a])]), "a", 5.1).error is None
    assert free(broker, "a", qubit_a, now_s=5.2) is None
