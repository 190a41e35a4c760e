"""A quantum network node: one asyncio process per node.

Owns: a quantum memory of qubit *handles* (`memory.py`), the link layer towards each
neighbour (`requests.py`: credits, halves, pair assembly; `expiry.py`: who holds which
kept half, so a lost one is told as EXPIRE; `service.py`: the messages),
the network layer (`routing.py`: paths and purification rounds; `admission.py`:
refusals and memory promises; `network.py`: swap as soon as possible; `purify.py`:
DEJMPS/BBPSSW rounds on a link; `chains.py`: the Pauli frame of swapped pairs), and
control for clients (entangle, measure, free). Never touches amplitudes: every quantum
operation is a request to the state broker.

Extensions add the rest: applications (`apps.py`), QKD and the KME (`qkd.py`), and the
northbound MQTT control (`mqtt.py`, with `mqtt_services.py` for its key, fault and app
requests and `linkwatch.py` for what the node can tell about its links).
"""

from qnemu.node.memory import HeldQubit, QuantumMemory
from qnemu.node.service import Neighbour, NodeService

__all__ = ["HeldQubit", "Neighbour", "NodeService", "QuantumMemory"]
