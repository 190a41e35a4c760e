"""Entanglement purification maps for Bell-diagonal pairs (pure functions).

Two pairs in, one out, on success. Coefficients are in the order of Deutsch et al.
(PRL 77, 2818 (1996)): (A, B, C, D) = weights of (Φ+, Ψ−, Ψ+, Φ−).

DEJMPS: Alice applies Rx(π/2), Bob Rx(−π/2) to both their qubits, each does CNOT from
the kept pair to the sacrificed one and measures the sacrificed qubit in Z; success
when the outcomes agree, with probability N = (A + B)² + (C + D)², and
A' = (A² + B²)/N, B' = 2CD/N, C' = (C² + D²)/N, D' = 2AB/N.

BBPSSW (Bennett et al., PRL 76, 722 (1996)) on Werner pairs of fidelity F: each pair is
twirled (a random bilateral rotation U ⊗ U*, from a 12-element group, that both ends
then forget) into a Werner state of the same fidelity, both ends do CNOT kept →
sacrificed and measure the sacrificed qubit in Z; success when the outcomes agree. With
e = (1 − F)/3: F' = (F² + e²) / (F² + 2Fe + 5e²), success probability F² + 2Fe + 5e².
The kept pair is twirled again, so every round starts (and the last one ends) on Werner
pairs. On Werner input the first round of both protocols gives the same F'; DEJMPS then
keeps the non-Werner weights it made and does better from the second round on.

After purification, link pairs are swapped: swapping Bell-diagonal pairs composes their
Pauli errors, so the weights of the end-to-end pair are the XOR-convolution of the link
weights (`swapped_coefficients`); for Werner links its fidelity is
1/4 + 3/4 · ∏ (4F − 1)/3.
"""

import math

import numpy as np

from qnemu.physics.bell import BellState, bell_density

__all__ = [
    "DEUTSCH_ORDER",
    "PROTOCOLS",
    "TWIRLS",
    "bbpssw",
    "bell_diagonal_coefficients",
    "dejmps",
    "dejmps_rounds",
    "purified",
    "swapped_coefficients",
    "twirl_gates",
    "werner_coefficients",
]

PROTOCOLS = ("dejmps", "bbpssw")
TWIRLS = 12  # bilateral rotations in the twirl: 4 Paulis × 3 cyclic permutations of X, Y, Z

DEUTSCH_ORDER = (BellState.PHI_PLUS, BellState.PSI_MINUS, BellState.PSI_PLUS, BellState.PHI_MINUS)


def bell_diagonal_coefficients(rho: np.ndarray) -> tuple[float, float, float, float]:
    """(A, B, C, D): the weights of (Φ+, Ψ−, Ψ+, Φ−) in a two-qubit state."""
    rho = np.asarray(rho)
    if rho.shape != (4, 4):
        raise ValueError(f"expected a 4x4 density matrix, got shape {rho.shape}")
    return tuple(float(np.real(np.trace(rho @ bell_density(s)))) for s in DEUTSCH_ORDER)


def _check_coefficients(coefficients) -> tuple[float, float, float, float]:
    values = tuple(float(c) for c in coefficients)
    if len(values) != 4 or min(values) < -1e-12 or abs(sum(values) - 1.0) > 1e-9:
        raise ValueError(f"Bell-diagonal coefficients must be 4 weights summing to 1, got {values}")
    return values


def dejmps(coefficients) -> tuple[tuple[float, float, float, float], float]:
    """One DEJMPS round on two identical pairs: (new coefficients, success probability)."""
    a, b, c, d = _check_coefficients(coefficients)
    success = (a + b) ** 2 + (c + d) ** 2
    new = ((a * a + b * b) / success, 2 * c * d / success, (c * c + d * d) / success,
           2 * a * b / success)  # fmt: skip
    return new, success


def dejmps_rounds(coefficients, target_fidelity: float, max_rounds: int = 10) -> int | None:
    """Rounds of DEJMPS (on pairs of equal rounds) needed to reach the target Φ+ fidelity,
    or None if max_rounds do not get there (noise beyond what purification fixes)."""
    current = _check_coefficients(coefficients)
    for rounds in range(max_rounds + 1):
        if current[0] >= target_fidelity:
            return rounds
        current, _ = dejmps(current)
    return None


def bbpssw(fidelity: float) -> tuple[float, float]:
    """One BBPSSW round on two Werner pairs of this fidelity: (new fidelity, success)."""
    if not 0.0 <= fidelity <= 1.0:
        raise ValueError(f"fidelity must be in [0, 1], got {fidelity}")
    g = (1.0 - fidelity) / 3.0
    success = fidelity**2 + 2 * fidelity * g + 5 * g**2
    return (fidelity**2 + g**2) / success, success


def werner_coefficients(fidelity: float) -> tuple[float, float, float, float]:
    """(A, B, C, D) of the Werner state of this fidelity to Φ+."""
    e = (1.0 - fidelity) / 3.0
    return (fidelity, e, e, e)


def purified(coefficients, protocol: str, rounds: int) -> tuple[tuple[float, ...], list[float]]:
    """Weights after `rounds` rounds of `protocol`, each on two pairs that went through
    the same rounds, and the success probability of each round.

    BBPSSW depends on the fidelity only (it twirls), and its output is Werner."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
    current = _check_coefficients(coefficients)
    successes = []
    for _ in range(rounds):
        if protocol == "dejmps":
            current, success = dejmps(current)
        else:
            fidelity, success = bbpssw(current[0])
            current = werner_coefficients(fidelity)
        successes.append(success)
    if protocol == "bbpssw":
        current = werner_coefficients(current[0])  # the twirl, also with no round at all
    return current, successes


# The Bell state (value x<<1 | z) of each Deutsch-order weight: Φ+, Ψ−, Ψ+, Φ−.
_VALUE_OF = [int(state) for state in DEUTSCH_ORDER]


def swapped_coefficients(links) -> tuple[float, float, float, float]:
    """Weights of the end-to-end pair made by swapping Bell-diagonal link pairs with
    perfect Bell-state measurements (frame tracked): their Pauli errors add up (XOR)."""
    by_value = [1.0, 0.0, 0.0, 0.0]  # no link yet: Φ+ exactly
    for coefficients in links:
        weights = _check_coefficients(coefficients)
        link = [0.0] * 4
        for weight, value in zip(weights, _VALUE_OF, strict=True):
            link[value] = weight
        by_value = [sum(by_value[a] * link[a ^ b] for a in range(4)) for b in range(4)]
    return tuple(by_value[value] for value in _VALUE_OF)


def twirl_gates(index: int, side: int) -> list[tuple[str, float | None]]:
    """The gates (name, rotation angle) one end applies for twirl element `index`.

    The left end (side 0) applies U, the right end (side 1) U*: U ⊗ U* keeps Φ+ and maps
    a Pauli error σ on the pair to (U σ U†)*. U = C^c P with P a Pauli (index % 4) and
    C = S·H, which permutes the errors X → Z → Y → X (c = index // 4 times). Averaged
    over the 12 elements, any pair becomes the Werner state of its Φ+ weight."""
    if not 0 <= index < TWIRLS or side not in (0, 1):
        raise ValueError(f"twirl index must be in [0, {TWIRLS}) and side 0 or 1")
    gates: list[tuple[str, float | None]] = []
    pauli = (None, "X", "Y", "Z")[index % 4]
    if pauli is not None:
        gates.append((pauli, None))  # Y* = −Y: the same gate up to a global phase
    quarter = math.pi / 2 if side == 0 else -math.pi / 2  # S = RZ(π/2) up to phase; S* = S†
    gates += [("H", None), ("RZ", quarter)] * (index // 4)
    return gates
