"""Applications on emulated nodes, in the netqasm vocabulary.

Apps: run as asyncio tasks in the `qnemu app` process, one per node, and hold only qubit
handles. Nodes (`qnemu.node.apps`): hold the app's qubits in their memory, ask the broker
for every gate and measurement (with the node's noise), carry classical messages and
hand over entangled pairs with the Pauli frame applied. The broker: every amplitude.
"""

from qnemu.app.api import (
    AppError,
    EprMeasureResult,
    EPRSocket,
    NodeHandle,
    PairInfo,
    Qubit,
    Socket,
)
from qnemu.app.runner import AppFailed, AppLoadError, load_app, run_apps

__all__ = [
    "AppError",
    "AppFailed",
    "AppLoadError",
    "EPRSocket",
    "EprMeasureResult",
    "NodeHandle",
    "PairInfo",
    "Qubit",
    "Socket",
    "load_app",
    "run_apps",
]
