"""The state broker process: a StateStore behind one ZeroMQ ROUTER socket.

Each `ops_request` is executed in order, atomically per operation, at the emulated
time the request was sent (`sent_at`), with the sender as the owner of every qubit it
touches. Operations are timed and counted per batch, so metrics cost little per op.
"""

import logging
import time
from collections import Counter as Tally
from typing import Any

import numpy as np
from prometheus_client import Counter, Gauge, Histogram

from qnemu.broker.store import StateStore, StoreError
from qnemu.runtime import EmulatedClock, Origin, Service, ServiceAddress
from qnemu.wire import Envelope
from qnemu.wire.broker import (
    AllocOp,
    BellMeasureOp,
    CreatePairOp,
    FidelityOp,
    FreeOp,
    GateOp,
    MeasureOp,
    NoiseOp,
    OpError,
    OpsReply,
    OpsRequest,
    ReducedStateOp,
)

__all__ = ["BrokerService"]

log = logging.getLogger(__name__)

REQUEST_SECONDS_BUCKETS = (1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 0.01, 0.03, 0.1, 0.3, 1.0)
OP_SECONDS_BUCKETS = (1e-6, 3e-6, 1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 1e-2)
# Timing an op costs about as much as a small op: time one op in 16.
LATENCY_SAMPLE_EVERY = 16
# Emulated seconds a station may date a pair ahead of the request creating it, and for
# how long after that date it may still discard the pair (it was never heralded).
CREATE_AHEAD_MAX_S = 1.0
DISCARD_WINDOW_S = 5.0


def _matrix(real: list[float], imag: list[float], size: int) -> np.ndarray:
    if len(real) != size * size or len(imag) != size * size:
        raise StoreError("bad_state", f"expected {size * size} real and imaginary entries")
    return (np.asarray(real, dtype=float) + 1j * np.asarray(imag, dtype=float)).reshape(size, size)


class BrokerService(Service):
    """The state broker: owns every amplitude; nodes and stations hold handles."""

    role = "broker"

    def __init__(
        self,
        name: str,
        address: ServiceAddress,
        clock: EmulatedClock,
        *,
        store: StateStore | None = None,
        pair_creators: set[str] | None = None,
        **kwargs: Any,
    ):
        super().__init__(name, address, clock, **kwargs)
        self.store = store or StateStore()
        # Who may create a pair for someone else: the heralding stations.
        self.pair_creators = set(pair_creators or ())
        # Qubits a station created ahead of their success and may still discard: a herald
        # it never sent names them to nobody else. qubit -> (station, until emulated s).
        self._discardable: dict[int, tuple[str, float]] = {}
        self.handlers[OpsRequest.msg_type] = self._on_ops
        registry = self.registry
        self.operations = Counter(
            "qnemu_broker_operations",
            "Operations executed by the state broker, by operation type.",
            ["op"],
            registry=registry,
        )
        self.operation_errors = Counter(
            "qnemu_broker_operation_errors",
            "Operations refused (unknown qubit, not owner, bad parameter, ...), by code.",
            ["code"],
            registry=registry,
        )
        self.request_seconds = Histogram(
            "qnemu_broker_request_seconds",
            "Wall seconds to execute one ops_request (a batch of operations).",
            buckets=REQUEST_SECONDS_BUCKETS,
            registry=registry,
        )
        op_seconds = Histogram(
            "qnemu_broker_operation_seconds",
            "Wall seconds to execute one operation, by type (one operation in 16 is timed).",
            ["op"],
            buckets=OP_SECONDS_BUCKETS,
            registry=registry,
        )
        self._op_seconds = {
            name: op_seconds.labels(op=name)
            for name in (
                "alloc",
                "free",
                "gate",
                "measure",
                "bell_measure",
                "create_pair",
                "noise",
                "reduced_state",
                "fidelity",
            )
        }
        self._op_counters = {name: self.operations.labels(op=name) for name in self._op_seconds}
        self._op_count = 0
        groups = Gauge(
            "qnemu_broker_state_groups", "Independent state groups held.", registry=registry
        )
        groups.set_function(lambda: self.store.group_count)
        qubits = Gauge("qnemu_broker_qubits", "Live qubits held.", registry=registry)
        qubits.set_function(lambda: self.store.qubit_count)
        self._executors = {
            AllocOp: self._alloc,
            FreeOp: self._free,
            GateOp: self._gate,
            MeasureOp: self._measure,
            BellMeasureOp: self._bell_measure,
            CreatePairOp: self._create_pair,
            NoiseOp: self._noise,
            ReducedStateOp: self._reduced_state,
            FidelityOp: self._fidelity,
        }

    async def start(self) -> None:
        await super().start()
        self.ready = True

    def _on_ops(self, envelope: Envelope, origin: Origin) -> None:
        started = time.perf_counter()
        reply = self.execute(envelope.body, envelope.header.sender, envelope.header.sent_at)
        self.reply(origin, reply, parent_id=envelope.header.msg_id)
        self.request_seconds.observe(time.perf_counter() - started)

    def execute(self, request: OpsRequest, owner: str, now_s: float) -> OpsReply:
        """Run a batch in order; stop at the first refused operation."""
        results: list[Any] = []
        error = None
        executors = self._executors
        for index, op in enumerate(request.ops):
            self._op_count += 1
            try:
                if self._op_count % LATENCY_SAMPLE_EVERY == 0:
                    started = time.perf_counter()
                    results.append(executors[type(op)](op, owner, now_s))
                    self._op_seconds[op.op].observe(time.perf_counter() - started)
                else:
                    results.append(executors[type(op)](op, owner, now_s))
            except StoreError as refused:
                error = OpError(index, refused.code, refused.message)
            except ValueError as refused:
                error = OpError(index, "bad_parameter", str(refused))
            if error is not None:
                self.operation_errors.labels(code=error.code).inc()
                break
        self._count_ops(request.ops[: len(results)])
        return OpsReply(results, error)

    def _count_ops(self, ops: list) -> None:
        if len(ops) == 1:
            self._op_counters[ops[0].op].inc()
            return
        for op_name, count in Tally(op.op for op in ops).items():
            self._op_counters[op_name].inc(count)

    def stats(self) -> dict[str, Any]:
        return {
            **super().stats(),
            "qubits": self.store.qubit_count,
            "groups": self.store.group_count,
        }

    # ---- one executor per operation --------------------------------------------------

    def _alloc(self, op: AllocOp, owner: str, now_s: float) -> int:
        return self.store.alloc(owner, now_s, t1_s=op.t1_s, t2_s=op.t2_s)

    def _free(self, op: FreeOp, owner: str, now_s: float) -> None:
        creator, until_s = self._discardable.get(op.qubit, ("", 0.0))
        if owner == creator and now_s <= until_s:  # a station's pair it never heralded
            del self._discardable[op.qubit]
            owner = self.store.owner_of(op.qubit)
        self.store.free(op.qubit, owner, now_s)

    def _gate(self, op: GateOp, owner: str, now_s: float) -> None:
        self.store.gate(
            op.gate, op.qubits, owner, now_s, angle=op.angle, depolar_prob=op.depolar_prob
        )

    def _measure(self, op: MeasureOp, owner: str, now_s: float) -> int:
        return self.store.measure(
            op.qubit, op.basis, owner, now_s, readout_error=op.readout_error, free=op.free
        )

    def _bell_measure(self, op: BellMeasureOp, owner: str, now_s: float) -> int:
        qubit_a, qubit_b = op.qubits
        outcome = self.store.bell_measure(
            qubit_a,
            qubit_b,
            owner,
            now_s,
            depolar_prob=op.depolar_prob,
            readout_error=op.readout_error,
            free=op.free,
        )
        return int(outcome)

    def _create_pair(self, op: CreatePairOp, owner: str, now_s: float) -> list[int]:
        if owner not in self.pair_creators and owner not in op.owners:
            raise StoreError(
                "not_owner",
                f"{owner!r} may not create a pair for {op.owners[0]!r}, {op.owners[1]!r}",
            )
        if len(op.state) != 16 * 16:
            raise StoreError(
                "bad_state", f"state must be 256 bytes (16 complex128), got {len(op.state)}"
            )
        state = np.frombuffer(op.state, dtype="<c16").reshape(4, 4)
        # A heralded pair decoheres from its success time. A station may create it a little
        # ahead of that time, so that its herald leaves on time (no broker round trip
        # after the success); nobody else may date a pair in the future.
        latest_s = now_s + (CREATE_AHEAD_MAX_S if owner in self.pair_creators else 0.0)
        created_at = now_s if op.created_at is None else min(op.created_at, latest_s)
        qubits = self.store.create_pair(op.owners, state, created_at, t1_s=op.t1_s, t2_s=op.t2_s)
        if owner in self.pair_creators and owner not in op.owners:
            self._forget_expired_discardable(now_s)
            for qubit in qubits:
                self._discardable[qubit] = (owner, created_at + DISCARD_WINDOW_S)
        return list(qubits)

    def _forget_expired_discardable(self, now_s: float) -> None:
        """Oldest first (insertion order): stop at the first still discardable."""
        while self._discardable:
            qubit, (_, until_s) = next(iter(self._discardable.items()))
            if until_s >= now_s:
                return
            del self._discardable[qubit]

    def _noise(self, op: NoiseOp, owner: str, now_s: float) -> None:
        self.store.apply_noise(op.channel, op.qubits, op.parameter, owner, now_s)

    def _reduced_state(self, op: ReducedStateOp, owner: str, now_s: float) -> list[list[float]]:
        rho = self.store.reduced_state(op.qubits, now_s)
        return [rho.real.ravel().tolist(), rho.imag.ravel().tolist()]

    def _fidelity(self, op: FidelityOp, owner: str, now_s: float) -> float:
        size = 2 ** len(op.qubits)
        if len(op.target_real) == size:  # a state vector
            target = np.asarray(op.target_real) + 1j * np.asarray(op.target_imag)
        else:
            target = _matrix(op.target_real, op.target_imag, size)
        fidelity = float(self.store.fidelity(op.qubits, target, now_s))
        return min(1.0, max(0.0, fidelity))  # rounding can leave it 1e-16 outside
