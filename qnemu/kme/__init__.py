"""The KME: ETSI GS QKD 014 V1.1.1 key delivery to the SAEs attached to a node.

models: the spec's JSON data formats. api: the KME's rules (`KeyDeliveryApi`: who may
fetch what, the limits, handing keys out only once the peer KME holds them), its aiohttp
routes (`create_app`), the mutual-TLS context and the listener (`serve_kme`). The KME
owns no key material: it asks the node's key store (`qnemu.keys`) and never touches the
classical channel itself — the node layer carries reservations to the peer KME.
"""

from qnemu.kme.api import (
    API_PREFIX,
    ApiError,
    KeyDeliveryApi,
    KeyRelay,
    KmeLimits,
    KmeServer,
    ReserveAtPeer,
    SaeIdentity,
    SaeResolver,
    create_app,
    kme_ssl_context,
    sae_from_certificate,
    serve_kme,
)

__all__ = [
    "API_PREFIX",
    "ApiError",
    "KeyDeliveryApi",
    "KeyRelay",
    "KmeLimits",
    "KmeServer",
    "ReserveAtPeer",
    "SaeIdentity",
    "SaeResolver",
    "create_app",
    "kme_ssl_context",
    "sae_from_certificate",
    "serve_kme",
]
