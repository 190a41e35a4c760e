"""Trusted-node relay bookkeeping: paths, hops, one-time pads, and the pads in the key store."""

import itertools
import random
import sqlite3
from pathlib import Path

import pytest

from qnemu.keys import (
    InsufficientKeyMaterial,
    KeySegment,
    KeyStore,
    RelayError,
    Reservation,
    ReservationError,
    new_relay_id,
    one_time_pad,
    qkd_route,
    relay_step,
    shortfall_bits,
)

LINE = [("A", "B"), ("B", "C")]


# --- pure -----------------------------------------------------------------------------------


def test_route_takes_fewest_hops_and_breaks_ties_by_name():
    square = [("A", "C"), ("C", "D"), ("A", "B"), ("B", "D"), ("D", "E")]
    assert qkd_route(square, "A", "E") == ("A", "B", "D", "E")
    assert qkd_route(reversed(square), "A", "E") == ("A", "B", "D", "E")  # order-free
    assert qkd_route(LINE, "A", "C") == ("A", "B", "C")
    assert qkd_route(LINE, "C", "A") == ("C", "B", "A")
    assert qkd_route(LINE, "A", "B") == ("A", "B")
    assert qkd_route([*LINE, ("X", "Y")], "A", "Y") == ()  # not connected
    assert qkd_route(LINE, "A", "Z") == ()
    assert qkd_route(LINE, "A", "A") == ()


def test_relay_step_follows_the_route_and_refuses_misrouted_hops():
    relay_id = new_relay_id("A", "D")
    route = ["A", "B", "C", "D"]
    step = relay_step(relay_id, route, "B", "A")
    assert (step.origin, step.destination, step.next_hop) == ("A", "D", "C")
    assert not step.is_destination
    last = relay_step(relay_id, route, "D", "C")
    assert last.is_destination and last.next_hop is None
    refused = [
        (relay_id, route, "C", "A"),  # A is not the hop before C
        (relay_id, route, "A", "B"),  # nobody sends to the origin
        (relay_id, route, "E", "D"),  # not on the route
        (relay_id, ["A", "B", "A", "D"], "B", "A"),  # a loop
        (relay_id, ["A"], "A", "A"),
        (new_relay_id("A", "C"), route, "B", "A"),  # the ID names another pair
        ("relay/A>D/", route, "B", "A"),
    ]
    for args in refused:
        with pytest.raises(RelayError):
            relay_step(*args)


def test_one_time_pad_is_its_own_inverse_and_needs_an_equal_pad():
    rng = random.Random(3)
    key, pad = rng.randbytes(64), rng.randbytes(64)
    ciphertext = one_time_pad(key, pad)
    assert ciphertext != key and one_time_pad(ciphertext, pad) == key
    assert one_time_pad(b"\x0f\xf0", b"\xff\xff") == b"\xf0\x0f"
    assert one_time_pad(b"\x00\x01", b"\x00\x00") == b"\x00\x01"  # leading zero bytes kept
    with pytest.raises(RelayError):
        one_time_pad(key, pad[:-1])


def test_shortfall_is_what_is_missing_in_whole_bytes():
    assert shortfall_bits(512, 0) == 512
    assert shortfall_bits(512, 200) == 312
    assert shortfall_bits(512, 201) == 312  # 311 bits, rounded up to bytes
    assert shortfall_bits(512, 512) == 0
    assert shortfall_bits(512, 4096) == 0


def test_relay_ids_are_fresh_and_name_the_pair():
    first, second = new_relay_id("A", "C"), new_relay_id("A", "C")
    assert first != second and first.startswith("relay/A>C/")


# --- the pads in the store --------------------------------------------------------------------


@pytest.fixture
def line(tmp_path: Path):
    """Stores of A, B, C in a line; A-B and B-C each share two post-processed blocks."""
    stores = {name: KeyStore(tmp_path / f"{name}.sqlite", name) for name in "ABC"}
    for left, right in LINE:
        for block in range(2):
            material = random.Random(f"{left}{right}{block}").randbytes(512)  # 4096 bits
            block_id = f"{left}-{right}/{block}"
            assert stores[left].add_block(right, block_id, material, unit_bits=1024) == stores[
                right
            ].add_block(left, block_id, material, unit_bits=1024)
    yield stores
    for store in stores.values():
        store.close()


def relay_by_hand(stores, route, bits: int) -> tuple[str, bytes]:
    """What the nodes do, without the wire: returns the relay ID and the origin's key."""
    relay_id = new_relay_id(route[0], route[-1])
    key = random.Random(relay_id).randbytes(bits // 8)
    carried = key
    for sender, receiver in itertools.pairwise(route):
        segments, pad = stores[sender].take_pad(receiver, bits, relay_id)
        ciphertext = one_time_pad(carried, pad)
        carried = one_time_pad(ciphertext, stores[receiver].use_pad(sender, segments, relay_id))
    origin, destination = route[0], route[-1]
    stores[destination].add_relayed(origin, relay_id, carried, owner=origin, unit_bits=256)
    stores[origin].add_relayed(destination, relay_id, key, owner=origin, unit_bits=256)
    return relay_id, key


def used_bits(path: Path, peer: str) -> int:
    """Bits of the pool shared with `peer` that are gone (read from the file)."""
    db = sqlite3.connect(path)
    try:
        return db.execute(
            "SELECT COALESCE(SUM(used_bits), 0) FROM key_units WHERE peer = ?", (peer,)
        ).fetchone()[0]
    finally:
        db.close()


def test_a_relayed_key_arrives_intact_and_every_pad_is_spent_at_both_ends(line):
    bits = 768
    before = {name: {p: s.pool_bits(p) for p in s.peers()} for name, s in line.items()}
    _, key = relay_by_hand(line, ["A", "B", "C"], bits)
    # Each link's pool lost exactly the pad, at both of its ends, and says so.
    for name, peer in [("A", "B"), ("B", "A"), ("B", "C"), ("C", "B")]:
        assert line[name].pool_bits(peer) == before[name][peer] - bits
        assert line[name].pad_bits(peer) == bits
        assert used_bits(line[name].path, peer) == bits
    # The end-to-end key: relayed units of the far node, identical, owned by the origin.
    assert line["A"].relayed_peers() == ["C"] and line["C"].relayed_peers() == ["A"]
    assert line["B"].relayed_peers() == []
    assert line["A"].pool_bits("C", offerable=True) == bits
    assert line["C"].pool_bits("A") == bits and line["C"].pool_bits("A", offerable=True) == 0
    # The ordinary KME steps serve it: A allocates, C reserves the same bits.
    reservation, keys = line["A"].allocate("C", "alice_app", "carol_app", 3, 256)
    line["C"].reserve_for("A", reservation)
    line["A"].confirm_delivery(reservation.key_ids())
    assert b"".join(material for _, material in keys) == key
    taken = line["C"].take_reserved("alice_app", "carol_app", reservation.key_ids())
    assert taken == keys
    assert line["A"].pool_bits("C") == 0 == line["C"].pool_bits("A")


def test_pad_bits_are_zeroed_in_the_file(line):
    segments, pad = line["A"].take_pad("B", 64, "relay/A>C/x")
    assert line["B"].use_pad("A", segments, "relay/A>C/x") == pad
    for name in "AB":
        db = sqlite3.connect(line[name].path)
        try:
            for segment in segments:
                (material,) = db.execute(
                    "SELECT material FROM key_units WHERE unit_id = ?", (segment.unit_id,)
                ).fetchone()
                start = segment.start_bits // 8
                assert material[start : start + segment.size_bits // 8] == bytes(8)
        finally:
            db.close()


def test_a_pad_is_used_once_and_only_as_named(line):
    segments, _ = line["A"].take_pad("B", 256, "relay/A>C/1")
    line["B"].use_pad("A", segments, "relay/A>C/1")
    with pytest.raises(ReservationError, match="were used"):
        line["B"].use_pad("A", segments, "relay/A>C/2")  # replayed
    own = line["B"].take_pad("A", 64, "relay/B>X/3")[0]
    with pytest.raises(ReservationError):
        line["B"].use_pad("A", own, "relay/B>X/4")  # B's own units: not A's to name
    bogus = [KeySegment(segments[0].unit_id, 4096, 64)]
    with pytest.raises(ReservationError):
        line["B"].use_pad("A", bogus, "relay/A>C/5")  # beyond the unit
    with pytest.raises(ReservationError):
        line["B"].use_pad("A", [], "relay/A>C/6")


def test_pads_and_application_keys_never_share_bits(line):
    """A's KME keys for B and A's relay pads both come from A's own A-B units, in turn."""
    reservation, _ = line["A"].allocate("B", "alice_app", "bob_app", 1, 128)
    segments, _ = line["A"].take_pad("B", 128, "relay/A>C/7")
    reservation_2, _ = line["A"].allocate("B", "alice_app", "bob_app", 1, 128)
    # They reach B in any order; B takes each exactly.
    line["B"].reserve_for("A", reservation_2)
    line["B"].use_pad("A", segments, "relay/A>C/7")
    line["B"].reserve_for("A", reservation)
    assert line["B"].pad_bits("A") == 128 and line["A"].pad_bits("B") == 128
    replay = Reservation("alice_app", "bob_app", reservation_2.keys)
    with pytest.raises(ReservationError):
        line["B"].reserve_for("A", replay)  # its bits are spent


def test_no_pad_without_enough_own_key(line):
    own_bits = line["A"].pool_bits("B", offerable=True)
    with pytest.raises(InsufficientKeyMaterial):
        line["A"].take_pad("B", own_bits + 8, "relay/A>C/8")
    assert line["A"].pool_bits("B", offerable=True) == own_bits  # nothing taken
    with pytest.raises(ValueError):
        line["A"].take_pad("B", 12, "relay/A>C/9")


def test_relayed_units_survive_a_restart_and_stay_marked(line, tmp_path: Path):
    relay_by_hand(line, ["C", "B", "A"], 256)  # C asks, this time
    line["A"].close()
    reopened = KeyStore(tmp_path / "A.sqlite", "A")
    try:
        assert reopened.relayed_peers() == ["C"]
        assert reopened.pool_bits("C") == 256 and reopened.pool_bits("C", offerable=True) == 0
    finally:
        reopened.close()
    assert line["C"].pool_bits("A", offerable=True) == 256


def test_a_store_from_before_relays_gains_the_relayed_column(tmp_path: Path):
    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    db.executescript(
        "CREATE TABLE key_units (unit_id TEXT PRIMARY KEY, peer TEXT NOT NULL, owner TEXT"
        " NOT NULL, position INTEGER NOT NULL, size_bits INTEGER NOT NULL, used_bits INTEGER"
        " NOT NULL DEFAULT 0, material BLOB, created_at REAL NOT NULL, state TEXT NOT NULL);"
    )
    db.close()
    with KeyStore(path, "A") as store:
        store.add_block("B", "A-B/0", bytes(range(64)))
        assert store.relayed_peers() == [] and store.pool_bits("B") == 512
