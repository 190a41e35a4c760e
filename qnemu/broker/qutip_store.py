"""Reference state store on qutip: StateStore's operations, written to be obviously right, not fast.

Every channel is applied as Kraus operators from qnemu.physics.noise (expanded with qutip), every
gate is qutip's own, measurements use projectors and partial traces. It draws random numbers
exactly as StateStore does, so the two give the same outcomes from the same seed.
"""

from collections import Counter
from collections.abc import Sequence

import numpy as np
import qutip
from qutip import Qobj, basis, expand_operator, gates, ket2dm, tensor

from qnemu.broker.checks import (
    StoreError,
    check_density_matrix,
    check_memory_times,
    check_owner,
    check_probability,
    check_readout_error,
    check_target,
    check_time,
    parse_basis,
    parse_channel,
    parse_gate,
    parse_qubits,
)
from qnemu.physics import noise
from qnemu.physics.bell import BellState

__all__ = ["QutipStateStore"]

_FIXED_GATES = {
    "X": qutip.sigmax(),
    "Y": qutip.sigmay(),
    "Z": qutip.sigmaz(),
    "H": gates.snot(),
    "S": gates.s_gate(),
    "T": gates.t_gate(),
    "CNOT": gates.cnot(),
    "CZ": gates.cz_gate(),
}
_ROTATIONS = {"RX": gates.rx, "RY": gates.ry, "RZ": gates.rz}
_ZERO, _ONE = basis(2, 0), basis(2, 1)
_EIGENSTATES = {  # outcome 0 = +1 eigenstate
    "Z": (_ZERO, _ONE),
    "X": ((_ZERO + _ONE).unit(), (_ZERO - _ONE).unit()),
    "Y": ((_ZERO + 1j * _ONE).unit(), (_ZERO - 1j * _ONE).unit()),
}


class _Qubit:
    def __init__(self, handle: int, owner: str, t1_s, t2_s, updated_at: float) -> None:
        self.handle = handle
        self.owner = owner
        self.t1_s = t1_s
        self.t2_s = t2_s
        self.updated_at = updated_at
        self.group: _Group | None = None


class _Group:
    def __init__(self, qubits: list[int], state: Qobj) -> None:
        self.qubits = qubits
        self.state = state


def _kraus_qobjs(kraus: list[np.ndarray]) -> list[Qobj]:
    count = int(np.log2(kraus[0].shape[0]))
    return [Qobj(k, dims=[[2] * count, [2] * count]) for k in kraus]


class QutipStateStore:
    """The same qubit store as StateStore, on qutip Qobj density matrices (test reference)."""

    def __init__(self, rng: np.random.Generator | None = None, seed: int | None = None) -> None:
        self._rng = rng if rng is not None else np.random.default_rng(seed)
        self._qubits: dict[int, _Qubit] = {}
        self._groups: list[_Group] = []
        self._next_handle = 0

    @property
    def qubit_count(self) -> int:
        return len(self._qubits)

    @property
    def group_count(self) -> int:
        return len(self._groups)

    def group_sizes(self) -> Counter:
        return Counter(len(group.qubits) for group in self._groups)

    def owner_of(self, qubit: int) -> str:
        return self._record(qubit).owner

    def group_members(self, qubit: int) -> tuple[int, ...]:
        return tuple(self._record(qubit).group.qubits)

    def alloc(
        self, owner: str, now_s: float, t1_s: float | None = None, t2_s: float | None = None
    ) -> int:
        owner = check_owner(owner)
        now_s = check_time(now_s)
        t1_s, t2_s = check_memory_times(t1_s, t2_s)
        handle = self._new_qubit(owner, now_s, t1_s, t2_s)
        self._add_group([handle], ket2dm(_ZERO))
        return handle

    def free(self, qubit: int, owner: str, now_s: float) -> None:
        check_time(now_s)
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
        name, arity, angle = parse_gate(name, angle)
        qubits = parse_qubits(qubits, arity)
        now_s = check_time(now_s)
        depolar_prob = check_probability("depolar_prob", depolar_prob)
        records = [self._record(q, owner) for q in qubits]
        for record in records:
            self._advance(record, now_s)
        operator = _FIXED_GATES[name] if angle is None else _ROTATIONS[name](angle)
        self._apply_unitary(records, operator)
        if depolar_prob > 0.0:
            self._apply_kraus(records, noise.depolarise_kraus(depolar_prob, len(records)))

    def measure(
        self,
        qubit: int,
        basis: str,
        owner: str,
        now_s: float,
        readout_error: tuple[float, float] = (0.0, 0.0),
        free: bool = False,
    ) -> int:
        basis = parse_basis(basis)
        now_s = check_time(now_s)
        readout_error = check_readout_error(readout_error)
        record = self._record(qubit, owner)
        self._advance(record, now_s)
        outcome = self._measure(record, basis, readout_error)
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
        parse_qubits([qubit_a, qubit_b], 2)
        now_s = check_time(now_s)
        depolar_prob = check_probability("depolar_prob", depolar_prob)
        readout_error = check_readout_error(readout_error)
        record_a = self._record(qubit_a, owner)
        record_b = self._record(qubit_b, owner)
        self._advance(record_a, now_s)
        self._advance(record_b, now_s)
        self._apply_unitary([record_a, record_b], _FIXED_GATES["CNOT"])
        if depolar_prob > 0.0:
            self._apply_kraus([record_a, record_b], noise.depolarise_kraus(depolar_prob, 2))
        self._apply_unitary([record_a], _FIXED_GATES["H"])
        x_bit = self._measure(record_a, "Z", readout_error)
        z_bit = self._measure(record_b, "Z", readout_error)
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
        owner_a, owner_b = _pair("owners", owners)
        owner_a, owner_b = check_owner(owner_a), check_owner(owner_b)
        now_s = check_time(now_s)
        t1_a, t1_b = _pair("t1_s", t1_s)
        t2_a, t2_b = _pair("t2_s", t2_s)
        times_a = check_memory_times(t1_a, t2_a)
        times_b = check_memory_times(t1_b, t2_b)
        rho = Qobj(check_density_matrix(state, 4), dims=[[2, 2], [2, 2]])
        qubit_a = self._new_qubit(owner_a, now_s, *times_a)
        qubit_b = self._new_qubit(owner_b, now_s, *times_b)
        self._add_group([qubit_a, qubit_b], rho)
        return qubit_a, qubit_b

    def apply_noise(
        self, channel: str, qubits: Sequence[int], parameter: float, owner: str, now_s: float
    ) -> None:
        qubits = parse_qubits(qubits)
        channel = parse_channel(channel, len(qubits))
        parameter = check_probability(f"{channel} parameter", parameter)
        now_s = check_time(now_s)
        records = [self._record(q, owner) for q in qubits]
        for record in records:
            self._advance(record, now_s)
        if channel == "depolarise":
            self._apply_kraus(records, noise.depolarise_kraus(parameter, len(records)))
            return
        kraus = (
            noise.dephase_kraus(parameter)
            if channel == "dephase"
            else noise.amplitude_damp_kraus(parameter)
        )
        for record in records:
            self._apply_kraus([record], kraus)

    def reduced_state(self, qubits: Sequence[int], now_s: float) -> np.ndarray:
        return self._reduced_qobj(qubits, now_s).full()

    def fidelity(self, qubits: Sequence[int], target: np.ndarray, now_s: float) -> float:
        qubits = parse_qubits(qubits)
        is_vector, target = check_target(target, 1 << len(qubits))
        rho = self._reduced_qobj(qubits, now_s)
        dims = [[2] * len(qubits), [2] * len(qubits)]
        if is_vector:
            return float(qutip.expect(rho, Qobj(target, dims=[dims[0], [1] * len(qubits)])))
        return float(qutip.fidelity(rho, Qobj(target, dims=dims)) ** 2)

    def export_qobj(self, qubits: Sequence[int], now_s: float) -> Qobj:
        return self._reduced_qobj(qubits, now_s)

    # --- internals ----------------------------------------------------------------------

    def _record(self, qubit: int, owner: str | None = None) -> _Qubit:
        if isinstance(qubit, bool) or not isinstance(qubit, int | np.integer):
            raise StoreError("bad_parameter", f"qubit handles are integers, got {qubit!r}")
        handle = int(qubit)
        record = self._qubits.get(handle)
        if record is None:
            if 0 <= handle < self._next_handle:
                raise StoreError("freed_qubit", f"qubit {handle} has been freed")
            raise StoreError("unknown_qubit", f"no qubit {handle}")
        if owner is not None and record.owner != owner:
            raise StoreError(
                "not_owner", f"qubit {handle} belongs to {record.owner!r}, not {owner!r}"
            )
        return record

    def _new_qubit(self, owner: str, now_s: float, t1_s, t2_s) -> int:
        handle = self._next_handle
        self._next_handle += 1
        self._qubits[handle] = _Qubit(handle, owner, t1_s, t2_s, now_s)
        return handle

    def _add_group(self, qubits: list[int], state: Qobj) -> _Group:
        group = _Group(qubits, state)
        self._groups.append(group)
        for handle in qubits:
            self._qubits[handle].group = group
        return group

    def _remove_group(self, group: _Group) -> None:
        self._groups = [g for g in self._groups if g is not group]

    def _advance(self, record: _Qubit, now_s: float) -> None:
        if now_s <= record.updated_at:
            return
        gamma, dephase_p = noise.memory_decoherence(
            now_s - record.updated_at, record.t1_s, record.t2_s
        )
        record.updated_at = now_s
        self._apply_kraus([record], noise.amplitude_damp_kraus(gamma))
        self._apply_kraus([record], noise.dephase_kraus(dephase_p))

    def _merged(self, records: list[_Qubit]) -> _Group:
        """One group holding every qubit of these records (tensor product of their groups)."""
        groups: list[_Group] = []
        for record in records:
            if all(record.group is not g for g in groups):
                groups.append(record.group)
        if len(groups) == 1:
            return groups[0]
        for group in groups:
            self._remove_group(group)
        qubits = [handle for group in groups for handle in group.qubits]
        return self._add_group(qubits, tensor([group.state for group in groups]))

    def _apply_unitary(self, records: list[_Qubit], operator: Qobj) -> None:
        group = self._merged(records)
        targets = [group.qubits.index(r.handle) for r in records]
        full = expand_operator(operator, dims=[2] * len(group.qubits), targets=targets)
        group.state = full * group.state * full.dag()

    def _apply_kraus(self, records: list[_Qubit], kraus: list[np.ndarray]) -> None:
        group = self._merged(records)
        targets = [group.qubits.index(r.handle) for r in records]
        dims = [2] * len(group.qubits)
        expanded = [expand_operator(k, dims=dims, targets=targets) for k in _kraus_qobjs(kraus)]
        group.state = sum(k * group.state * k.dag() for k in expanded)

    def _measure(self, record: _Qubit, basis: str, readout_error: tuple[float, float]) -> int:
        group = record.group
        n = len(group.qubits)
        k = group.qubits.index(record.handle)
        projectors = [
            expand_operator(ket2dm(e), dims=[2] * n, targets=[k]) for e in _EIGENSTATES[basis]
        ]
        p0 = qutip.expect(projectors[0], group.state)
        outcome = 0 if self._rng.random() < p0 else 1
        projected = projectors[outcome] * group.state * projectors[outcome]
        self._remove_group(group)
        others = [i for i in range(n) if i != k]
        if others:
            rest = projected.ptrace(others) / projected.tr()
            self._add_group([group.qubits[i] for i in others], rest)
        self._add_group([record.handle], ket2dm(_EIGENSTATES[basis][outcome]))
        if readout_error[outcome] > 0.0 and self._rng.random() < readout_error[outcome]:
            return 1 - outcome
        return outcome

    def _free(self, record: _Qubit) -> None:
        group = record.group
        del self._qubits[record.handle]
        self._remove_group(group)
        others = [i for i, handle in enumerate(group.qubits) if handle != record.handle]
        if others:
            self._add_group([group.qubits[i] for i in others], group.state.ptrace(others))

    def _reduced_qobj(self, qubits: Sequence[int], now_s: float) -> Qobj:
        qubits = parse_qubits(qubits)
        now_s = check_time(now_s)
        records = [self._record(q) for q in qubits]
        for record in records:
            self._advance(record, now_s)
        groups: list[_Group] = []
        for record in records:
            if all(record.group is not g for g in groups):
                groups.append(record.group)
        parts, order = [], []
        for group in groups:
            kept = sorted(group.qubits.index(r.handle) for r in records if r.group is group)
            parts.append(group.state.ptrace(kept))
            order += [group.qubits[i] for i in kept]
        joint = tensor(parts) if len(parts) > 1 else parts[0]
        handles = [r.handle for r in records]
        if order != handles:
            joint = joint.permute([order.index(h) for h in handles])
        return joint


def _pair(name: str, value) -> tuple:
    try:
        first, second = value
    except (TypeError, ValueError):
        raise StoreError("bad_parameter", f"{name} must be a pair, got {value!r}") from None
    return first, second
