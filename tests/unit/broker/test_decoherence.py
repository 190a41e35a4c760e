"""Lazy memory decoherence in both state stores against the T1/T2 closed forms."""

import math
import warnings

import numpy as np
import pytest

from qnemu.broker.store import StateStore, StoreError
from qnemu.physics.bell import BellState, bell_density, bell_vector

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # qutip warns that matplotlib is missing
    from qnemu.broker.qutip_store import QutipStateStore

TOLERANCE = 1e-12
STORES = [StateStore, QutipStateStore]


@pytest.mark.parametrize("store_class", STORES)
def test_one_memory_dephasing_gives_f_of_t(store_class) -> None:
    t2_s = 0.8
    store = store_class(seed=1)
    phi_plus = bell_vector(BellState.PHI_PLUS)
    # Fresh pair per time point, and one pair read at every time point (decay composes).
    chained = store.create_pair(
        ("a", "b"), bell_density(BellState.PHI_PLUS), 0.0, t2_s=(t2_s, None)
    )
    for t_s in (0.0, 0.1, 0.5, 1.0, 3.0):
        pair = store.create_pair(("a", "b"), bell_density(0), 0.0, t2_s=(t2_s, None))
        expected = (1 + math.exp(-t_s / t2_s)) / 2
        assert store.fidelity(pair, phi_plus, t_s) == pytest.approx(expected, abs=TOLERANCE)
        assert store.fidelity(chained, phi_plus, t_s) == pytest.approx(expected, abs=TOLERANCE)


@pytest.mark.parametrize("store_class", STORES)
def test_both_memories_dephasing_multiply(store_class) -> None:
    store = store_class(seed=1)
    pair = store.create_pair(("a", "b"), bell_density(0), 0.0, t2_s=(1.0, 2.0))
    t_s = 0.7
    expected = (1 + math.exp(-t_s / 1.0 - t_s / 2.0)) / 2
    assert store.fidelity(pair, bell_vector(0), t_s) == pytest.approx(expected, abs=TOLERANCE)


@pytest.mark.parametrize("store_class", STORES)
def test_amplitude_damping_population_decays_with_t1(store_class) -> None:
    store = store_class(seed=1)
    qubit = store.alloc("a", 0.0, t1_s=0.5)
    store.gate("X", [qubit], "a", 0.0)
    for t_s in (0.1, 0.4, 2.0):
        rho = store.reduced_state([qubit], t_s)
        assert rho[1, 1].real == pytest.approx(math.exp(-t_s / 0.5), abs=TOLERANCE)
        assert np.trace(rho).real == pytest.approx(1.0, abs=TOLERANCE)


@pytest.mark.parametrize("store_class", STORES)
@pytest.mark.parametrize(("t1_s", "t2_s"), [(1.0, 0.3), (1.0, 2.0), (1.0, None), (None, 0.4)])
def test_total_coherence_decays_with_t2(store_class, t1_s, t2_s) -> None:
    store = store_class(seed=1)
    qubit = store.alloc("a", 0.0, t1_s=t1_s, t2_s=t2_s)
    store.gate("H", [qubit], "a", 0.0)  # |+>: coherence 1/2, population 1/2
    t_s = 0.6
    rho = store.reduced_state([qubit], t_s)
    effective_t2_s = t2_s if t2_s is not None else 2 * t1_s  # None: no extra dephasing
    assert abs(rho[0, 1]) == pytest.approx(0.5 * math.exp(-t_s / effective_t2_s), abs=TOLERANCE)
    population = 0.5 if t1_s is None else 0.5 * math.exp(-t_s / t1_s)
    assert rho[1, 1].real == pytest.approx(population, abs=TOLERANCE)


@pytest.mark.parametrize("store_class", STORES)
def test_t2_beyond_twice_t1_is_rejected(store_class) -> None:
    store = store_class(seed=1)
    with pytest.raises(StoreError) as refused:
        store.alloc("a", 0.0, t1_s=1.0, t2_s=2.5)
    assert refused.value.code == "bad_parameter"
    with pytest.raises(StoreError):
        store.create_pair(("a", "b"), bell_density(0), 0.0, t1_s=(1.0, 1.0), t2_s=(1.0, 3.0))
    assert store.qubit_count == 0


@pytest.mark.parametrize("store_class", STORES)
def test_time_going_backwards_applies_nothing(store_class) -> None:
    t2_s = 1.0
    store = store_class(seed=1)
    pair = store.create_pair(("a", "b"), bell_density(0), 0.0, t2_s=(t2_s, t2_s))
    at_one = store.reduced_state(pair, 1.0)
    late = store.reduced_state(pair, 0.5)  # an out-of-order message: no decay, clock kept
    assert np.allclose(late, at_one, atol=TOLERANCE, rtol=0)
    store.gate("Z", [pair[0]], "a", 0.2)
    store.gate("Z", [pair[0]], "a", 0.3)
    expected = (1 + math.exp(-2 * 2.0 / t2_s)) / 2  # both memories, 2 s in total, not more
    assert store.fidelity(pair, bell_vector(0), 2.0) == pytest.approx(expected, abs=TOLERANCE)
