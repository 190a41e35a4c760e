"""Physics as pure functions and small data (numpy only; no I/O, no asyncio, no zmq).

bell: Bell states and Werner states. fibre: delay and loss. links: the link models
(perfect, depolarise, heralded single/double click) as `LinkPhysics`. gates, noise:
gate matrices, Kraus channels and memory decoherence.
"""

from qnemu.physics.bell import BellState, bell_density, bell_vector, werner_state
from qnemu.physics.links import MODELS, LinkPhysics, link_physics

__all__ = [
    "MODELS",
    "BellState",
    "LinkPhysics",
    "bell_density",
    "bell_vector",
    "link_physics",
    "werner_state",
]
