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


# --- fused kernels for small groups: one precomputed linear map on the flattened matrix ---
# A row-major flat ρ maps to flat(L ρ L†) by L ⊗ conj(L); on 1–2 qubit groups one such
# matrix-vector product costs less than numpy's overhead on two small matrix products.

_SUPEROPERATOR_MAX_QUBITS = 2  # a 3-qubit one is 64×64 per cached gate: not worth the memory
_PROJECT_MAX_QUBITS = 3


def _superoperator(op: np.ndarray) -> np.ndarray:
    """U ⊗ conj(U): takes a flat ρ to the flat U ρ U†."""
    return np.kron(op, op.conj())


_PROJECTIONS: dict[tuple[str, int, int], np.ndarray] = {}


def _projections(basis: str, k: int, n: int) -> np.ndarray:
    """Takes a flat ρ to [P(0), P(1), flat <e0|ρ|e0>, flat <e1|ρ|e1>] for qubit k of n."""
    table = _PROJECTIONS.get((basis, k, n))
    if table is None:
        change = _BASIS_CHANGE.get(basis, np.eye(2))
        blocks = []
        for s in (0, 1):
            bra = np.kron(np.kron(np.eye(1 << k), change[s : s + 1, :]), np.eye(1 << (n - k - 1)))
            blocks.append(np.kron(bra, bra.conj()))  # <e_s| on qubit k, identity elsewhere
        rest_dim = 1 << (n - 1)
        diagonal = np.arange(rest_dim) * (rest_dim + 1)
        traces = [block[diagonal].sum(axis=0) for block in blocks]
        table = np.vstack([traces[0], traces[1], blocks[0], blocks[1]]).astype(complex)
        table.flags.writeable = False
        _PROJECTIONS[(basis, k, n)] = table
    return table


def _project(rho: np.ndarray, basis: str, k: int, n: int) -> tuple[float, float, np.ndarray]:
    """P(0), P(1) and the unnormalised remainders <e_s|ρ|e_s> (s = 0, 1) of measuring qubit k."""
    # np.dot rather than @ here and below: on tiny arrays the call overhead is most of the cost.
    projected = np.dot(_projections(basis, k, n), rho.reshape(-1))
    p0, p1 = (p.real for p in projected[:2].tolist())
    size = 1 << (n - 1)
    return p0, p1, projected[2:].reshape(2, size, size)


def _bell_rows(position_a: int) -> np.ndarray:
    """The Bell-measurement operator as (outcome, a, b) with a at position_a of an (a, b) pair."""
    rows = _FIXED_OPERATORS["BSM"].reshape(4, 2, 2)
    return rows if position_a == 0 else rows.transpose(0, 2, 1)


_BELL_PAIR_TABLES: dict[int, np.ndarray] = {}


def _bell_pair_table(position_a: int) -> np.ndarray:
    """Takes the flat ρ of a pair holding a and b to the four Bell outcome probabilities."""
    table = _BELL_PAIR_TABLES.get(position_a)
    if table is None:
        rows = _bell_rows(position_a).reshape(4, 4)
        table = np.einsum("Bi,Bj->Bij", rows, rows.conj()).reshape(4, 16)
        table.flags.writeable = False
        _BELL_PAIR_TABLES[position_a] = table
    return table


def _bell_pair_probabilities(rho: np.ndarray, position_a: int) -> list[float]:
    """The four Bell outcome probabilities of a pair holding a (at position_a) and b."""
    return np.dot(_bell_pair_table(position_a), rho.reshape(16)).real.tolist()


_BELL_SWAP_TABLES: dict[tuple[int, int], tuple] = {}


def _bell_swap_tables(position_a: int, position_b: int) -> tuple:
    """Tables for a Bell measurement of a in pair (p, a) and b in pair (b, q), either order each.

    (map_1, map_2): left = map_1 @ flat ρ1 as a 5×4 matrix, rows (p p') then Tr_p,
    columns (a a'); right = map_2 @ flat ρ2 as 4×20, rows (a a'), columns (outcome q q') then
    Tr_q per outcome. states = left @ right holds every outcome's unnormalised (p, q) state, with
    the outcome probabilities at states[4, 16:].
    """
    tables = _BELL_SWAP_TABLES.get((position_a, position_b))
    if tables is None:
        units = np.eye(16).reshape(16, 2, 2, 2, 2)  # every flat 4×4 basis matrix
        units_1 = units if position_a == 1 else units.transpose(0, 2, 1, 4, 3)  # (p a p' a')
        units_2 = units if position_b == 0 else units.transpose(0, 2, 1, 4, 3)  # (b q b' q')
        realigned_1 = units_1.transpose(0, 1, 3, 2, 4).reshape(16, 4, 4)
        traced_1 = np.einsum("fpapc->fac", units_1).reshape(16, 1, 4)
        map_1 = np.concatenate([realigned_1, traced_1], axis=1).reshape(16, 20).T
        w = _FIXED_OPERATORS["BSM"].reshape(4, 2, 2)  # (outcome, a, b)
        projected_2 = np.einsum("Bab,Bcd,fbqdr->facBqr", w, w.conj(), units_2)
        traced_2 = np.einsum("facBqq->facB", projected_2).reshape(16, 4, 4)
        map_2 = np.concatenate([projected_2.reshape(16, 4, 16), traced_2], axis=2)
        map_2 = map_2.reshape(16, 80).T
        tables = (np.ascontiguousarray(map_1, complex), np.ascontiguousarray(map_2))
        for table in tables:
            table.flags.writeable = False
        _BELL_SWAP_TABLES[(position_a, position_b)] = tables
    return tables


# Flat indices into _swap_states' 5×20 table: outcome B's state of (p, q) as (p q, p' q').
_SWAP_GATHERS = tuple(
    np.arange(100)
    .reshape(5, 20)[:4, :16]
    .reshape(2, 2, 4, 2, 2)
    .transpose(2, 0, 3, 1, 4)
    .reshape(4, 16)
)


def _swap_states(rho_1, rho_2, position_a: int, position_b: int) -> tuple[np.ndarray, list]:
    """Every Bell outcome's unnormalised (p, q) state (a 5×20 table) and the four probabilities."""
    map_1, map_2 = _bell_swap_tables(position_a, position_b)
    left = np.dot(map_1, rho_1.reshape(16)).reshape(5, 4)
    states = np.dot(left, np.dot(map_2, rho_2.reshape(16)).reshape(4, 20))
    return states, [p.real for p in states[4, 16:].tolist()]


def _swap_remainder(states: np.ndarray, outcome: int, probability: float) -> np.ndarray:
    """Outcome's normalised 4×4 state of (p, q), from _swap_states' table."""
    rho = states.take(_SWAP_GATHERS[outcome]).reshape(4, 4)
    rho *= 1.0 / probability
    return rho
