"""The broker's state store: every qubit's state, kept as independent groups of density matrices.

A group is the set of qubits that are (or may be) correlated; its state is one 2^n × 2^n
numpy array, qubit order = the group's list order (first = most significant bit). Operations
spanning two groups merge them; a measurement splits the measured qubit off again. Memory
decoherence is applied lazily, per qubit, from the emulated time it was last touched: the
channels are local, so applying them late (just before the qubit is next used) is exact.
"""

import math
from collections import Counter
from collections.abc import Sequence

import numpy as np

from qnemu.physics.bell import BellState
from qnemu.physics.gates import ROTATIONS, SINGLE_QUBIT_GATES, TWO_QUBIT_GATES, H, S, rotation
from qnemu.physics.noise import decoherence_parameters

__all__ = [
    "BASES",
    "CHANNELS",
    "GATE_NAMES",
    "STATE_TOLERANCE",
    "StateStore",
    "StoreError",
    "check_density_matrix",
    "check_memory_times",
    "check_owner",
    "check_probability",
    "check_readout_error",
    "check_target",
    "check_time",
    "parse_basis",
    "parse_channel",
    "parse_gate",
    "parse_qubits",
]

STATE_TOLERANCE = 1e-9  # Hermiticity, trace and positivity slack accepted for a given state
BASES = ("Z", "X", "Y")
CHANNELS = ("depolarise", "dephase", "amplitude_damp")
_GATE_ARITY = {name: 1 for name in (*SINGLE_QUBIT_GATES, *ROTATIONS)} | {
    name: 2 for name in TWO_QUBIT_GATES
}
GATE_NAMES = tuple(_GATE_ARITY)


class StoreError(Exception):
    """An operation the store refused; the state is left exactly as it was."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


# --- argument checks, shared with the qutip reference store -------------------------------


def check_time(now_s: float) -> float:
    try:
        value = float(now_s)
    except (TypeError, ValueError):
        raise StoreError(
            "bad_parameter", f"time must be a number of seconds, got {now_s!r}"
        ) from None
    if not math.isfinite(value):
        raise StoreError("bad_parameter", f"time must be finite, got {now_s!r}")
    return value


def check_probability(name: str, value: float) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise StoreError("bad_parameter", f"{name} must be a number, got {value!r}") from None
    if not 0.0 <= number <= 1.0:  # also rejects nan
        raise StoreError("bad_parameter", f"{name} must be in [0, 1], got {value!r}")
    return number


def check_readout_error(readout_error: Sequence[float]) -> tuple[float, float]:
    try:
        p_one_given_zero, p_zero_given_one = readout_error
    except (TypeError, ValueError):
        raise StoreError(
            "bad_parameter", f"readout_error must be [p(1|0), p(0|1)], got {readout_error!r}"
        ) from None
    return (
        check_probability("readout_error p(1|0)", p_one_given_zero),
        check_probability("readout_error p(0|1)", p_zero_given_one),
    )


def check_owner(owner: str) -> str:
    if type(owner) is not str or not owner:
        raise StoreError("bad_parameter", f"owner must be a non-empty node name, got {owner!r}")
    return owner


def check_memory_times(t1_s: float | None, t2_s: float | None) -> tuple[float | None, float | None]:
    """T1/T2 in seconds (None = no decay); T2 ≤ 2·T1."""
    times = []
    for name, value in (("t1_s", t1_s), ("t2_s", t2_s)):
        if value is None:
            times.append(None)
            continue
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise StoreError(
                "bad_parameter", f"{name} must be seconds or null, got {value!r}"
            ) from None
        if not number > 0.0:  # rejects nan, 0 and negatives
            raise StoreError("bad_parameter", f"{name} must be > 0 seconds, got {value!r}")
        times.append(number)
    t1, t2 = times
    if t1 is not None and t2 is not None and t2 > 2.0 * t1:
        raise StoreError("bad_parameter", f"T2 must be <= 2·T1 (got T1={t1} s, T2={t2} s)")
    return t1, t2


def check_density_matrix(state: np.ndarray, dim: int) -> np.ndarray:
    """A dim × dim density matrix (Hermitian, trace 1, PSD within STATE_TOLERANCE), as a copy."""
    try:
        rho = np.array(state, dtype=complex)
    except (TypeError, ValueError):
        raise StoreError("bad_state", "state is not a numeric matrix") from None
    if rho.shape != (dim, dim):
        raise StoreError("bad_state", f"state must be {dim}x{dim}, got shape {rho.shape}")
    if not np.all(np.isfinite(rho)):
        raise StoreError("bad_state", "state has non-finite entries")
    if np.max(np.abs(rho - rho.conj().T)) > STATE_TOLERANCE:
        raise StoreError("bad_state", "state is not Hermitian")
    trace = np.trace(rho).real
    if abs(trace - 1.0) > STATE_TOLERANCE:
        raise StoreError("bad_state", f"state has trace {trace}, not 1")
    lowest = np.linalg.eigvalsh(rho)[0]
    if lowest < -STATE_TOLERANCE:
        raise StoreError("bad_state", f"state is not positive semidefinite (eigenvalue {lowest})")
    return rho


def check_target(target: np.ndarray, dim: int) -> tuple[bool, np.ndarray]:
    """(is_vector, array): a normalised state vector of length dim or a density matrix."""
    try:
        array = np.array(target, dtype=complex)
    except (TypeError, ValueError):
        raise StoreError("bad_state", "target is not a numeric vector or matrix") from None
    if array.ndim == 2 and array.shape == (dim, 1):
        array = array[:, 0]
    if array.ndim == 1:
        if array.shape != (dim,) or not np.all(np.isfinite(array)):
            raise StoreError("bad_state", f"target vector must have {dim} finite entries")
        norm = np.linalg.norm(array)
        if abs(norm - 1.0) > STATE_TOLERANCE:
            raise StoreError("bad_state", f"target vector has norm {norm}, not 1")
        return True, array
    return False, check_density_matrix(array, dim)


def parse_gate(name: str, angle: float | None) -> tuple[str, int, float | None]:
    """(canonical name, number of qubits, angle or None)."""
    arity = _GATE_ARITY.get(name) if type(name) is str else None
    if arity is None:
        canonical = name.upper() if type(name) is str else None
        arity = _GATE_ARITY.get(canonical)
        if arity is None:
            raise StoreError("bad_gate", f"unknown gate {name!r} (known: {', '.join(GATE_NAMES)})")
        name = canonical
    if name in ROTATIONS:
        if angle is None:
            raise StoreError("bad_angle", f"{name} needs an angle in radians")
        try:
            angle = float(angle)
        except (TypeError, ValueError):
            raise StoreError("bad_angle", f"angle must be a number, got {angle!r}") from None
        if not math.isfinite(angle):
            raise StoreError("bad_angle", f"angle must be finite, got {angle!r}")
    elif angle is not None:
        raise StoreError("bad_angle", f"{name} takes no angle (got {angle!r})")
    return name, arity, angle


def parse_basis(basis: str) -> str:
    if basis in BASES:
        return basis
    if type(basis) is str and basis.upper() in BASES:
        return basis.upper()
    raise StoreError("bad_basis", f"unknown basis {basis!r} (known: Z, X, Y)")


def parse_channel(channel: str, num_qubits: int) -> str:
    if channel not in CHANNELS:
        raise StoreError(
            "bad_channel", f"unknown channel {channel!r} (known: {', '.join(CHANNELS)})"
        )
    if channel == "depolarise" and num_qubits > 2:
        raise StoreError("bad_parameter", f"depolarise acts on 1 or 2 qubits, got {num_qubits}")
    return channel


def parse_qubits(qubits: Sequence[int], count: int | None = None) -> list:
    """The qubit handles as a list: distinct, at least one, exactly `count` if given."""
    if type(qubits) is not list:
        if isinstance(qubits, str | bytes | dict) or not hasattr(qubits, "__iter__"):
            raise StoreError("bad_parameter", f"qubits must be a list of handles, got {qubits!r}")
        qubits = list(qubits)
    if count is not None and len(qubits) != count:
        raise StoreError("bad_parameter", f"expected {count} qubit(s), got {len(qubits)}")
    if not qubits:
        raise StoreError("bad_parameter", "no qubits given")
    if len(qubits) > 1:
        try:
            distinct = len(set(qubits))
        except TypeError:
            raise StoreError(
                "bad_parameter", f"qubit handles are integers, got {qubits!r}"
            ) from None
        if distinct != len(qubits):
            raise StoreError("duplicate_qubit", f"qubits must be distinct, got {qubits}")
    return qubits


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


class _Qubit:
    __slots__ = ("decays", "group", "handle", "owner", "t1_s", "t2_s", "updated_at")

    def __init__(self, handle, owner, t1_s, t2_s, updated_at, group):
        self.handle = handle
        self.owner = owner
        self.t1_s = t1_s
        self.t2_s = t2_s
        self.decays = t1_s is not None or t2_s is not None
        self.updated_at = updated_at
        self.group = group


class _Group:
    __slots__ = ("qubits", "rho")

    def __init__(self, qubits: list[int], rho: np.ndarray) -> None:
        self.qubits = qubits
        self.rho = rho


class StateStore:
    """The quantum state of every qubit in the network, as groups of numpy density matrices."""

    def __init__(self, rng: np.random.Generator | None = None, seed: int | None = None) -> None:
        self._rng = rng if rng is not None else np.random.default_rng(seed)
        self._qubits: dict[int, _Qubit] = {}
        self._groups: set[_Group] = set()
        self._next_handle = 0  # handles below this that are not live have been freed
        # (gate name or (rotation, angle), positions, group size) -> (U, U†) on the whole group
        self._expanded: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}
        self._validated_pairs: dict[bytes, np.ndarray] = {}  # stations resend the same states

    # --- queries ------------------------------------------------------------------------

    @property
    def qubit_count(self) -> int:
        return len(self._qubits)

    @property
    def group_count(self) -> int:
        return len(self._groups)

    def group_sizes(self) -> Counter:
        """Number of groups by size (qubits per group)."""
        return Counter(len(group.qubits) for group in self._groups)

    def owner_of(self, qubit: int) -> str:
        return self._record(qubit).owner

    def group_members(self, qubit: int) -> tuple[int, ...]:
        """The qubits sharing a group (a density matrix) with this one, itself included."""
        return tuple(self._record(qubit).group.qubits)

    # --- operations ---------------------------------------------------------------------

    def alloc(
        self, owner: str, now_s: float, t1_s: float | None = None, t2_s: float | None = None
    ) -> int:
        """A new qubit in |0>."""
        owner = check_owner(owner)
        now_s = check_time(now_s)
        t1_s, t2_s = check_memory_times(t1_s, t2_s)
        return self._new_qubit(owner, now_s, t1_s, t2_s, _Group([], _EIGENSTATES["Z"][0].copy()))

    def free(self, qubit: int, owner: str, now_s: float) -> None:
        """Trace the qubit out of its group; its handle is never reused."""
        check_time(now_s)
        # No decoherence first: a local channel on a qubit being traced out leaves the rest as is.
        self._free(self._record(qubit, owner))

    def gate(
        self,
        name: str,
        qubits: Sequence[int],
        owner: str,
        now_s: float,
        angle: float | None = None,
        depolar_prob: float = 0.0,
    ) -> None:
        """Apply a gate (then depolarising gate noise with probability depolar_prob)."""
        name, arity, angle = parse_gate(name, angle)
        qubits = parse_qubits(qubits, arity)
        now_s = check_time(now_s)
        depolar_prob = _check_gate_noise(depolar_prob)
        records = [self._record(q, owner) for q in qubits]
        for record in records:
            self._advance(record, now_s)
        group = self._joined(records)
        positions = tuple(group.qubits.index(r.handle) for r in records)
        if angle is None:
            self._unitary(group, name, positions)
        else:
            self._unitary(group, (name, angle), positions)
        if depolar_prob:
            self._depolarise(group, positions, depolar_prob)

    def measure(
        self,
        qubit: int,
        basis: str,
        owner: str,
        now_s: float,
        readout_error: tuple[float, float] = (0.0, 0.0),
        free: bool = False,
    ) -> int:
        """Measure in the Z, X or Y basis: 0 for the +1 eigenstate (reported after readout error).

        The qubit is left alone in the post-measurement eigenstate (or freed with free=True).
        """
        basis = parse_basis(basis)
        now_s = check_time(now_s)
        readout_error = check_readout_error(readout_error)
        record = self._record(qubit, owner)
        self._advance(record, now_s)
        outcome = self._measure(record, basis, readout_error, free)
        if free:
            self._free(record)
        return outcome

    def bell_measure(
        self,
        qubit_a: int,
        qubit_b: int,
        owner: str,
        now_s: float,
        depolar_prob: float = 0.0,
        readout_error: tuple[float, float] = (0.0, 0.0),
        free: bool = True,
    ) -> BellState:
        """CNOT a→b (depolarised with depolar_prob), H on a, measure a then b in Z.

        x_bit = outcome of a (phase), z_bit = outcome of b (parity); a noiseless measurement of
        bell_density(B) returns B.
        """
        parse_qubits([qubit_a, qubit_b], 2)
        now_s = check_time(now_s)
        depolar_prob = _check_gate_noise(depolar_prob)
        readout_error = check_readout_error(readout_error)
        record_a = self._record(qubit_a, owner)
        record_b = self._record(qubit_b, owner)
        self._advance(record_a, now_s)
        self._advance(record_b, now_s)
        group = self._joined([record_a, record_b])
        positions = (group.qubits.index(record_a.handle), group.qubits.index(record_b.handle))
        if depolar_prob:
            self._unitary(group, "CNOT", positions)
            self._depolarise(group, positions, depolar_prob)
            self._unitary(group, "H", positions[:1])
        else:
            self._unitary(group, "BSM", positions)
        x_bit = self._measure(record_a, "Z", readout_error, free)
        z_bit = self._measure(record_b, "Z", readout_error, free)
        if free:
            self._free(record_a)
            self._free(record_b)
        return BellState((x_bit << 1) | z_bit)

    def create_pair(
        self,
        owners: tuple[str, str],
        state: np.ndarray,
        now_s: float,
        t1_s: tuple[float | None, float | None] = (None, None),
        t2_s: tuple[float | None, float | None] = (None, None),
    ) -> tuple[int, int]:
        """Two new qubits (a, b) holding the given 4×4 density matrix (order a, b)."""
        owner_a, owner_b = _pair("owners", owners)
        owner_a, owner_b = check_owner(owner_a), check_owner(owner_b)
        now_s = check_time(now_s)
        t1_a, t1_b = _pair("t1_s", t1_s)
        t2_a, t2_b = _pair("t2_s", t2_s)
        times_a = check_memory_times(t1_a, t2_a)
        times_b = check_memory_times(t1_b, t2_b)
        group = _Group([], self._checked_pair_state(state))
        qubit_a = self._new_qubit(owner_a, now_s, *times_a, group)
        qubit_b = self._new_qubit(owner_b, now_s, *times_b, group, count_group=False)
        return qubit_a, qubit_b

    def apply_noise(
        self, channel: str, qubits: Sequence[int], parameter: float, owner: str, now_s: float
    ) -> None:
        """depolarise (1 or 2 qubits, jointly), dephase or amplitude_damp (each qubit)."""
        qubits = parse_qubits(qubits)
        channel = parse_channel(channel, len(qubits))
        parameter = check_probability(f"{channel} parameter", parameter)
        now_s = check_time(now_s)
        records = [self._record(q, owner) for q in qubits]
        for record in records:
            self._advance(record, now_s)
        if channel == "depolarise":
            group = self._joined(records)
            self._depolarise(group, tuple(group.qubits.index(r.handle) for r in records), parameter)
            return
        for record in records:
            group = record.group
            n, k = len(group.qubits), group.qubits.index(record.handle)
            if channel == "dephase":
                _decohere_in_place(group.rho, k, n, 0.0, 1.0 - 2.0 * parameter)
            else:
                _decohere_in_place(group.rho, k, n, parameter, math.sqrt(1.0 - parameter))

    # --- oracle (emulator only: no owner check) -----------------------------------------

    def reduced_state(self, qubits: Sequence[int], now_s: float) -> np.ndarray:
        """The joint state of these qubits (in this order) at now_s."""
        qubits = parse_qubits(qubits)
        now_s = check_time(now_s)
        records = [self._record(q) for q in qubits]
        for record in records:
            self._advance(record, now_s)
        return self._reduced(records)

    def fidelity(self, qubits: Sequence[int], target: np.ndarray, now_s: float) -> float:
        """<ψ|ρ|ψ> for a target vector, (Tr √(√ρ σ √ρ))² for a target density matrix."""
        qubits = parse_qubits(qubits)
        is_vector, target = check_target(target, 1 << len(qubits))
        return _fidelity(self.reduced_state(qubits, now_s), is_vector, target)

    def export_qobj(self, qubits: Sequence[int], now_s: float):
        """The reduced state as a qutip.Qobj with qubit dims, for inspection."""
        import qutip  # only inspection needs qutip; keep it off the broker's start-up path

        rho = self.reduced_state(qubits, now_s)
        count = rho.shape[0].bit_length() - 1
        return qutip.Qobj(rho, dims=[[2] * count, [2] * count])

    # --- internals ----------------------------------------------------------------------

    def _record(self, qubit: int, owner: str | None = None) -> _Qubit:
        record = self._qubits.get(qubit) if type(qubit) is int else None
        if record is None:
            record = self._lookup_slow(qubit)
        if owner is not None and record.owner != owner:
            raise StoreError(
                "not_owner", f"qubit {record.handle} belongs to {record.owner!r}, not {owner!r}"
            )
        return record

    def _lookup_slow(self, qubit: int) -> _Qubit:
        if isinstance(qubit, bool) or not isinstance(qubit, int | np.integer):
            raise StoreError("bad_parameter", f"qubit handles are integers, got {qubit!r}")
        handle = int(qubit)
        record = self._qubits.get(handle)
        if record is not None:
            return record
        if 0 <= handle < self._next_handle:
            raise StoreError("freed_qubit", f"qubit {handle} has been freed")
        raise StoreError("unknown_qubit", f"no qubit {handle}")

    def _new_qubit(self, owner, now_s, t1_s, t2_s, group: _Group, count_group=True) -> int:
        handle = self._next_handle
        self._next_handle += 1
        self._qubits[handle] = _Qubit(handle, owner, t1_s, t2_s, now_s, group)
        group.qubits.append(handle)
        if count_group:
            self._groups.add(group)
        return handle

    def _advance(self, record: _Qubit, now_s: float) -> None:
        """Memory decoherence from the qubit's last update to now_s (never backwards)."""
        elapsed_s = now_s - record.updated_at
        if elapsed_s <= 0.0:
            return
        record.updated_at = now_s
        if not record.decays:
            return
        gamma, dephase_p = decoherence_parameters(elapsed_s, record.t1_s, record.t2_s)
        group = record.group
        n, k = len(group.qubits), group.qubits.index(record.handle)
        coherence = math.sqrt(1.0 - gamma) * (1.0 - 2.0 * dephase_p)
        _decohere_in_place(group.rho, k, n, gamma, coherence)

    def _checked_pair_state(self, state: np.ndarray) -> np.ndarray:
        """A validated copy of a 4×4 pair state; repeated states skip the eigenvalue check."""
        key = None
        if isinstance(state, np.ndarray) and state.dtype == complex and state.shape == (4, 4):
            key = state.tobytes()
        checked = self._validated_pairs.get(key) if key is not None else None
        if checked is None:
            checked = check_density_matrix(state, 4)
            if key is not None:
                if len(self._validated_pairs) >= 256:
                    self._validated_pairs.clear()
                self._validated_pairs[key] = checked
        return checked.copy()

    def _joined(self, records: list[_Qubit]) -> _Group:
        """The one group holding all these qubits, merging groups as needed."""
        group = records[0].group
        for record in records[1:]:
            other = record.group
            if other is group:
                continue
            group.rho = _kron(group.rho, other.rho)
            group.qubits.extend(other.qubits)
            for handle in other.qubits:
                self._qubits[handle].group = group
            self._groups.discard(other)
        return group

    def _unitary(self, group: _Group, key: str | tuple, positions: tuple) -> None:
        """Apply a fixed gate (key = name) or a rotation (key = (name, angle)) at positions."""
        n = len(group.qubits)
        if n > _EXPAND_MAX_QUBITS:
            op = _operator(key)
            # U ρ U† = U (U ρ)† since ρ is Hermitian: two left multiplications.
            half = _left(group.rho, op, positions, n)
            group.rho = _left(np.ascontiguousarray(half.conj().T), op, positions, n)
            return
        cache_key = (key, positions, n)
        expanded = self._expanded.get(cache_key)
        if expanded is None:
            if len(self._expanded) >= _EXPANDED_CACHE_SIZE:
                self._expanded.clear()  # only reached with many distinct rotation angles
            full = _left(np.eye(1 << n, dtype=complex), _operator(key), positions, n)
            expanded = (full, np.ascontiguousarray(full.conj().T))
            self._expanded[cache_key] = expanded
        group.rho = expanded[0] @ group.rho @ expanded[1]

    def _depolarise(self, group: _Group, positions: tuple, p: float) -> None:
        n = len(group.qubits)
        if len(positions) == 1:
            group.rho = _replace_mixed(group.rho, positions[0], n, p)
            return
        # Both qubits replaced by I/4 is one qubit replaced by I/2, then the other.
        mixed = group.rho
        for k in positions:
            mixed = _replace_mixed(mixed, k, n, 1.0)
        group.rho = (1.0 - p) * group.rho + p * mixed

    def _measure(self, record: _Qubit, basis: str, readout_error, freeing: bool) -> int:
        group = record.group
        n, k = len(group.qubits), group.qubits.index(record.handle)
        if basis != "Z":
            self._unitary(group, _BASIS_CHANGE_KEY[basis], (k,))
        rho = group.rho
        if n == 1:
            p0 = rho[0, 0].real
            outcome = 0 if self._rng.random() < p0 else 1
            group.rho = None if freeing else _EIGENSTATES[basis][outcome].copy()
        else:
            # P(0) from the diagonal entries where qubit k is 0; the rest of the group keeps
            # the block where qubit k is `outcome` on both sides, renormalised.
            diagonal_0, blocks = _split_tables(k, n)
            p0 = sum(rho.take(diagonal_0).real.tolist())
            outcome = 0 if self._rng.random() < p0 else 1
            rest = rho.take(blocks[outcome])
            rest *= 1.0 / (p0 if outcome == 0 else 1.0 - p0)
            group.rho = rest
            group.qubits.remove(record.handle)
            post = None if freeing else _EIGENSTATES[basis][outcome].copy()
            record.group = _Group([record.handle], post)
            self._groups.add(record.group)
        flip_p = readout_error[outcome]
        if flip_p > 0.0 and self._rng.random() < flip_p:
            return outcome ^ 1
        return outcome

    def _free(self, record: _Qubit) -> None:
        del self._qubits[record.handle]
        group = record.group
        n = len(group.qubits)
        if n == 1:
            self._groups.discard(group)
            return
        k = group.qubits.index(record.handle)
        blocks = _split_tables(k, n)[1]
        group.rho = group.rho.take(blocks[0]) + group.rho.take(blocks[1])  # partial trace
        group.qubits.remove(record.handle)

    def _reduced(self, records: list[_Qubit]) -> np.ndarray:
        by_group: dict[_Group, list[int]] = {}
        for record in records:
            by_group.setdefault(record.group, []).append(record.handle)
        parts = [
            _partial_state(group.rho, len(group.qubits), [group.qubits.index(h) for h in handles])
            for group, handles in by_group.items()
        ]
        rho = parts[0]
        for part in parts[1:]:
            rho = _kron(rho, part)
        current = [h for handles in by_group.values() for h in handles]
        wanted = [r.handle for r in records]
        if current == wanted:
            return rho
        m = len(wanted)
        perm = [current.index(h) for h in wanted]
        tensor = rho.reshape((2,) * (2 * m)).transpose(perm + [m + p for p in perm])
        return np.ascontiguousarray(tensor.reshape(1 << m, 1 << m))


def _pair(name: str, value) -> tuple:
    try:
        first, second = value
    except (TypeError, ValueError):
        raise StoreError("bad_parameter", f"{name} must be a pair, got {value!r}") from None
    return first, second


def _check_gate_noise(depolar_prob: float) -> float:
    if type(depolar_prob) is float and depolar_prob == 0.0:  # the common noiseless case, fast
        return 0.0
    return check_probability("depolar_prob", depolar_prob)
