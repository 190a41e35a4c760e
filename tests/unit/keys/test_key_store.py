"""The key store: pairing of the two ends, never twice, never lost, atomic under kill -9."""

import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from qnemu.keys import (
    InsufficientKeyMaterial,
    KeyLookupError,
    KeyStore,
    KeyStoreError,
    Reservation,
    ReservationError,
    derive_unit_ids,
    unit_owner,
)

SAE_A, SAE_B = "alice_app", "bob_app"


def shared_block(size_bytes: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size_bytes)


@pytest.fixture
def pair(tmp_path: Path):
    """Node A's and node B's stores, both holding the same two post-processed blocks."""
    a = KeyStore(tmp_path / "a.sqlite", "A")
    b = KeyStore(tmp_path / "b.sqlite", "B")
    for block in range(2):
        material = shared_block(1024, block)  # 8192 bits
        assert a.add_block("B", f"A-B/{block}", material, unit_bits=512) == b.add_block(
            "A", f"A-B/{block}", material, unit_bits=512
        )
    yield a, b
    a.close()
    b.close()


def conserved(path: Path) -> tuple[int, int]:
    """(bits ever added, bits available + bits cut into keys): equal in a consistent store."""
    db = sqlite3.connect(path)
    try:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        added, available = db.execute(
            "SELECT COALESCE(SUM(size_bits), 0),"
            " COALESCE(SUM(size_bits - used_bits), 0) FROM key_units"
        ).fetchone()
        used = db.execute("SELECT COALESCE(SUM(end_bits - start_bits), 0) FROM unit_uses")
        in_keys = db.execute("SELECT COALESCE(SUM(size_bits), 0) FROM keys").fetchone()[0]
        assert used.fetchone()[0] == in_keys
        # Material is kept exactly while a unit or key can still be handed out.
        bad_units = db.execute(
            "SELECT COUNT(*) FROM key_units WHERE (state = 'available') != (material IS NOT NULL)"
            " OR (material IS NOT NULL AND length(material) * 8 != size_bits)"
            " OR (state = 'consumed') != (used_bits = size_bits)"
            " OR used_bits != (SELECT COALESCE(SUM(end_bits - start_bits), 0) FROM unit_uses"
            " WHERE unit_uses.unit_id = key_units.unit_id)"
        ).fetchone()[0]
        bad_keys = db.execute(
            "SELECT COUNT(*) FROM keys WHERE (state IN ('allocated', 'reserved'))"
            " != (material IS NOT NULL)"
        ).fetchone()[0]
        assert (bad_units, bad_keys) == (0, 0)
        return added, available + in_keys
    finally:
        db.close()


def test_unit_ids_are_derived_identically_and_owners_split_the_pool() -> None:
    ids = derive_unit_ids("A-B/7", 400)
    assert ids == derive_unit_ids("A-B/7", 400)
    assert len(set(ids)) == 400
    owners = [unit_owner(unit_id, "A", "B") for unit_id in ids]
    assert owners == [unit_owner(unit_id, "B", "A") for unit_id in ids]
    # UUID parity is a fair coin: 400 draws, |k - 200| <= 5σ = 50.
    assert abs(owners.count("A") - 200) <= 50


def test_slave_gets_exactly_the_master_keys_for_any_size(pair) -> None:
    a, b = pair
    for size_bits in (64, 512, 1000, 8):  # smaller, equal, larger than a unit
        reservation, keys = a.allocate("B", SAE_A, SAE_B, 3, size_bits)
        assert all(len(material) * 8 == size_bits for _, material in keys)
        b.reserve_for("A", Reservation.from_dict(reservation.to_dict()))
        a.confirm_delivery(reservation.key_ids())
        assert b.take_reserved(SAE_A, SAE_B, reservation.key_ids()) == keys
    # Both ends now hold the same A-owned pool: same remainders, same bits.
    assert a.pool_bits("B", offerable=True) == b.pool_bits("A") - b.pool_bits("A", offerable=True)
    assert conserved(a.path)[0] == conserved(a.path)[1]
    assert conserved(b.path)[0] == conserved(b.path)[1]


def test_both_ends_can_be_master_at_once_without_sharing_a_bit(pair) -> None:
    a, b = pair
    total_bits = a.pool_bits("B")
    from_a, keys_a = a.allocate("B", SAE_A, SAE_B, 4, 256)
    from_b, keys_b = b.allocate("A", SAE_B, SAE_A, 4, 256)
    b.reserve_for("A", from_a)
    a.reserve_for("B", from_b)
    assert b.take_reserved(SAE_A, SAE_B, from_a.key_ids()) == keys_a
    assert a.take_reserved(SAE_B, SAE_A, from_b.key_ids()) == keys_b
    materials = [material for _, material in keys_a + keys_b]
    assert len(set(materials)) == len(materials)
    assert a.pool_bits("B") == b.pool_bits("A") == total_bits - 8 * 256


def test_reservations_may_arrive_in_any_order_but_never_overlap(pair) -> None:
    a, b = pair
    # Three requests that slice the same units; the slave hears of them last to first.
    allocations = [a.allocate("B", SAE_A, SAE_B, 2, 200) for _ in range(3)]
    for reservation, _ in reversed(allocations):
        b.reserve_for("A", reservation)
    for reservation, keys in allocations:
        assert b.take_reserved(SAE_A, SAE_B, reservation.key_ids()) == keys
    # A forged reservation overlapping used bits by one byte is refused whole.
    segment = allocations[0][0].keys[0].segments[0]
    before = b.pool_bits("A")
    overlapping = {
        "master_SAE_ID": SAE_A,
        "slave_SAE_ID": SAE_B,
        "keys": [
            {
                "key_ID": "22222222-2222-4222-8222-222222222222",
                "size_bits": 64,
                "segments": [[segment.unit_id, segment.start_bits + segment.size_bits - 8, 64]],
            }
        ],
    }
    with pytest.raises(ReservationError):
        b.reserve_for("A", Reservation.from_dict(overlapping))
    assert b.pool_bits("A") == before
    assert conserved(b.path)[0] == conserved(b.path)[1]


def test_never_twice_and_only_to_the_addressed_sae(pair) -> None:
    a, b = pair
    reservation, keys = a.allocate("B", SAE_A, SAE_B, 2, 128)
    b.reserve_for("A", reservation)
    first, second = reservation.key_ids()
    with pytest.raises(KeyLookupError) as refused:
        b.take_reserved(SAE_A, "carol_app", [first])
    assert refused.value.reason == "not_addressed"
    with pytest.raises(KeyLookupError) as refused:
        b.take_reserved("mallory_app", SAE_B, [first])
    assert refused.value.reason == "unknown"
    # All or nothing: one unknown ID, and the good one stays retrievable.
    with pytest.raises(KeyLookupError):
        b.take_reserved(SAE_A, SAE_B, [first, "00000000-0000-4000-8000-000000000000"])
    assert b.take_reserved(SAE_A, SAE_B, [first]) == keys[:1]
    with pytest.raises(KeyLookupError) as refused:
        b.take_reserved(SAE_A, SAE_B, [first])
    assert refused.value.reason == "already_delivered"
    with pytest.raises(KeyLookupError):
        b.take_reserved(SAE_A, SAE_B, [second, second])
    assert b.take_reserved(SAE_A, SAE_B, [second]) == keys[1:]
    # The master's own store never hands its keys out as a slave.
    with pytest.raises(KeyLookupError):
        a.take_reserved(SAE_A, SAE_B, [second])


def test_a_reservation_is_applied_whole_or_not_at_all(pair) -> None:
    a, b = pair
    reservation, _ = a.allocate("B", SAE_A, SAE_B, 3, 256)
    b.reserve_for("A", reservation)
    before = b.pool_bits("A")
    with pytest.raises(ReservationError):
        b.reserve_for("A", reservation)  # the same bits again
    # A reservation naming B's own units: B would hand out bits B may offer itself.
    own_unit = next(u for u in derive_unit_ids("A-B/0", 16) if unit_owner(u, "A", "B") == "B")
    forged = Reservation.from_dict(
        {
            "master_SAE_ID": SAE_A,
            "slave_SAE_ID": SAE_B,
            "keys": [{"key_ID": "not-a-uuid", "size_bits": 64, "segments": [[own_unit, 0, 64]]}],
        }
    )
    with pytest.raises(ReservationError):
        b.reserve_for("A", forged)
    stolen = Reservation.from_dict(
        {
            "master_SAE_ID": SAE_A,
            "slave_SAE_ID": SAE_B,
            "keys": [
                {
                    "key_ID": "11111111-1111-4111-8111-111111111111",
                    "size_bits": 64,
                    "segments": [[own_unit, 0, 64]],
                }
            ],
        }
    )
    with pytest.raises(ReservationError):
        b.reserve_for("A", stolen)
    with pytest.raises(ReservationError):
        Reservation.from_dict({"keys": [{"key_ID": "x"}]})
    assert b.pool_bits("A") == before


def test_insufficient_material_changes_nothing(pair) -> None:
    a, _ = pair
    offerable = a.pool_bits("B", offerable=True)
    with pytest.raises(InsufficientKeyMaterial):
        a.allocate("B", SAE_A, SAE_B, 1, offerable + 8)
    assert a.pool_bits("B", offerable=True) == offerable
    with pytest.raises(ValueError):
        a.allocate("B", SAE_A, SAE_B, 1, 12)
    assert a.allocate("B", SAE_A, SAE_B, 1, offerable)[1][0][1]
    assert a.pool_bits("B", offerable=True) == 0


def test_restart_keeps_everything_committed(pair, tmp_path: Path) -> None:
    a, b = pair
    reservation, keys = a.allocate("B", SAE_A, SAE_B, 2, 256)
    b.reserve_for("A", reservation)
    a.confirm_delivery(reservation.key_ids())
    a.allocate("B", SAE_A, SAE_B, 1, 256)  # never confirmed: the node stops here
    pool_a, pool_b = a.pool_bits("B"), b.pool_bits("A")
    a.close()
    b.close()
    with KeyStore(tmp_path / "b.sqlite", "B") as b2:
        assert b2.pool_bits("A") == pool_b
        assert b2.take_reserved(SAE_A, SAE_B, reservation.key_ids()) == keys
    with KeyStore(tmp_path / "a.sqlite", "A") as a2:
        assert a2.pool_bits("B") == pool_a
        # Allocated but never confirmed before the restart: discarded, never offered.
        assert a2.key_counts() == {("master", "delivered"): 2, ("master", "discarded"): 1}
    with pytest.raises(KeyStoreError):
        KeyStore(tmp_path / "a.sqlite", "B")


def test_threads_never_share_key_bits(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "a.sqlite", "A", synchronous="NORMAL")
    store.add_block("B", "A-B/0", shared_block(8192, 1), unit_bits=1024)
    materials: list[bytes] = []
    lock = threading.Lock()

    def worker() -> None:
        while True:
            try:
                _, keys = store.allocate("B", SAE_A, SAE_B, 1, 200 * 8)
            except InsufficientKeyMaterial:
                return
            with lock:
                materials.extend(material for _, material in keys)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    offerable_bits = sum(len(m) * 8 for m in materials) + store.pool_bits("B", offerable=True)
    assert len(materials) >= 10
    assert len(set(materials)) == len(materials)
    assert store.pool_bits("B", offerable=True) < 200 * 8
    added, accounted = conserved(store.path)
    assert added == accounted
    assert offerable_bits + (store.pool_bits("B") - store.pool_bits("B", offerable=True)) == added
    store.close()


WRITER = """
import random, sys
from qnemu.keys import KeyStore
store = KeyStore(sys.argv[1], "A")
rng = random.Random(int(sys.argv[2]))
block = 0
while True:
    block += 1
    store.add_block("B", f"{sys.argv[2]}/{block}", rng.randbytes(4096), unit_bits=1024)
    for _ in range(3):
        reservation, _ = store.allocate("B", "alice_app", "bob_app", 2, 8 * rng.randint(8, 300))
        store.confirm_delivery(reservation.key_ids())
        print(" ".join(reservation.key_ids()), flush=True)
"""


def test_kill_9_mid_write_leaves_a_consistent_store(tmp_path: Path) -> None:
    path = tmp_path / "a.sqlite"
    delivered: list[str] = []
    for round_number in range(3):
        child = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path), str(round_number)],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            for _ in range(20 + 7 * round_number):
                line = child.stdout.readline()
                assert line, "writer died"
                delivered.extend(line.split())
        finally:
            os.kill(child.pid, signal.SIGKILL)
            child.wait(timeout=10)
            child.stdout.close()
        added, accounted = conserved(path)
        assert added == accounted
        with KeyStore(path, "A") as store:
            db = sqlite3.connect(path)
            states = dict(db.execute("SELECT key_id, state FROM keys").fetchall())
            db.close()
            # Everything reported as delivered was committed first.
            assert all(states[key_id] == "delivered" for key_id in delivered)
            assert "allocated" not in states.values()
            assert store.pool_bits("B") > 0
