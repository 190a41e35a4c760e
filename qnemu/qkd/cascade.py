"""Cascade error correction (Brassard–Salvail, EUROCRYPT '93) with an explicit parity exchange.

Division of labour: Bob (`CascadeBob`) holds the noisy key and drives the protocol,
asking for parities of ranges of Alice's key; Alice (`CascadeAlice`) only answers
(`ParityRequest` → `ParityReply`); a channel carries the messages and counts every
parity revealed, which is the information leaked to Eve. Bob's side is a generator
that yields requests and receives replies, so a process adapter can drive it over
a real (fibre-delayed) connection; `LocalChannel` + `reconcile` run both ends here.

Passes: pass i shuffles the key with a permutation drawn from the shared seed and
splits it into blocks of k_i bits, k_1 = ⌈0.73/QBER⌉, k_(i+1) = 2 k_i (Brassard–
Salvail's choice; see also Martinez-Mateo et al., QIC 15, 453 (2015)). Every block
whose parities differ is bisected to one error, which is flipped; a flip changes the
parity of the block holding that bit in every other pass, so those are bisected too
("cascade") until all blocks of all passes so far agree. Bisections of all odd blocks
run in parallel, one request per bisection level, so round trips stay few.
"""

import math
from collections.abc import Generator
from dataclasses import dataclass

import numpy as np

from qnemu.qkd.entropy import binary_entropy

__all__ = [
    "CascadeAlice",
    "CascadeBob",
    "CascadeParameters",
    "CascadeResult",
    "LocalChannel",
    "ParityReply",
    "ParityRequest",
    "reconcile",
    "run_protocol",
]

# Brassard–Salvail: first-pass blocks hold about 0.73 expected errors.
FIRST_BLOCK_ERRORS = 0.73
DEFAULT_PASSES = 4


@dataclass(frozen=True)
class CascadeParameters:
    """What both sides agree on before Cascade: key length, QBER estimate, seed, passes."""

    n_bits: int
    qber: float
    seed: int
    passes: int = DEFAULT_PASSES

    def __post_init__(self) -> None:
        if self.n_bits <= 0 or self.passes <= 0:
            raise ValueError("n_bits and passes must be positive")
        if not 0.0 <= self.qber < 0.5:
            raise ValueError(f"qber must be in [0, 0.5), got {self.qber}")

    def block_size(self, pass_index: int) -> int:
        first = self.n_bits if self.qber == 0.0 else math.ceil(FIRST_BLOCK_ERRORS / self.qber)
        return int(min(self.n_bits, max(2, first) * 2**pass_index))

    def permutation(self, pass_index: int) -> np.ndarray:
        """Pass i's shuffle: position j of the shuffled key holds original bit perm[j]."""
        return np.random.default_rng([self.seed, pass_index]).permutation(self.n_bits)


@dataclass(frozen=True)
class ParityRequest:
    """Bob asks the parities of Alice's bits [start, end) in pass `pass_index`'s order."""

    pass_index: np.ndarray
    start: np.ndarray
    end: np.ndarray

    def __len__(self) -> int:
        return int(self.start.size)


@dataclass(frozen=True)
class ParityReply:
    """Alice's parities, one per requested range, in request order (uint8)."""

    parity: np.ndarray


def _prefix_parity(bits: np.ndarray) -> np.ndarray:
    # prefix[j] = parity of bits[:j]; parity of [s, e) is prefix[e] ^ prefix[s].
    prefix = np.zeros(bits.size + 1, dtype=np.uint8)
    np.bitwise_xor.accumulate(bits, out=prefix[1:])
    return prefix


class CascadeAlice:
    """Alice's side of Cascade: answers parity requests about her (correct) key."""

    def __init__(self, key: np.ndarray, parameters: CascadeParameters) -> None:
        self._key = np.asarray(key, dtype=np.uint8)
        if self._key.size != parameters.n_bits:
            raise ValueError("key length differs from parameters.n_bits")
        self._parameters = parameters
        self._prefix: dict[int, np.ndarray] = {}

    def answer(self, request: ParityRequest) -> ParityReply:
        parity = np.zeros(len(request), dtype=np.uint8)
        for pass_index in np.unique(request.pass_index):
            if not 0 <= pass_index < self._parameters.passes:
                raise ValueError(f"no pass {pass_index}")
            prefix = self._prefix_for(int(pass_index))
            mine = request.pass_index == pass_index
            parity[mine] = prefix[request.end[mine]] ^ prefix[request.start[mine]]
        return ParityReply(parity)

    def _prefix_for(self, pass_index: int) -> np.ndarray:
        if pass_index not in self._prefix:
            shuffled = self._key[self._parameters.permutation(pass_index)]
            self._prefix[pass_index] = _prefix_parity(shuffled)
        return self._prefix[pass_index]


@dataclass
class LocalChannel:
    """An in-memory classical channel to Alice that counts leaked parities and round trips."""

    alice: CascadeAlice
    leaked_bits: int = 0
    round_trips: int = 0

    def ask(self, request: ParityRequest) -> ParityReply:
        self.leaked_bits += len(request)
        self.round_trips += 1
        return self.alice.answer(request)


class CascadeBob:
    """Bob's side of Cascade: corrects his noisy key by asking Alice parities."""

    def __init__(self, key: np.ndarray, parameters: CascadeParameters) -> None:
        self.key = np.array(key, dtype=np.uint8)
        if self.key.size != parameters.n_bits:
            raise ValueError("key length differs from parameters.n_bits")
        self.parameters = parameters
        # Alice's parity of the left half of every bisected range that Bob has already
        # learnt, indexed [pass, split point] (−1: unknown). Within one pass a split
        # point names its range uniquely: blocks are fixed and halving is deterministic,
        # and a child's split point lies strictly inside the child. Asking a parity
        # twice would leak nothing new, so it is never asked twice.
        self._left_parity = np.full((parameters.passes, parameters.n_bits + 1), -1, np.int8)

    def protocol(self) -> Generator[ParityRequest, ParityReply, np.ndarray]:
        """Yield requests, receive replies; return the corrected key."""
        n, passes = self.parameters.n_bits, self.parameters.passes
        dtype = np.int32 if n < 2**31 else np.int64
        permutations = np.empty((passes, n), dtype=dtype)
        inverses = np.empty((passes, n), dtype=dtype)
        # Bob's key in each pass's order, kept up to date as bits are flipped.
        shuffled = np.empty((passes, n), dtype=np.uint8)
        blocks: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # start, end, Alice parity
        for pass_index in range(passes):
            permutation = self.parameters.permutation(pass_index)
            permutations[pass_index] = permutation
            inverses[pass_index, permutation] = np.arange(n, dtype=dtype)
            shuffled[pass_index] = self.key[permutation]
            size = self.parameters.block_size(pass_index)
            start = np.arange(0, n, size)
            end = np.minimum(start + size, n)
            reply = yield ParityRequest(np.full(start.size, pass_index), start, end)
            blocks.append((start, end, reply.parity.astype(np.uint8)))
            done = pass_index + 1
            while True:
                prefixes = np.zeros((done, n + 1), dtype=np.uint8)
                np.bitwise_xor.accumulate(shuffled[:done], axis=1, out=prefixes[:, 1:])
                odd = [
                    (np.full(int(bad.sum()), q), s[bad], e[bad], a[bad])
                    for q, (s, e, a) in enumerate(blocks)
                    for bad in [(prefixes[q, e] ^ prefixes[q, s]) != a]
                ]
                odd_passes, starts, ends, alice = (
                    np.concatenate(part) for part in zip(*odd, strict=True)
                )
                if starts.size == 0:
                    break
                found_passes, found_positions = yield from self._bisect(
                    odd_passes, starts, ends, alice, prefixes
                )
                # Two overlapping odd blocks of different passes may find the same bit.
                flipped = np.unique(permutations[found_passes, found_positions])
                self.key[flipped] ^= 1
                shuffled[np.arange(done)[:, None], inverses[:done, flipped]] ^= 1
        return self.key

    def _bisect(self, passes, starts, ends, alice, prefixes):
        """Narrow each odd range to one differing bit; yields one request per level.

        `alice` is Alice's parity of each range; Bob's parities come from `prefixes`
        (his key is fixed during the search, so each search ends on a real error).
        Returns (pass, position in that pass's order) of the bits found.
        """
        passes, starts, ends = passes.astype(np.int64), starts.copy(), ends.copy()
        alice = alice.astype(np.uint8)
        while True:
            active = np.flatnonzero(ends - starts > 1)
            if active.size == 0:
                break
            q, s, e = passes[active], starts[active], ends[active]
            middle = (s + e) // 2
            left_alice = self._left_parity[q, middle]
            unknown = np.flatnonzero(left_alice < 0)
            if unknown.size:
                reply = yield ParityRequest(q[unknown], s[unknown], middle[unknown])
                left_alice[unknown] = reply.parity
                self._left_parity[q[unknown], middle[unknown]] = reply.parity
            left_alice = left_alice.astype(np.uint8)
            error_left = (prefixes[q, middle] ^ prefixes[q, s]) != left_alice
            ends[active] = np.where(error_left, middle, e)
            starts[active] = np.where(error_left, s, middle)
            alice[active] = np.where(error_left, left_alice, alice[active] ^ left_alice)
        return passes, starts


@dataclass(frozen=True)
class CascadeResult:
    """Bob's corrected key and what the exchange cost."""

    corrected_key: np.ndarray
    leaked_bits: int
    round_trips: int
    initial_errors: int

    @property
    def efficiency(self) -> float:
        """f = leaked bits / (n·H2(QBER)) with the block's true QBER (1 = Shannon limit)."""
        n = self.corrected_key.size
        entropy_bits = n * binary_entropy(self.initial_errors / n)
        return self.leaked_bits / entropy_bits if entropy_bits > 0 else math.inf


def run_protocol(bob: CascadeBob, channel: LocalChannel) -> np.ndarray:
    """Drive Bob's generator against a channel until it returns the corrected key."""
    exchange = bob.protocol()
    try:
        request = next(exchange)
        while True:
            request = exchange.send(channel.ask(request))
    except StopIteration as finished:
        return finished.value


def reconcile(
    alice_key: np.ndarray,
    bob_key: np.ndarray,
    qber: float,
    seed: int,
    passes: int = DEFAULT_PASSES,
) -> CascadeResult:
    """Run both ends of Cascade in this process (tests, benchmarks, single-process links)."""
    alice_key, bob_key = np.asarray(alice_key, np.uint8), np.asarray(bob_key, np.uint8)
    parameters = CascadeParameters(n_bits=alice_key.size, qber=qber, seed=seed, passes=passes)
    channel = LocalChannel(CascadeAlice(alice_key, parameters))
    corrected = run_protocol(CascadeBob(bob_key, parameters), channel)
    return CascadeResult(
        corrected_key=corrected,
        leaked_bits=channel.leaked_bits,
        round_trips=channel.round_trips,
        initial_errors=int(np.count_nonzero(alice_key != bob_key)),
    )
