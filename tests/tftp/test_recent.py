"""The TFTP workers' shared ring of recent transfers."""

from __future__ import annotations

import mmap

from tftproxy.tftp.recent import ENTRIES, TransferRing, read_recent


def test_each_worker_writes_its_slot_and_the_reader_sees_all_newest_first() -> None:
    buf = mmap.mmap(-1, TransferRing.SLOT_BYTES * 2)
    a, b = TransferRing(buf, 0), TransferRing(buf, 1)
    a.add("127.0.0.1:4000", "boot/vmlinuz", 1000, 0.5, "complete", end=10.0)
    b.add("[::1]:4001", "boot/initrd.img", 0, 3.0, "timeout", end=11.0)
    got = read_recent(buf, 2)
    assert [(e["name"], e["client"], e["outcome"], e["bytes"]) for e in got] == [
        ("boot/initrd.img", "[::1]:4001", "timeout", 0),
        ("boot/vmlinuz", "127.0.0.1:4000", "complete", 1000)]
    assert got[1]["seconds"] == 0.5 and got[1]["protocol"] == "tftp"


def test_the_ring_is_bounded_and_keeps_the_latest() -> None:
    ring = TransferRing.local()
    for i in range(ENTRIES * 3):
        ring.add("c", f"f{i}", i, 0.0, "complete", end=float(i))
    names = [e["name"] for e in ring.entries()]
    assert len(names) == ENTRIES
    assert names[0] == f"f{ENTRIES * 3 - 1}" and names[-1] == f"f{ENTRIES * 2}"


def test_long_names_are_cut_on_a_character_and_a_torn_entry_is_skipped() -> None:
    ring = TransferRing.local()
    ring.add("c", "é" * 300, 1, 0.0, "complete")
    (entry,) = ring.entries()
    assert set(entry["name"]) == {"é"} and len(entry["name"].encode()) <= 192
    # An entry whose sequence number is odd is being written: a reader skips it.
    buf = ring._buf
    seq = int.from_bytes(buf[8:16], "little")
    buf[8:16] = (seq + 1).to_bytes(8, "little")
    assert ring.entries() == []
