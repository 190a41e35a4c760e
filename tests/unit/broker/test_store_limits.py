"""The store refuses states too big to hold, before it changes anything."""

import itertools

import numpy as np
import pytest

from qnemu.broker.checks import MAX_GROUP_QUBITS
from qnemu.broker.store import StateStore, StoreError


def test_a_group_never_grows_past_the_limit():
    store = StateStore(seed=1)
    qubits = [store.alloc("n", 0.0) for _ in range(MAX_GROUP_QUBITS + 1)]
    for control, target in itertools.pairwise(qubits[:-1]):  # a chain of ten
        store.gate("CNOT", [control, target], "n", 0.0)
    assert store.group_count == 2  # ten entangled, one alone
    before = store.reduced_state([qubits[-1]], 0.0)
    with pytest.raises(StoreError) as refused:
        store.gate("CNOT", [qubits[0], qubits[-1]], "n", 0.0)
    assert refused.value.code == "too_large"
    assert store.group_count == 2
    assert np.allclose(store.reduced_state([qubits[-1]], 0.0), before)


def test_an_oracle_read_of_too_many_qubits_is_refused():
    store = StateStore(seed=1)
    qubits = [store.alloc("n", 0.0) for _ in range(MAX_GROUP_QUBITS + 1)]
    with pytest.raises(StoreError, match="at most"):
        store.reduced_state(qubits, 0.0)
