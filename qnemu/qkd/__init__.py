"""QKD physics and classical post-processing as pure functions over numpy arrays (no I/O).

decoy_bb84: the prepare-and-measure link (closed-form rates, decoy estimators, a
vectorised block sampler); decoy_finite: finite-size bounds on one block's decoy
statistics and the key length they certify. bbm92: QBER and key rate of
entanglement-based QKD.
sifting: basis sifting and QBER estimation. cascade: error correction, with Bob
asking and Alice answering through a channel that counts the leaked parities.
privacy: verification tags and privacy amplification (Toeplitz hashing via FFT).
auth: authenticated classical messages. entropy: H2 and sampling bounds.
Process adapters carry the messages; nothing here touches a socket or a clock.
"""

from qnemu.qkd.auth import AuthenticationError, MessageAuthenticator, derive_key
from qnemu.qkd.bbm92 import bbm92_key_rate, bbm92_qber, sample_pair_outcomes
from qnemu.qkd.cascade import CascadeAlice, CascadeBob, CascadeParameters, reconcile
from qnemu.qkd.decoy_bb84 import (
    DecoyBB84Params,
    asymptotic_key_rate,
    block_statistics,
    sample_block,
)
from qnemu.qkd.entropy import binary_entropy
from qnemu.qkd.privacy import privacy_amplification, secret_key_length, verification_tag
from qnemu.qkd.sifting import estimate_qber, sample_and_estimate, sift_indices

__all__ = [
    "AuthenticationError",
    "CascadeAlice",
    "CascadeBob",
    "CascadeParameters",
    "DecoyBB84Params",
    "MessageAuthenticator",
    "asymptotic_key_rate",
    "bbm92_key_rate",
    "bbm92_qber",
    "binary_entropy",
    "block_statistics",
    "derive_key",
    "estimate_qber",
    "privacy_amplification",
    "reconcile",
    "sample_and_estimate",
    "sample_block",
    "sample_pair_outcomes",
    "secret_key_length",
    "sift_indices",
    "verification_tag",
]
