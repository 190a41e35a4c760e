"""The state broker: owns every amplitude of the network.

Store (`store.py`, pure): qubits as integer handles, states as independent groups of
small density matrices, lazy T1/T2 decoherence, every operation checked before it
changes anything (`checks.py`), dense kernels in `kernels.py`. `qutip_store.py` is the
reference implementation the tests compare against.
Server (`server.py`): the store behind one ZeroMQ ROUTER; nodes and stations send
batches of operations and hold only handles.
"""

from qnemu.broker.store import StateStore, StoreError

__all__ = ["StateStore", "StoreError"]
