"""Dense kernels on one group's density matrix (pure numpy, no bookkeeping)."""

import numpy as np

from qnemu.physics.gates import ROTATIONS, SINGLE_QUBIT_GATES, TWO_QUBIT_GATES, H, S, rotation

# --- dense kernels on a group's matrix (qubit k of n; A = 2^k, B = 2^(n−k−1)) -------------


def _left(rho: np.ndarray, op: np.ndarray, positions: tuple[int, ...], n: int) -> np.ndarray:
    """op acting on the row (ket) indices of the given qubits."""
    dim = rho.shape[0]
    if len(positions) == 1:
        k = positions[0]
        return (op @ rho.reshape(1 << k, 2, -1)).reshape(dim, dim)
    m = len(positions)
    tensor = rho.reshape((2,) * n + (dim,))
    out = np.tensordot(op.reshape((2,) * (2 * m)), tensor, axes=(range(m, 2 * m), positions))
    return np.moveaxis(out, range(m), positions).reshape(dim, dim)


def _blocks(rho: np.ndarray, k: int, n: int) -> np.ndarray:
    return rho.reshape(1 << k, 2, 1 << (n - k - 1), 1 << k, 2, 1 << (n - k - 1))


def _kron(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    da, db = a.shape[0], b.shape[0]
    return (a[:, None, :, None] * b[None, :, None, :]).reshape(da * db, da * db)


def _replace_mixed(rho: np.ndarray, k: int, n: int, p: float) -> np.ndarray:
    """(1−p)ρ + p·Tr_k(ρ) ⊗ I/2 on qubit k."""
    t = _blocks(rho, k, n)
    half = (0.5 * p) * (t[:, 0, :, :, 0, :] + t[:, 1, :, :, 1, :])
    out = (1.0 - p) * t
    out[:, 0, :, :, 0, :] += half
    out[:, 1, :, :, 1, :] += half
    return out.reshape(rho.shape)


_MASK_MAX_QUBITS = 8  # masks cost 2^(2n) bytes each; larger groups use strided views
_MASKS: dict[tuple[int, int], tuple] = {}  # (k, n) -> (off-diagonal, |1><1|, flat 00, flat 11)


def _qubit_masks(k: int, n: int) -> tuple:
    masks = _MASKS.get((k, n))
    if masks is None:
        dim = 1 << n
        bits = (np.arange(dim) >> (n - 1 - k)) & 1
        off_diagonal = bits[:, None] != bits[None, :]
        excited = (bits[:, None] == 1) & (bits[None, :] == 1)
        flat_11 = np.flatnonzero(excited)
        flat_00 = flat_11 - (1 << (n - 1 - k)) * (dim + 1)  # same entry with qubit k at |0>
        masks = _MASKS[(k, n)] = (off_diagonal, excited, flat_00, flat_11)
    return masks


_SPLITS: dict[tuple[int, int], tuple] = {}  # (k, n) -> (flat diagonal where k=0, (block 0, 1))


def _split_tables(k: int, n: int) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """Flat indices into a group's matrix: the diagonal entries with qubit k in |0>, and for
    s = 0, 1 the (2^(n−1))² block with qubit k in |s> on both sides (order of the other qubits)."""
    tables = _SPLITS.get((k, n))
    if tables is None:
        dim, step = 1 << n, 1 << (n - 1 - k)
        rows_0 = np.array([i for i in range(dim) if not i & step])
        blocks = tuple((rows[:, None] * dim + rows[None, :]) for rows in (rows_0, rows_0 + step))
        tables = (rows_0 * (dim + 1), blocks)
        if n <= _MASK_MAX_QUBITS:
            _SPLITS[(k, n)] = tables
    return tables


def _decohere_in_place(rho: np.ndarray, k: int, n: int, gamma: float, coherence: float) -> None:
    """Amplitude damping γ on qubit k, with its coherences scaled by `coherence` in total.

    coherence = √(1−γ) is amplitude damping alone; (1 − 2p)·√(1−γ) adds dephasing p.
    """
    if n > _MASK_MAX_QUBITS:
        t = _blocks(rho, k, n)
        if gamma:
            t[:, 0, :, :, 0, :] += gamma * t[:, 1, :, :, 1, :]
            t[:, 1, :, :, 1, :] *= 1.0 - gamma
        t[:, 0, :, :, 1, :] *= coherence
        t[:, 1, :, :, 0, :] *= coherence
        return
    off_diagonal, excited, flat_00, flat_11 = _qubit_masks(k, n)
    if gamma:
        flat = rho.reshape(-1)  # a view: group matrices are always C-contiguous
        flat[flat_00] += gamma * flat[flat_11]
        np.multiply(rho, 1.0 - gamma, out=rho, where=excited)
    if coherence != 1.0:
        np.multiply(rho, coherence, out=rho, where=off_diagonal)


_LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


def _partial_state(rho: np.ndarray, n: int, keep: list[int]) -> np.ndarray:
    """Reduced state on the qubits at positions `keep`, in that order."""
    if keep == list(range(n)):
        return rho.copy()
    rows = _LETTERS[:n]
    cols = [_LETTERS[n + i] if i in keep else rows[i] for i in range(n)]
    out = "".join(rows[i] for i in keep) + "".join(cols[i] for i in keep)
    reduced = np.einsum(f"{rows}{''.join(cols)}->{out}", rho.reshape((2,) * (2 * n)))
    dim = 1 << len(keep)
    return np.ascontiguousarray(reduced.reshape(dim, dim))


def _fidelity(rho: np.ndarray, is_vector: bool, target: np.ndarray) -> float:
    if is_vector:
        return float(np.real(target.conj() @ rho @ target))
    # Uhlmann: F = (Tr √(√σ ρ √σ))². √σ restricted to σ's support, so a pure target gives
    # exactly <ψ|ρ|ψ> instead of picking up √(rounding noise) from its zero eigenvalues.
    values, vectors = np.linalg.eigh(target)
    support = values > 1e-13
    root = vectors[:, support] * np.sqrt(values[support])
    inner = np.linalg.eigvalsh(root.conj().T @ rho @ root)
    return float(np.sum(np.sqrt(np.clip(inner, 0.0, None))) ** 2)


def _constant(matrix: list) -> np.ndarray:
    array = np.array(matrix, dtype=complex)
    array.flags.writeable = False  # shared: groups get copies, which they update in place
    return array


_EIGENSTATES = {  # basis -> (|e0><e0|, |e1><e1|) after measuring; outcome 0 = +1 eigenstate
    "Z": (_constant([[1, 0], [0, 0]]), _constant([[0, 0], [0, 1]])),
    "X": (_constant([[0.5, 0.5], [0.5, 0.5]]), _constant([[0.5, -0.5], [-0.5, 0.5]])),
    "Y": (_constant([[0.5, -0.5j], [0.5j, 0.5]]), _constant([[0.5, 0.5j], [-0.5j, 0.5]])),
}
# V with V†|0> = |e0>: measuring Z after V measures the basis.
_BASIS_CHANGE = {"X": H, "Y": H @ S.conj().T}
_BASIS_CHANGE_KEY = {basis: f"M{basis}" for basis in _BASIS_CHANGE}
_FIXED_OPERATORS = {
    **SINGLE_QUBIT_GATES,
    **TWO_QUBIT_GATES,
    **{_BASIS_CHANGE_KEY[basis]: change for basis, change in _BASIS_CHANGE.items()},
}
# A Bell-state measurement's CNOT a→b then H on a, as one operator.
_FIXED_OPERATORS["BSM"] = np.kron(H, np.eye(2)) @ TWO_QUBIT_GATES["CNOT"]
_EXPANDED_CACHE_SIZE = 4096  # (gate, angle, positions, group size) entries kept per store
_EXPAND_MAX_QUBITS = 4  # beyond this, full operators cost more than the tensor contraction


def _operator(key: str | tuple) -> np.ndarray:
    if type(key) is str:
        return _FIXED_OPERATORS[key]
    name, angle = key
    return rotation(ROTATIONS[name], angle)
