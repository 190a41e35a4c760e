"""A node's key store: the secret key it shares with each peer node, on disk (SQLite, WAL).

Vocabulary (ITU-T Y.3800): post-processing hands the key manager *key units* — slices of
a privacy-amplified block that both ends of a link hold identically, under identical IDs
derived from the block (`derive_unit_ids`). An application (SAE) key for the ETSI GS QKD
014 interface is cut from the front of the pool:

- the master SAE's KME takes `number` keys of `size` bits from the units it *owns*
  (`allocate`), writes them as `allocated` and tells the slave's KME which unit bits make
  each key (a `Reservation`); once the slave's KME has committed that reservation
  (`reserve_for`, state `reserved`), the master's keys become `delivered`
  (`confirm_delivery`) and only then go to the master SAE;
- the slave SAE later fetches exactly those key_IDs once (`take_reserved`).

Both KMEs allocate from the same shared pool at the same time (either end may be master),
so every unit has one owner, fixed by its ID: a unit whose UUID is even belongs to the
node whose name sorts first. A KME only ever offers its own units, and a reservation only
ever names the peer's units, so the two ends never hand out the same bits twice.

A key of any whole number of bytes is served from units of any size: the master's KME
takes its units in arrival order, from where the last key stopped, so a key may span
several units or take a slice of one. A reservation names each slice as (unit, first bit,
bits), so the slave's store finds the same bits whatever order reservations arrive in,
and refuses any slice that overlaps one already used. Every change is one SQLite
transaction, committed before the key leaves the store; used bits are zeroed in the file
at once, and a delivered key's material is erased.

Trusted-node relay (`qnemu.keys.relay`) uses the same units as one-time pads: the
sending end of a hop cuts a pad from its own units (`take_pad`, like `allocate`), the
receiving end takes the very bits it is told (`use_pad`, like `reserve_for`). The
end-to-end key lands at both ends of the path as *relayed* units (`add_relayed`) of
the far node as peer, all owned by the node that asked for the relay.
"""

import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

__all__ = [
    "DEFAULT_UNIT_BITS",
    "InsufficientKeyMaterial",
    "KeyLookupError",
    "KeySegment",
    "KeyStore",
    "KeyStoreError",
    "Reservation",
    "ReservationError",
    "ReservedKey",
    "derive_unit_ids",
    "key_store_path",
    "unit_owner",
]

DEFAULT_UNIT_BITS = 4096
BITS_PER_BYTE = 8
# Fixed namespace so both ends of a link derive the same unit IDs from the same block.
KEY_NAMESPACE = uuid.UUID("6f1c2a4e-8d0b-5c3e-9a71-2b4d6e8f0a13")

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS key_units (
    unit_id TEXT PRIMARY KEY,
    peer TEXT NOT NULL,
    owner TEXT NOT NULL,
    position INTEGER NOT NULL,
    size_bits INTEGER NOT NULL,
    used_bits INTEGER NOT NULL DEFAULT 0,
    material BLOB,
    created_at REAL NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('available', 'consumed')),
    relayed INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS key_units_offer ON key_units (peer, owner, state, position);
CREATE TABLE IF NOT EXISTS unit_uses (
    unit_id TEXT NOT NULL,
    start_bits INTEGER NOT NULL,
    end_bits INTEGER NOT NULL,
    key_id TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS unit_uses_unit ON unit_uses (unit_id, start_bits);
CREATE TABLE IF NOT EXISTS keys (
    key_id TEXT PRIMARY KEY,
    peer TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('master', 'slave')),
    master_sae_id TEXT NOT NULL,
    slave_sae_id TEXT NOT NULL,
    size_bits INTEGER NOT NULL,
    material BLOB,
    created_at REAL NOT NULL,
    delivered_at REAL,
    state TEXT NOT NULL CHECK (state IN ('allocated', 'reserved', 'delivered', 'discarded'))
);
"""


class KeyStoreError(Exception):
    """A key-store operation that cannot be done; nothing was changed."""


class InsufficientKeyMaterial(KeyStoreError):
    """The pool shared with the peer holds fewer bits than asked for."""


class ReservationError(KeyStoreError):
    """A peer's reservation names unit bits this store cannot give (unknown or used)."""


class KeyLookupError(KeyStoreError):
    """A key_ID asked for at the slave end is unknown, not addressed to the caller or used.

    `reason` is "unknown", "not_addressed" or "already_delivered".
    """

    def __init__(self, message: str, reason: str, key_id: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.key_id = key_id


@dataclass(frozen=True)
class KeySegment:
    """Bits [start_bits, start_bits + size_bits) of key unit `unit_id`."""

    unit_id: str
    start_bits: int
    size_bits: int


@dataclass(frozen=True)
class ReservedKey:
    """One application key: its key_ID and the unit slices it is made of, in order."""

    key_id: str
    size_bits: int
    segments: tuple[KeySegment, ...]


@dataclass(frozen=True)
class Reservation:
    """What the master's KME tells the slave's KME: these keys, for this SAE pair."""

    master_sae_id: str
    slave_sae_id: str
    keys: tuple[ReservedKey, ...]

    def to_dict(self) -> dict[str, Any]:
        """Plain data (str, int, lists) for the classical channel (msgpack, JSON)."""
        return {
            "master_SAE_ID": self.master_sae_id,
            "slave_SAE_ID": self.slave_sae_id,
            "keys": [
                {
                    "key_ID": key.key_id,
                    "size_bits": key.size_bits,
                    "segments": [[s.unit_id, s.start_bits, s.size_bits] for s in key.segments],
                }
                for key in self.keys
            ],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Reservation":
        try:
            keys = tuple(
                ReservedKey(
                    key_id=str(key["key_ID"]),
                    size_bits=int(key["size_bits"]),
                    segments=tuple(
                        KeySegment(str(unit), int(start), int(bits))
                        for unit, start, bits in key["segments"]
                    ),
                )
                for key in data["keys"]
            )
            return cls(str(data["master_SAE_ID"]), str(data["slave_SAE_ID"]), keys)
        except (KeyError, TypeError, ValueError) as error:
            raise ReservationError(f"malformed reservation: {error!r}") from error

    def key_ids(self) -> list[str]:
        return [key.key_id for key in self.keys]


def derive_unit_ids(block_id: str, count: int) -> list[str]:
    """Unit IDs for the `count` units of a post-processed block, the same at both ends.

    `block_id` must name the block identically at both nodes, e.g. "<link>/<block number>".
    """
    return [str(uuid.uuid5(KEY_NAMESPACE, f"{block_id}/{index}")) for index in range(count)]


def unit_owner(unit_id: str, node: str, peer: str) -> str:
    """The node whose KME may offer this unit as master (about half the units each)."""
    first, second = sorted((node, peer))
    return first if uuid.UUID(unit_id).int % 2 == 0 else second


def key_store_path(run_dir: Path, node: str) -> Path:
    """Where a node's key store lives in the run directory."""
    return Path(run_dir) / "keys" / f"{node}.sqlite"


class KeyStore:
    """A node's key store: key units shared with peers, and the application keys cut from them.

    Args:
        path: the SQLite file (created with its directory if missing).
        node: this node's name; the file remembers it and refuses another.
        synchronous: SQLite `synchronous` in WAL mode; "FULL" also survives power loss,
            "NORMAL" survives a crash of the process only.
        clock: seconds since the epoch, for `created_at` / `delivered_at`.
    """

    def __init__(
        self,
        path: Path,
        node: str,
        *,
        synchronous: str = "FULL",
        clock: Callable[[], float] = time.time,
    ) -> None:
        if synchronous not in ("FULL", "NORMAL", "EXTRA"):
            raise ValueError(f"synchronous must be FULL, NORMAL or EXTRA, not {synchronous!r}")
        self.path = Path(path)
        self.node = node
        self._clock = clock
        self._lock = threading.RLock()
        # pool_bits sums every available unit, which grows with the pool: its answers are
        # kept until the next write (status requests read it far more often than keys move).
        self._generation = 0
        self._pool_cache: dict[tuple[str, bool], tuple[int, int]] = {}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: we open every transaction ourselves (BEGIN IMMEDIATE).
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={synchronous}")
        self._db.execute("PRAGMA busy_timeout=5000")
        with self._transaction() as db:
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            columns = {row[1] for row in db.execute("PRAGMA table_info(key_units)")}
            if "relayed" not in columns:  # a store written before relayed units existed
                db.execute("ALTER TABLE key_units ADD COLUMN relayed INTEGER NOT NULL DEFAULT 0")
            db.execute("INSERT OR IGNORE INTO meta (name, value) VALUES ('node', ?)", (node,))
            owner = db.execute("SELECT value FROM meta WHERE name = 'node'").fetchone()[0]
            if owner == node:
                # Allocated but never confirmed: went to no SAE, so never offer these bits again.
                db.execute(
                    "UPDATE keys SET state = 'discarded', material = NULL WHERE state = 'allocated'"
                )
        if owner != node:
            self._db.close()
            raise KeyStoreError(f"{self.path} is the key store of {owner!r}, not {node!r}")

    # -- plumbing -------------------------------------------------------------------------

    def _transaction(self) -> "_Transaction":
        return _Transaction(self._db, self._lock, self._committed)

    def _committed(self) -> None:
        self._generation += 1  # what pool_bits cached may have changed

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> "KeyStore":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- from post-processing -------------------------------------------------------------

    def add_keys(
        self,
        peer: str,
        keys: Iterable[tuple[str, bytes]],
        *,
        owner: str | None = None,
        relayed: bool = False,
    ) -> int:
        """Store key units shared with `peer` (unit_ID, material), committed before return.

        Both ends must add the same units under the same IDs. A unit already present is
        left as it is (adding a block twice is harmless). Returns the number of new units.
        `owner` fixes the node that may offer every unit (default: by `unit_owner`);
        `relayed` marks units that came by trusted-node relay, not from a QKD link.
        """
        if peer == self.node:
            raise ValueError("a node shares no key with itself")
        if owner is not None and owner not in (self.node, peer):
            raise ValueError(f"owner {owner!r} is neither {self.node!r} nor {peer!r}")
        now = self._clock()
        added = 0
        with self._transaction() as db:
            position = db.execute("SELECT COALESCE(MAX(position), 0) FROM key_units").fetchone()[0]
            for unit_id, material in keys:
                unit_id = str(uuid.UUID(unit_id))
                if not material:
                    raise ValueError(f"key unit {unit_id} is empty")
                position += 1
                cursor = db.execute(
                    "INSERT OR IGNORE INTO key_units (unit_id, peer, owner, position,"
                    " size_bits, material, created_at, state, relayed)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, 'available', ?)",
                    (
                        unit_id,
                        peer,
                        owner or unit_owner(unit_id, self.node, peer),
                        position,
                        len(material) * BITS_PER_BYTE,
                        bytes(material),
                        now,
                        int(relayed),
                    ),
                )
                added += cursor.rowcount
        return added

    def add_block(
        self, peer: str, block_id: str, material: bytes, unit_bits: int = DEFAULT_UNIT_BITS
    ) -> list[str]:
        """Cut a post-processed block (whole bytes) into units of `unit_bits` and store them."""
        unit_ids, chunks = _cut_block(block_id, material, unit_bits)
        self.add_keys(peer, zip(unit_ids, chunks, strict=True))
        return unit_ids

    def add_relayed(
        self,
        peer: str,
        relay_id: str,
        material: bytes,
        *,
        owner: str,
        unit_bits: int = DEFAULT_UNIT_BITS,
    ) -> list[str]:
        """Store an end-to-end key relayed between this node and `peer`, as relayed units.

        Both ends of the path call it with the same relay ID and material, so they hold
        the same units; all of them belong to `owner`, the node that asked for the relay.
        """
        unit_ids, chunks = _cut_block(relay_id, material, unit_bits)
        self.add_keys(peer, zip(unit_ids, chunks, strict=True), owner=owner, relayed=True)
        return unit_ids

    # -- one-time pads for trusted-node relay ---------------------------------------------

    def take_pad(self, peer: str, bits: int, use_id: str) -> tuple[tuple[KeySegment, ...], bytes]:
        """Cut a one-time pad of `bits` from this node's own units shared with `peer`.

        The bits are consumed for good (zeroed in the file) under `use_id`; tell the peer
        the returned segments so that it consumes the same bits (`use_pad`).

        Raises:
            InsufficientKeyMaterial: fewer than `bits` offerable bits.
        """
        if bits <= 0 or bits % BITS_PER_BYTE:
            raise ValueError("a pad is a positive whole number of bytes")
        try:
            with self._transaction() as db:  # rolled back whole if the pool runs out
                segments, material = _cut_own(db, peer, self.node, bits, use_id)
        except _PoolExhausted:
            self._insufficient(peer, bits)
        return segments, material

    def use_pad(self, peer: str, segments: Sequence[KeySegment], use_id: str) -> bytes:
        """The pad `peer` cut from its own units shared with us: the same bits, consumed.

        All or nothing, as `reserve_for`: unknown, used or foreign bits raise
        ReservationError and change nothing.
        """
        if not segments:
            raise ReservationError("a pad of no bits")
        with self._transaction() as db:
            return b"".join(_use_segment(db, peer, peer, s, use_id) for s in segments)

    def pad_bits(self, peer: str) -> int:
        """Bits of the key shared with `peer` spent as one-time pads (not as application keys)."""
        with self._lock:
            row = self._db.execute(
                "SELECT COALESCE(SUM(u.end_bits - u.start_bits), 0) FROM unit_uses u"
                " JOIN key_units k ON k.unit_id = u.unit_id"
                " WHERE k.peer = ? AND u.key_id NOT IN (SELECT key_id FROM keys)",
                (peer,),
            ).fetchone()
            return int(row[0])

    def relayed_peers(self) -> list[str]:
        """Nodes this store holds (or held) relayed end-to-end key with."""
        with self._lock:
            rows = self._db.execute(
                "SELECT DISTINCT peer FROM key_units WHERE relayed = 1 ORDER BY peer"
            )
            return [row[0] for row in rows]

    # -- inspection -----------------------------------------------------------------------

    def pool_bits(self, peer: str, *, offerable: bool = False) -> int:
        """Available key bits shared with `peer`; with `offerable`, only those this KME owns."""
        query = "SELECT COALESCE(SUM(size_bits - used_bits), 0) FROM key_units"
        query += " WHERE peer = ? AND state = 'available'"
        arguments: tuple[str, ...] = (peer,)
        if offerable:
            query += " AND owner = ?"
            arguments = (peer, self.node)
        with self._lock:
            generation, bits = self._pool_cache.get((peer, offerable), (-1, 0))
            if generation != self._generation:
                bits = int(self._db.execute(query, arguments).fetchone()[0])
                self._pool_cache[(peer, offerable)] = (self._generation, bits)
            return bits

    def peers(self) -> list[str]:
        """Nodes this store has ever held key with."""
        with self._lock:
            rows = self._db.execute("SELECT DISTINCT peer FROM key_units ORDER BY peer")
            return [row[0] for row in rows]

    def key_counts(self) -> dict[tuple[str, str], int]:
        """Application keys by (role, state), for metrics."""
        with self._lock:
            rows = self._db.execute("SELECT role, state, COUNT(*) FROM keys GROUP BY role, state")
            return {(role, state): count for role, state, count in rows}

    # -- master side (enc_keys) -----------------------------------------------------------

    def allocate(
        self, peer: str, master_sae_id: str, slave_sae_id: str, number: int, size_bits: int
    ) -> tuple[Reservation, list[tuple[str, bytes]]]:
        """Cut `number` keys of `size_bits` from this KME's units shared with `peer`.

        The keys are committed as `allocated`; send the reservation to the peer's KME, then
        `confirm_delivery` (or `discard` if the peer did not commit it). Returns the
        reservation and the keys as (key_ID, material).

        Raises:
            InsufficientKeyMaterial: fewer than number × size_bits offerable bits.
        """
        if number <= 0 or size_bits <= 0 or size_bits % BITS_PER_BYTE:
            raise ValueError("number must be positive and size_bits a positive multiple of 8")
        now = self._clock()
        reserved: list[ReservedKey] = []
        delivered: list[tuple[str, bytes]] = []
        try:
            with self._transaction() as db:  # rolled back whole if the pool runs out
                for _ in range(number):
                    key_id = str(uuid.uuid4())
                    segments, material = _cut_own(db, peer, self.node, size_bits, key_id)
                    db.execute(
                        "INSERT INTO keys (key_id, peer, role, master_sae_id, slave_sae_id,"
                        " size_bits, material, created_at, state)"
                        " VALUES (?, ?, 'master', ?, ?, ?, ?, ?, 'allocated')",
                        (key_id, peer, master_sae_id, slave_sae_id, size_bits, material, now),
                    )
                    reserved.append(ReservedKey(key_id, size_bits, segments))
                    delivered.append((key_id, material))
        except _PoolExhausted:
            self._insufficient(peer, number * size_bits)
        return Reservation(master_sae_id, slave_sae_id, tuple(reserved)), delivered

    def _insufficient(self, peer: str, bits: int) -> NoReturn:
        have_bits = self.pool_bits(peer, offerable=True)
        raise InsufficientKeyMaterial(f"{have_bits} key bits offerable to {peer}, {bits} asked for")

    def confirm_delivery(self, key_ids: Sequence[str]) -> None:
        """Allocated keys are now the master SAE's: mark them delivered, erase the material."""
        self._finish_allocation(key_ids, "delivered")

    def discard(self, key_ids: Sequence[str]) -> None:
        """Allocated keys the peer may not hold: never offer these bits again."""
        self._finish_allocation(key_ids, "discarded")

    def _finish_allocation(self, key_ids: Sequence[str], state: str) -> None:
        now = self._clock()
        with self._transaction() as db:
            for key_id in key_ids:
                db.execute(
                    "UPDATE keys SET state = ?, material = NULL, delivered_at = ?"
                    " WHERE key_id = ? AND role = 'master' AND state = 'allocated'",
                    (state, now, key_id),
                )

    # -- slave side (dec_keys) ------------------------------------------------------------

    def reserve_for(self, peer: str, reservation: Reservation) -> None:
        """Commit the keys the peer's KME handed to its master SAE, for our slave SAE.

        All or nothing: if any segment names a unit that is unknown, used, not shared with
        `peer` or not owned by `peer`, nothing is stored and ReservationError is raised.
        Reservations may arrive in any order: each segment names fixed bits of a unit.
        """
        now = self._clock()
        with self._transaction() as db:
            for key in reservation.keys:
                try:
                    key_id = str(uuid.UUID(key.key_id))
                except ValueError as error:
                    raise ReservationError(f"key_ID {key.key_id!r} is not a UUID") from error
                if sum(s.size_bits for s in key.segments) != key.size_bits:
                    raise ReservationError(f"segments of key {key_id} do not add up to its size")
                parts = [_use_segment(db, peer, peer, segment, key_id) for segment in key.segments]
                try:
                    db.execute(
                        "INSERT INTO keys (key_id, peer, role, master_sae_id, slave_sae_id,"
                        " size_bits, material, created_at, state)"
                        " VALUES (?, ?, 'slave', ?, ?, ?, ?, ?, 'reserved')",
                        (
                            key_id,
                            peer,
                            reservation.master_sae_id,
                            reservation.slave_sae_id,
                            key.size_bits,
                            b"".join(parts),
                            now,
                        ),
                    )
                except sqlite3.IntegrityError as error:
                    raise ReservationError(f"key_ID {key_id} exists already") from error

    def take_reserved(
        self, master_sae_id: str, slave_sae_id: str, key_ids: Sequence[str]
    ) -> list[tuple[str, bytes]]:
        """Hand reserved keys to their slave SAE, once: all of them, or none (KeyLookupError)."""
        now = self._clock()
        taken: list[tuple[str, bytes]] = []
        with self._transaction() as db:
            for key_id in key_ids:
                row = db.execute(
                    "SELECT master_sae_id, slave_sae_id, state, material FROM keys"
                    " WHERE key_id = ? AND role = 'slave'",
                    (key_id,),
                ).fetchone()
                if row is None or row[0] != master_sae_id:
                    raise KeyLookupError(
                        f"no key {key_id} from master SAE {master_sae_id}", "unknown", key_id
                    )
                if row[1] != slave_sae_id:
                    raise KeyLookupError(
                        f"key {key_id} is not addressed to {slave_sae_id}", "not_addressed", key_id
                    )
                if row[2] != "reserved":
                    raise KeyLookupError(
                        f"key {key_id} was delivered already", "already_delivered", key_id
                    )
                taken.append((key_id, bytes(row[3])))
                db.execute(
                    "UPDATE keys SET state = 'delivered', material = NULL, delivered_at = ?"
                    " WHERE key_id = ?",
                    (now, key_id),
                )
        return taken


def _cut_block(block_id: str, material: bytes, unit_bits: int) -> tuple[list[str], list[bytes]]:
    """A block's units: its material in chunks of `unit_bits`, IDs derived from `block_id`."""
    if unit_bits <= 0 or unit_bits % BITS_PER_BYTE:
        raise ValueError("unit_bits must be a positive multiple of 8")
    step = unit_bits // BITS_PER_BYTE
    chunks = [material[start : start + step] for start in range(0, len(material), step)]
    return derive_unit_ids(block_id, len(chunks)), chunks


class _PoolExhausted(Exception):
    """The own units shared with a peer ran out in the middle of a cut."""


def _cut_own(
    db: sqlite3.Connection, peer: str, node: str, bits: int, use_id: str
) -> tuple[tuple[KeySegment, ...], bytes]:
    """The next `bits` of `node`'s own units shared with `peer`; _PoolExhausted if fewer."""
    parts: list[bytes] = []
    segments: list[KeySegment] = []
    missing_bits = bits
    while missing_bits:
        # Own units are used by this KME only, front to back: used_bits is a cursor.
        row = db.execute(
            "SELECT unit_id, size_bits, used_bits FROM key_units"
            " WHERE peer = ? AND owner = ? AND state = 'available'"
            " ORDER BY position, unit_id LIMIT 1",
            (peer, node),
        ).fetchone()
        if row is None:
            raise _PoolExhausted  # the caller's transaction rolls back everything cut
        unit_id, unit_bits, used_bits = row
        segment = KeySegment(unit_id, used_bits, min(missing_bits, unit_bits - used_bits))
        parts.append(_use_segment(db, peer, node, segment, use_id))
        segments.append(segment)
        missing_bits -= segment.size_bits
    return tuple(segments), b"".join(parts)


def _use_segment(
    db: sqlite3.Connection, peer: str, owner: str, segment: KeySegment, key_id: str
) -> bytes:
    """Take a segment's bits from its unit: once only, then zeroed in the file."""
    unit_id, start, bits = segment.unit_id, segment.start_bits, segment.size_bits
    if bits <= 0 or start < 0 or (start | bits) % BITS_PER_BYTE:
        raise ReservationError(f"segment of {bits} bits at bit {start} is not whole bytes")
    row = db.execute(
        "SELECT peer, owner, state, size_bits, used_bits, material FROM key_units"
        " WHERE unit_id = ?",
        (unit_id,),
    ).fetchone()
    if row is None:
        raise ReservationError(f"unknown key unit {unit_id}")
    unit_peer, unit_owner_name, state, size_bits, used_bits, material = row
    if unit_peer != peer or unit_owner_name != owner:
        raise ReservationError(f"key unit {unit_id} is not offerable by {owner} to this pair")
    if state != "available" or start + bits > size_bits:
        raise ReservationError(f"bits {start}..{start + bits} of key unit {unit_id} are not there")
    overlapping = db.execute(
        "SELECT COUNT(*) FROM unit_uses WHERE unit_id = ? AND start_bits < ? AND end_bits > ?",
        (unit_id, start + bits, start),
    ).fetchone()[0]
    if overlapping:
        raise ReservationError(f"bits {start}..{start + bits} of key unit {unit_id} were used")
    first, last = start // BITS_PER_BYTE, (start + bits) // BITS_PER_BYTE
    taken = bytes(material[first:last])
    used_bits += bits
    if used_bits == size_bits:
        remaining, state = None, "consumed"
    else:
        remaining = material[:first] + bytes(last - first) + material[last:]
    db.execute(
        "UPDATE key_units SET used_bits = ?, material = ?, state = ? WHERE unit_id = ?",
        (used_bits, remaining, state, unit_id),
    )
    db.execute(
        "INSERT INTO unit_uses (unit_id, start_bits, end_bits, key_id) VALUES (?, ?, ?, ?)",
        (unit_id, start, start + bits, key_id),
    )
    return taken


class _Transaction:
    """BEGIN IMMEDIATE … COMMIT under the store's lock; ROLLBACK on any exception."""

    def __init__(
        self, db: sqlite3.Connection, lock: threading.RLock, committed: Callable[[], None]
    ) -> None:
        self._db = db
        self._lock = lock
        self._on_commit = committed

    def __enter__(self) -> sqlite3.Connection:
        self._lock.acquire()
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except BaseException:
            self._lock.release()
            raise
        return self._db

    def __exit__(self, exc_type: object, exc: object, traceback: object) -> None:
        try:
            self._db.execute("COMMIT" if exc_type is None else "ROLLBACK")
            if exc_type is None:
                self._on_commit()
        finally:
            self._lock.release()
