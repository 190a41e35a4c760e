"""Key management (ITU-T Y.3800): a node's key store, shared with its peers.

The store knows key units and application keys and nothing of HTTP or sockets: post-
processing adds units (`add_block` / `add_keys`), the KME (`qnemu.kme`) cuts application
keys from them (`allocate`, `confirm_delivery`, `take_reserved`), and the node layer
carries `Reservation`s between the two ends of a link (`reserve_for` at the slave end).
`relay` is the pure part of trusted-node key relay (path, next hop, one-time pad); the
store gives the pads (`take_pad` / `use_pad`) and keeps the relayed key (`add_relayed`).
"""

from qnemu.keys.relay import (
    RelayError,
    RelayStep,
    new_relay_id,
    one_time_pad,
    qkd_route,
    relay_step,
    shortfall_bits,
)
from qnemu.keys.store import (
    DEFAULT_UNIT_BITS,
    InsufficientKeyMaterial,
    KeyLookupError,
    KeySegment,
    KeyStore,
    KeyStoreError,
    Reservation,
    ReservationError,
    ReservedKey,
    derive_unit_ids,
    key_store_path,
    unit_owner,
)

__all__ = [
    "DEFAULT_UNIT_BITS",
    "InsufficientKeyMaterial",
    "KeyLookupError",
    "KeySegment",
    "KeyStore",
    "KeyStoreError",
    "RelayError",
    "RelayStep",
    "Reservation",
    "ReservationError",
    "ReservedKey",
    "derive_unit_ids",
    "key_store_path",
    "new_relay_id",
    "one_time_pad",
    "qkd_route",
    "relay_step",
    "shortfall_bits",
    "unit_owner",
]
