"""qnemu: an emulated metro quantum network made of real processes on real sockets.

Processes: one state broker (owns every amplitude), one heralding station per
heralded link, one process per quantum node (owns qubit handles, never amplitudes).
They talk over ZeroMQ with msgpack envelopes (`qnemu.wire`), delayed as fibre would.
"""

__version__ = "0.1.0"
