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

Cost: Bob keeps every pass's block parities and toggles those holding a flipped bit,
and takes prefix parities only inside the blocks he bisects; Alice takes one prefix
parity array per pass and answers any request with one gather. Drawing the shuffles
is then a large share of either end's time, so `reconcile` draws them once for both.
"""

import math
from collections.abc import Callable, Generator
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
    "SharedPermutations",
    "prefix_parity",
    "reconcile",
    "run_protocol",
]

# Brassard–Salvail: first-pass blocks hold about 0.73 expected errors.
FIRST_BLOCK_ERRORS = 0.73
DEFAULT_PASSES = 4
_UNKNOWN = 2  # a parity not learnt yet


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


_BYTE_ONES = 0x0101010101010101


def prefix_parity(bits: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """prefix[j] = parity of bits[:j] (n + 1 values); parity of [s, e) is prefix[e] ^ prefix[s].

    Eight bits per 64-bit word: shifted XORs give the prefix inside each word, and an
    accumulate over the words (an eighth as long) carries the parity of the words
    before. About twice as fast as `np.bitwise_xor.accumulate` over the bytes.
    """
    bits = np.asarray(bits, dtype=np.uint8)
    n = bits.size
    prefix = np.empty(n + 1, dtype=np.uint8) if out is None else out
    prefix[0] = 0
    padded = np.zeros(-(-n // 8) * 8, dtype=np.uint8)
    padded[:n] = bits
    words = padded.view("<u8")  # byte j of word i is bit 8i + j
    words ^= words << 8
    words ^= words << 16
    words ^= words << 32
    # Top byte: parity of the whole word; add that of all words before to each byte.
    before = np.bitwise_xor.accumulate(words[:-1] >> 56)
    words[1:] ^= before * _BYTE_ONES
    prefix[1:] = padded[:n]
    return prefix


class SharedPermutations:
    """Each pass's shuffle drawn once and shared by both ends run in one process.

    Drawing a permutation is the dominant cost of a pass at both ends; `reconcile`
    hands one of these to Alice and Bob so it is drawn once, not twice. The arrays are
    read-only since both ends hold them.
    """

    def __init__(self, parameters: CascadeParameters) -> None:
        self._parameters = parameters
        self._drawn: dict[int, np.ndarray] = {}

    def __call__(self, pass_index: int) -> np.ndarray:
        if pass_index not in self._drawn:
            permutation = self._parameters.permutation(pass_index)
            permutation.flags.writeable = False
            self._drawn[pass_index] = permutation
        return self._drawn[pass_index]


class CascadeAlice:
    """Alice's side of Cascade: answers parity requests about her (correct) key."""

    def __init__(
        self,
        key: np.ndarray,
        parameters: CascadeParameters,
        permutations: Callable[[int], np.ndarray] | None = None,
    ) -> None:
        self._key = np.asarray(key, dtype=np.uint8)
        if self._key.size != parameters.n_bits:
            raise ValueError("key length differs from parameters.n_bits")
        self._parameters = parameters
        self._permutations = permutations or parameters.permutation
        # Prefix parities of every pass drawn so far, pass q at [q (n + 1), (q + 1)(n + 1)),
        # so one gather answers a request that mixes passes.
        self._prefix = np.zeros(parameters.passes * (parameters.n_bits + 1), dtype=np.uint8)
        self._passes_ready = 0

    def answer(self, request: ParityRequest) -> ParityReply:
        if len(request) == 0:
            return ParityReply(np.zeros(0, dtype=np.uint8))
        n = self._parameters.n_bits
        pass_index = np.asarray(request.pass_index, dtype=np.int64)
        start = np.asarray(request.start, dtype=np.int64)
        end = np.asarray(request.end, dtype=np.int64)
        # Seen as unsigned, a negative index is huge: one maximum bounds each array.
        high = int(pass_index.view(np.uint64).max())
        if high >= self._parameters.passes:
            raise ValueError(f"no pass {pass_index[pass_index.view(np.uint64).argmax()]}")
        if start.view(np.uint64).max() > n or end.view(np.uint64).max() > n:
            raise ValueError("a requested range lies outside the key")
        if (end - start).min() < 0:
            raise ValueError("a requested range ends before it starts")
        while self._passes_ready <= high:
            q = self._passes_ready
            offset = q * (n + 1)
            prefix_parity(
                self._key[self._permutations(q)], out=self._prefix[offset : offset + n + 1]
            )
            self._passes_ready += 1
        offset = pass_index * (n + 1)
        return ParityReply(self._prefix[offset + end] ^ self._prefix[offset + start])


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


def _distinct(values: np.ndarray) -> np.ndarray:
    # np.unique costs several times more on the few hundred values of a round.
    ordered = np.sort(values)
    keep = np.ones(ordered.size, dtype=bool)
    np.not_equal(ordered[1:], ordered[:-1], out=keep[1:])
    return ordered[keep]


class _Pass:
    """Bob's view of one pass: his shuffled key, his and Alice's block parities."""

    def __init__(
        self, key: np.ndarray, permutation: np.ndarray, block_size: int, prefix: np.ndarray
    ) -> None:
        n = key.size
        self.permutation, self.block_size = permutation, block_size
        index_type = np.int32 if n < 2**31 else np.int64
        self.inverse = np.empty(n, dtype=index_type)
        self.inverse[permutation] = np.arange(n, dtype=index_type)
        blocks = -(-n // block_size)
        # Padded with zeros to whole blocks, so a (blocks, block_size) view holds block i
        # in row i and the padding changes no parity.
        self.shuffled = np.zeros(blocks * block_size, dtype=np.uint8)
        self.shuffled[:n] = key[permutation]
        self.bob_parity = np.bitwise_xor.reduce(self.rows(), axis=1).astype(np.int64)
        self.alice_parity = np.zeros(blocks, dtype=np.uint8)
        # Bob's parity of [block start, p) at prefix[p], refreshed for odd blocks only.
        self.prefix_rows = prefix[: blocks * block_size].reshape(blocks, block_size)

    def rows(self) -> np.ndarray:
        return self.shuffled.reshape(-1, self.block_size)

    def flip(self, original_positions: np.ndarray) -> None:
        positions = self.inverse[original_positions]
        self.shuffled[positions] ^= 1
        # Several flipped bits may share a block: what counts is how many, mod 2.
        flips = np.bincount(positions // self.block_size, minlength=self.bob_parity.size)
        self.bob_parity ^= flips & 1


class CascadeBob:
    """Bob's side of Cascade: corrects his noisy key by asking Alice parities."""

    def __init__(
        self,
        key: np.ndarray,
        parameters: CascadeParameters,
        permutations: Callable[[int], np.ndarray] | None = None,
    ) -> None:
        self.key = np.array(key, dtype=np.uint8)
        if self.key.size != parameters.n_bits:
            raise ValueError("key length differs from parameters.n_bits")
        self.parameters = parameters
        self._permutations = permutations or parameters.permutation
        # Per-pass arrays are laid out at [pass · stride + position], a stride that holds
        # the longest pass padded to whole blocks.
        self._stride = parameters.n_bits + max(map(parameters.block_size, range(parameters.passes)))
        # Alice's parity of the left half of every bisected range that Bob has already
        # learnt, at the range's split point (UNKNOWN: not asked). Within one pass a split
        # point names its range uniquely: blocks are fixed and halving is deterministic,
        # and a child's split point lies strictly inside the child. Asking a parity
        # twice would leak nothing new, so it is never asked twice.
        self._left_parity = np.full(parameters.passes * self._stride, _UNKNOWN, np.uint8)
        self._bob_prefix = np.zeros(parameters.passes * self._stride, np.uint8)

    def protocol(self) -> Generator[ParityRequest, ParityReply, np.ndarray]:
        """Yield requests, receive replies; return the corrected key."""
        n = self.parameters.n_bits
        passes: list[_Pass] = []
        for pass_index in range(self.parameters.passes):
            size = self.parameters.block_size(pass_index)
            region = self._bob_prefix[pass_index * self._stride : (pass_index + 1) * self._stride]
            current = _Pass(self.key, self._permutations(pass_index), size, region)
            passes.append(current)
            start = np.arange(0, n, size)
            end = np.minimum(start + size, n)
            reply = yield ParityRequest(np.full(start.size, pass_index), start, end)
            current.alice_parity[:] = reply.parity
            while True:
                odd = [np.flatnonzero(view.bob_parity != view.alice_parity) for view in passes]
                if not any(blocks.size for blocks in odd):
                    break
                found_passes, found_positions = yield from self._bisect(passes, odd)
                # Two overlapping odd blocks of different passes may find the same bit.
                flipped = _distinct(
                    np.concatenate(
                        [
                            view.permutation[found_positions[found_passes == q]]
                            for q, view in enumerate(passes)
                        ]
                    )
                )
                self.key[flipped] ^= 1
                for view in passes:
                    view.flip(flipped)
        return self.key

    def _bisect(self, passes: list[_Pass], odd: list[np.ndarray]):
        """Narrow each odd block to one differing bit; yields one request per level.

        Searches run in parallel in the order pass, then block. Bob's parities come from
        prefix parities of his odd blocks only, taken once (his key is fixed during the
        search, so each search ends on a real error). Returns (pass, position in that
        pass's order) of the bits found.
        """
        n, stride = self.parameters.n_bits, self._stride
        q_parts, s_parts, length_parts = [], [], []
        for q, (view, blocks) in enumerate(zip(passes, odd, strict=True)):
            if blocks.size == 0:
                continue
            size = view.block_size
            rows = view.rows()[blocks]
            prefix = np.bitwise_xor.accumulate(rows, axis=1)
            prefix ^= rows  # inclusive to exclusive: parity of the bits before each one
            view.prefix_rows[blocks] = prefix
            block_start = blocks * size
            q_parts.append(np.full(blocks.size, q, dtype=np.int64))
            s_parts.append(block_start)
            length_parts.append(np.minimum(n - block_start, size))
        q, s, length = (
            np.concatenate(q_parts),
            np.concatenate(s_parts),
            np.concatenate(length_parts),
        )
        base = q * stride
        bob_at_start = np.zeros(q.size, dtype=np.uint8)  # Bob's parity of [block start, s)
        found_q, found_s = [], []
        while True:
            if length.min() == 1:
                finished = length == 1
                found_q.append(q[finished])
                found_s.append(s[finished])
                going = ~finished
                q, s, length = q[going], s[going], length[going]
                base, bob_at_start = base[going], bob_at_start[going]
                if q.size == 0:
                    break
            half = length >> 1
            middle = s + half
            where = base + middle
            left_alice = self._left_parity[where]
            if left_alice.min() == _UNKNOWN:  # the usual case: nothing asked before
                left_alice = (yield ParityRequest(q, s, middle)).parity
                self._left_parity[where] = left_alice
            elif left_alice.max() == _UNKNOWN:
                unknown = np.flatnonzero(left_alice == _UNKNOWN)
                reply = yield ParityRequest(q[unknown], s[unknown], middle[unknown])
                left_alice[unknown] = reply.parity
                self._left_parity[where[unknown]] = reply.parity
            bob_at_middle = self._bob_prefix[where]
            # Bob's left half differs from Alice's: the error is there; else on the right.
            error_left = (bob_at_middle ^ bob_at_start) != left_alice
            length = np.where(error_left, half, length - half)
            s = np.where(error_left, s, middle)
            bob_at_start = np.where(error_left, bob_at_start, bob_at_middle)
        return np.concatenate(found_q), np.concatenate(found_s)


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
    permutations = SharedPermutations(parameters)
    channel = LocalChannel(CascadeAlice(alice_key, parameters, permutations))
    corrected = run_protocol(CascadeBob(bob_key, parameters, permutations), channel)
    return CascadeResult(
        corrected_key=corrected,
        leaked_bits=channel.leaked_bits,
        round_trips=channel.round_trips,
        initial_errors=int(np.count_nonzero(alice_key != bob_key)),
    )
