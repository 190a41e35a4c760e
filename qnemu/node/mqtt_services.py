"""What the node's `key` and `fault` MQTT requests do (the dispatcher parses, these act).

- `NodeKeys`: the node's KME logic (`qnemu.kme.KeyDeliveryApi`) called as the SAE the
  request names, so the ETSI GS QKD 014 rules hold unchanged: a key goes to its master
  SAE once, is committed at the peer KME first, and is handed to its slave SAE once.
- `NodeFaults`: the faults a node can set on itself and its links, as `qnemu fault`
  sets them (`qnemu.launch.faults`): a cut reaches both nodes and the station, link
  physics and eavesdroppers go to the station, classical drop/delay stays at this node.
"""

import logging
from typing import Any

from qnemu.control.dispatch import RequestFailed
from qnemu.control.payloads import (
    FaultRequestPayload,
    KeyPayload,
    KeyRequestPayload,
    KeysResponse,
)
from qnemu.kme.api import ApiError
from qnemu.kme.models import KeyRequest
from qnemu.wire.common import ErrorReply, FaultReply, FaultRequest

__all__ = ["FAULT_TIMEOUT_S", "NodeFaults", "NodeKeys"]

log = logging.getLogger(__name__)
FAULT_TIMEOUT_S = 2.0  # wall seconds for a peer or station to confirm a fault
_HTTP_CODES = {400: "bad_request", 401: "not_authorised", 503: "unavailable"}


class NodeKeys:
    """Serves `key` requests from the node's QKD extension (its key store and KME)."""

    def __init__(self, qkd: Any, topology: Any):
        self.qkd = qkd
        self.node_saes = {name: list(config.saes) for name, config in topology.nodes.items()}

    async def keys(self, request: KeyRequestPayload) -> KeysResponse:
        api = self.qkd.api
        if api is None:
            raise RequestFailed("unavailable", "the KME has not started yet")
        sae = request.sae_id or (self.qkd.saes[0] if self.qkd.saes else None)
        fetching = request.key_ids is not None
        other = request.master_sae_id if fetching else request.slave_sae_id
        if other is None:
            other = self._first_sae(request.remote_node_id)
        try:
            if fetching:
                container = await api.dec_keys(sae, other, list(request.key_ids))
                master, slave = other, sae
            else:
                wanted = KeyRequest(number=request.number, size=request.size)
                container = await api.enc_keys(sae, other, wanted)
                master, slave = sae, other
        except ApiError as error:
            code = _HTTP_CODES.get(error.status, f"http_{error.status}")
            raise RequestFailed(code, error.body.message) from None
        return KeysResponse(
            correlation_id=request.correlation_id,
            master_sae_id=master,
            slave_sae_id=slave,
            keys=[KeyPayload(key_ID=key.key_ID, key=key.key) for key in container.keys],
        )

    def _first_sae(self, node: str | None) -> str:
        saes = self.node_saes.get(node or "")
        if saes is None:
            raise RequestFailed("unknown_node", f"{node!r} is not a node of the network")
        if not saes:
            raise RequestFailed("unavailable", f"node {node} declares no SAE: it has no KME")
        return saes[0]


class NodeFaults:
    """Applies `fault` requests at this node and the processes of its links."""

    def __init__(self, node: Any, timeout_s: float = FAULT_TIMEOUT_S):
        self.node = node
        self.timeout_s = timeout_s

    async def apply(self, request: FaultRequestPayload) -> dict[str, Any]:
        """process -> its faults now (or why it was not reached)."""
        node, fault = self.node, request.fault
        here = node.name
        if fault == "classical":
            parameters = {
                "drop_fraction": request.drop_fraction,
                "extra_delay_s": request.extra_delay_s,
            }
            node.apply_fault("classical", None, parameters)
            return {here: node.describe_faults()}
        if fault == "clear":
            # This node first, so that its messages can leave; then each link's station,
            # and each peer's cut of this node (which would otherwise outlive the clear).
            node.apply_fault("clear", None, {})
            results: dict[str, Any] = {here: node.describe_faults()}
            for peer, neighbour in node.neighbours.items():
                results[neighbour.station] = await self._ask(neighbour.station, "clear")
                results[peer] = await self._ask(peer, "restore", here)
            return results
        peer = request.remote_node_id
        station = node.neighbours[peer].station
        if fault == "cut":  # the others first: once cut here, nothing leaves for them
            results = {
                peer: await self._ask(peer, "cut", here),
                station: await self._ask(station, "cut"),
            }
            node.apply_fault("cut", peer, {})
            return {here: node.describe_faults(), **results}
        if fault == "restore":
            node.apply_fault("restore", peer, {})
            return {
                here: node.describe_faults(),
                peer: await self._ask(peer, "restore", here),
                station: await self._ask(station, "restore"),
            }
        if fault == "set_link":
            return {station: await self._ask(station, "set_link", None, request.link, True)}
        if fault == "eavesdrop":
            parameters = {"fraction": request.fraction}
            return {station: await self._ask(station, "eavesdrop", None, parameters, True)}
        raise RequestFailed("unsupported", f"unknown fault {fault!r}")

    async def _ask(
        self,
        process: str,
        kind: str,
        target: str | None = None,
        parameters: dict[str, Any] | None = None,
        required: bool = False,
    ) -> Any:
        """Have `process` apply a fault; its faults now, or a "not reached" note (or
        RequestFailed when the fault means nothing without it)."""
        body = FaultRequest(kind, target, dict(parameters or {}))
        try:
            reply = (await self.node.request(process, body, timeout_s=self.timeout_s)).body
        except TimeoutError:
            if required:
                raise RequestFailed("unreachable", f"{process} did not answer") from None
            log.warning("%s: fault %s not confirmed by %s", self.node.name, kind, process)
            return f"not reached: no answer within {self.timeout_s} s"
        if isinstance(reply, ErrorReply):
            raise RequestFailed(reply.code, f"{process}: {reply.message}")
        assert isinstance(reply, FaultReply)
        return reply.faults
