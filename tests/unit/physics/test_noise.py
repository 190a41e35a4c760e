"""Kraus channels and memory decoherence against their closed forms."""

import math

import numpy as np
import pytest
import scipy.linalg

from qnemu.physics import gates
from qnemu.physics.noise import (
    amplitude_damp_kraus,
    apply_kraus,
    dephase_kraus,
    depolarise_kraus,
    memory_decoherence,
)

TOLERANCE = 1e-12


def random_density(dim: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    ginibre = rng.normal(size=(dim, dim)) + 1j * rng.normal(size=(dim, dim))
    rho = ginibre @ ginibre.conj().T
    return rho / np.trace(rho)


def all_channels() -> list[tuple[str, list[np.ndarray]]]:
    channels = []
    for p in (0.0, 0.1, 0.5, 1.0):
        channels.append((f"depolarise1({p})", depolarise_kraus(p)))
        channels.append((f"depolarise2({p})", depolarise_kraus(p, num_qubits=2)))
        channels.append((f"dephase({p})", dephase_kraus(p)))
        channels.append((f"amplitude_damp({p})", amplitude_damp_kraus(p)))
    return channels


@pytest.mark.parametrize(("label", "kraus"), all_channels())
def test_kraus_operators_are_complete(label: str, kraus: list[np.ndarray]) -> None:
    dim = kraus[0].shape[0]
    total = sum(k.conj().T @ k for k in kraus)
    assert np.allclose(total, np.eye(dim), atol=TOLERANCE, rtol=0), label


@pytest.mark.parametrize("p", [0.0, 0.25, 0.9, 1.0])
@pytest.mark.parametrize("num_qubits", [1, 2])
def test_depolarise_mixes_towards_identity(p: float, num_qubits: int) -> None:
    dim = 2**num_qubits
    rho = random_density(dim, seed=num_qubits)
    expected = (1 - p) * rho + p * np.eye(dim) / dim
    out = apply_kraus(rho, depolarise_kraus(p, num_qubits))
    assert np.allclose(out, expected, atol=TOLERANCE, rtol=0)


def test_two_qubit_depolarise_is_joint_not_a_product_of_single_channels() -> None:
    rho = random_density(4, seed=7)
    joint = apply_kraus(rho, depolarise_kraus(0.5, num_qubits=2))
    single = [np.kron(k, np.eye(2)) for k in depolarise_kraus(0.5)]
    both = [np.kron(np.eye(2), k) for k in depolarise_kraus(0.5)]
    assert not np.allclose(joint, apply_kraus(apply_kraus(rho, single), both))


@pytest.mark.parametrize("p", [0.0, 0.3, 0.5, 1.0])
def test_dephase_scales_coherence_by_one_minus_two_p(p: float) -> None:
    rho = random_density(2, seed=3)
    out = apply_kraus(rho, dephase_kraus(p))
    assert out[0, 0] == pytest.approx(rho[0, 0], abs=TOLERANCE)
    assert out[1, 1] == pytest.approx(rho[1, 1], abs=TOLERANCE)
    assert out[0, 1] == pytest.approx((1 - 2 * p) * rho[0, 1], abs=TOLERANCE)
    assert np.allclose(out, (1 - p) * rho + p * gates.Z @ rho @ gates.Z, atol=TOLERANCE)


@pytest.mark.parametrize("gamma", [0.0, 0.2, 0.75, 1.0])
def test_amplitude_damping_closed_form(gamma: float) -> None:
    rho = random_density(2, seed=5)
    out = apply_kraus(rho, amplitude_damp_kraus(gamma))
    assert out[1, 1] == pytest.approx((1 - gamma) * rho[1, 1], abs=TOLERANCE)
    assert out[0, 0] == pytest.approx(rho[0, 0] + gamma * rho[1, 1], abs=TOLERANCE)
    assert out[0, 1] == pytest.approx(math.sqrt(1 - gamma) * rho[0, 1], abs=TOLERANCE)


@pytest.mark.parametrize(
    ("t_s", "t1_s", "t2_s"),
    [(0.3, 1.0, 0.5), (2.0, 1.0, 2.0), (0.1, 10.0, 0.01), (5.0, 3.0, 1.0), (0.0, 1.0, 1.0)],
)
def test_memory_decoherence_gives_t1_populations_and_t2_coherence(t_s, t1_s, t2_s) -> None:
    gamma, dephase_p = memory_decoherence(t_s, t1_s, t2_s)
    assert gamma == pytest.approx(1 - math.exp(-t_s / t1_s), abs=TOLERANCE)
    coherence = math.sqrt(1 - gamma) * (1 - 2 * dephase_p)
    assert coherence == pytest.approx(math.exp(-t_s / t2_s), abs=TOLERANCE)
    assert 0.0 <= dephase_p <= 0.5


def test_memory_decoherence_none_means_no_decay_from_that_term() -> None:
    assert memory_decoherence(1.0, None, None) == (0.0, 0.0)
    gamma, dephase_p = memory_decoherence(1.0, None, 0.5)
    assert gamma == 0.0
    assert 1 - 2 * dephase_p == pytest.approx(math.exp(-2.0), abs=TOLERANCE)
    gamma, dephase_p = memory_decoherence(1.0, 2.0, None)  # T2 = 2·T1: damping only
    assert gamma == pytest.approx(1 - math.exp(-0.5), abs=TOLERANCE)
    assert dephase_p == 0.0


@pytest.mark.parametrize(
    "call",
    [
        lambda: memory_decoherence(1.0, 1.0, 2.5),  # T2 > 2·T1
        lambda: memory_decoherence(-1.0, 1.0, 1.0),
        lambda: memory_decoherence(math.nan, 1.0, 1.0),
        lambda: memory_decoherence(math.inf, 1.0, 1.0),
        lambda: memory_decoherence(1.0, 0.0, None),
        lambda: memory_decoherence(1.0, None, -2.0),
        lambda: memory_decoherence(1.0, "soon", None),
        lambda: depolarise_kraus(1.5),
        lambda: depolarise_kraus(-0.1),
        lambda: depolarise_kraus(math.nan),
        lambda: depolarise_kraus(0.1, num_qubits=3),
        lambda: dephase_kraus(2.0),
        lambda: amplitude_damp_kraus(-1e-3),
        lambda: amplitude_damp_kraus("lots"),
    ],
)
def test_bad_parameters_are_rejected(call) -> None:
    with pytest.raises(ValueError):
        call()


@pytest.mark.parametrize("axis", ["x", "y", "z"])
@pytest.mark.parametrize("angle", [0.0, 0.4, math.pi, -2.5])
def test_rotation_is_the_exponential_of_the_pauli(axis: str, angle: float) -> None:
    pauli = {"x": gates.X, "y": gates.Y, "z": gates.Z}[axis]
    expected = scipy.linalg.expm(-0.5j * angle * pauli)
    assert np.allclose(gates.rotation(axis, angle), expected, atol=TOLERANCE, rtol=0)


def test_gate_tables_hold_unitaries_and_reject_bad_rotations() -> None:
    for name, matrix in {**gates.SINGLE_QUBIT_GATES, **gates.TWO_QUBIT_GATES}.items():
        dim = matrix.shape[0]
        assert np.allclose(matrix @ matrix.conj().T, np.eye(dim), atol=TOLERANCE), name
    assert gates.CNOT @ np.array([0, 0, 1, 0]) == pytest.approx(np.array([0, 0, 0, 1]))
    with pytest.raises(ValueError):
        gates.rotation("w", 0.1)
    with pytest.raises(ValueError):
        gates.rotation("x", math.nan)
