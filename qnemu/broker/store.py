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

from qnemu.broker.checks import (
    MAX_GROUP_QUBITS,
    StoreError,
    check_density_matrix,
    check_gate_noise,
    check_memory_times,
    check_owner,
    check_pair,
    check_probability,
    check_readout_error,
    check_target,
    check_time,
    parse_basis,
    parse_channel,
    parse_gate,
    parse_qubits,
)
from qnemu.broker.kernels import (
    _BASIS_CHANGE_KEY,
    _EIGENSTATES,
    _EXPAND_MAX_QUBITS,
    _EXPANDED_CACHE_SIZE,
    _PROJECT_MAX_QUBITS,
    _SUPEROPERATOR_MAX_QUBITS,
    _bell_pair_probabilities,
    _decohere_in_place,
    _fidelity,
    _kron,
    _left,
    _operator,
    _partial_state,
    _project,
    _replace_mixed,
    _split_tables,
    _superoperator,
    _swap_remainder,
    _swap_states,
)
from qnemu.physics.bell import BellState
from qnemu.physics.noise import decoherence_parameters

__all__ = ["StateStore", "StoreError"]

_BELL_STATES = tuple(sorted(BellState))  # indexed by the outcome bits x << 1 | z


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
        # Fused kernels on 1–3 qubit groups; False forces the general paths (tests compare them).
        self._fused = True

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
        depolar_prob = check_gate_noise(depolar_prob)
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
        return self._measure(record, basis, readout_error, free)

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
        if type(qubit_a) is not int or type(qubit_b) is not int or qubit_a == qubit_b:
            parse_qubits([qubit_a, qubit_b], 2)  # two distinct ints pass it anyway
        now_s = check_time(now_s)
        depolar_prob = check_gate_noise(depolar_prob)
        readout_error = check_readout_error(readout_error)
        record_a = self._record(qubit_a, owner)
        record_b = self._record(qubit_b, owner)
        self._advance(record_a, now_s)
        self._advance(record_b, now_s)
        group_a, group_b = record_a.group, record_b.group
        if self._fused and not depolar_prob and len(group_a.qubits) == len(group_b.qubits) == 2:
            if group_a is group_b:
                return self._bell_measure_pair(record_a, record_b, readout_error, free)
            return self._bell_measure_swap(record_a, record_b, readout_error, free)
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
        return _BELL_STATES[(x_bit << 1) | z_bit]

    def create_pair(
        self,
        owners: tuple[str, str],
        state: np.ndarray,
        now_s: float,
        t1_s: tuple[float | None, float | None] = (None, None),
        t2_s: tuple[float | None, float | None] = (None, None),
    ) -> tuple[int, int]:
        """Two new qubits (a, b) holding the given 4×4 density matrix (order a, b)."""
        owner_a, owner_b = check_pair("owners", owners)
        owner_a, owner_b = check_owner(owner_a), check_owner(owner_b)
        now_s = check_time(now_s)
        t1_a, t1_b = check_pair("t1_s", t1_s)
        t2_a, t2_b = check_pair("t2_s", t2_s)
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
        groups = {id(record.group): record.group for record in records}
        size = sum(len(g.qubits) for g in groups.values())
        if size > MAX_GROUP_QUBITS:  # refused before anything changes
            raise StoreError(
                "too_large",
                f"this would entangle {size} qubits in one state (at most {MAX_GROUP_QUBITS})",
            )
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
        fused = self._fused and n <= _SUPEROPERATOR_MAX_QUBITS
        cache_key = (key, positions, n, fused)
        expanded = self._expanded.get(cache_key)
        if expanded is None:
            if len(self._expanded) >= _EXPANDED_CACHE_SIZE:
                self._expanded.clear()  # only reached with many distinct rotation angles
            full = _left(np.eye(1 << n, dtype=complex), _operator(key), positions, n)
            if fused:
                expanded = _superoperator(full)
            else:
                expanded = (full, np.ascontiguousarray(full.conj().T))
            self._expanded[cache_key] = expanded
        if fused:
            dim = 1 << n
            group.rho = np.dot(expanded, group.rho.reshape(dim * dim)).reshape(dim, dim)
        else:
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
        """Measure and split the qubit off (or free it); returns the reported bit."""
        group = record.group
        n, k = len(group.qubits), group.qubits.index(record.handle)
        if basis != "Z" and self._fused and n <= _PROJECT_MAX_QUBITS:
            # One product in place of the basis change and the split (Z needs no change).
            p0, p1, remainders = _project(group.rho, basis, k, n)
            outcome = 0 if self._rng.random() < p0 else 1
            if n > 1:
                group.rho = remainders[outcome] * (1.0 / (p1 if outcome else p0))
        else:
            if basis != "Z":
                self._unitary(group, _BASIS_CHANGE_KEY[basis], (k,))
            rho = group.rho
            # P(0) from the diagonal entries where qubit k is 0; the rest of the group keeps
            # the block where qubit k is `outcome` on both sides, renormalised.
            diagonal_0, blocks = _split_tables(k, n)
            p0 = sum(rho.take(diagonal_0).real.tolist())
            outcome = 0 if self._rng.random() < p0 else 1
            if n > 1:
                rest = rho.take(blocks[outcome])
                rest *= 1.0 / (p0 if outcome == 0 else 1.0 - p0)
                group.rho = rest
        if n > 1:
            group.qubits.remove(record.handle)
            self._settle(record, basis, outcome, freeing)
        elif freeing:
            del self._qubits[record.handle]
            self._groups.discard(group)
        else:
            group.rho = _EIGENSTATES[basis][outcome].copy()
        return self._report(outcome, readout_error)

    def _settle(self, record: _Qubit, basis: str, outcome: int, freeing: bool) -> None:
        """A measured qubit, already out of its group: freed, or alone in its eigenstate."""
        if freeing:
            del self._qubits[record.handle]
            return
        record.group = _Group([record.handle], _EIGENSTATES[basis][outcome].copy())
        self._groups.add(record.group)

    def _report(self, outcome: int, readout_error) -> int:
        flip_p = readout_error[outcome]
        if flip_p > 0.0 and self._rng.random() < flip_p:
            return outcome ^ 1
        return outcome

    def _bell_outcome(self, probabilities: list[float], readout_error) -> tuple[int, int, int]:
        """(outcome, reported x bit, reported z bit): a's bit drawn from its marginal, then
        b's from its conditional, with the same draws as two measurements in turn."""
        p_x0 = probabilities[0] + probabilities[1]
        x = 0 if self._rng.random() < p_x0 else 1
        x_bit = self._report(x, readout_error)
        p_x = probabilities[2 * x] + probabilities[2 * x + 1]
        z = 0 if self._rng.random() < probabilities[2 * x] / p_x else 1
        return 2 * x + z, x_bit, self._report(z, readout_error)

    def _bell_measure_pair(self, record_a, record_b, readout_error, free: bool) -> BellState:
        """Bell measurement of the two qubits of one pair, from its 4×4 matrix directly."""
        group = record_a.group
        probabilities = _bell_pair_probabilities(group.rho, group.qubits.index(record_a.handle))
        outcome, x_bit, z_bit = self._bell_outcome(probabilities, readout_error)
        self._groups.discard(group)
        self._settle(record_a, "Z", outcome >> 1, free)
        self._settle(record_b, "Z", outcome & 1, free)
        return _BELL_STATES[(x_bit << 1) | z_bit]

    def _bell_measure_swap(self, record_a, record_b, readout_error, free: bool) -> BellState:
        """Entanglement swapping: a of pair (p, a) and b of pair (b, q) Bell-measured, leaving
        (p, q) in the group of a, without forming the 16×16 matrix."""
        group_a, group_b = record_a.group, record_b.group
        position_a = group_a.qubits.index(record_a.handle)
        position_b = group_b.qubits.index(record_b.handle)
        states, probabilities = _swap_states(group_a.rho, group_b.rho, position_a, position_b)
        outcome, x_bit, z_bit = self._bell_outcome(probabilities, readout_error)
        partner_b = group_b.qubits[1 - position_b]
        group_a.qubits = [group_a.qubits[1 - position_a], partner_b]
        group_a.rho = _swap_remainder(states, outcome, probabilities[outcome])
        self._qubits[partner_b].group = group_a
        self._groups.discard(group_b)
        self._settle(record_a, "Z", outcome >> 1, free)
        self._settle(record_b, "Z", outcome & 1, free)
        return _BELL_STATES[(x_bit << 1) | z_bit]

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
