"""The file source gives exactly the file's bytes for any read, buffered or not."""

from __future__ import annotations

import os
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from tftproxy.tftp.sources import FileSource

DATA = os.urandom(3 * FileSource.READAHEAD + 777)


def _source(tmp_path: Path) -> tuple[FileSource, int]:
    path = tmp_path / "f"
    if not path.exists():
        path.write_bytes(DATA)
    fd = os.open(path, os.O_RDONLY)
    return FileSource(fd), fd


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, len(DATA) + 10),
                          st.lists(st.integers(1, 2 * FileSource.READAHEAD), min_size=1,
                                   max_size=4)), min_size=1, max_size=30))
def test_reads_match_the_file(tmp_path_factory, reads: list[tuple[int, list[int]]]) -> None:
    source, fd = _source(tmp_path_factory.mktemp("src"))
    try:
        for offset, sizes in reads:
            bufs = [memoryview(bytearray(n)) for n in sizes]
            got = source.readv(offset, bufs)
            expected = DATA[offset:offset + sum(sizes)]
            assert got == len(expected)
            assert b"".join(bytes(b) for b in bufs)[:got] == expected
    finally:
        os.close(fd)


def test_lock_step_reads_ahead_and_holds_no_buffer_before_the_second_read(tmp_path) -> None:
    source, fd = _source(tmp_path)
    try:
        block = memoryview(bytearray(1468))
        assert source.readv(0, [block]) == 1468 and bytes(block) == DATA[:1468]
        assert source._ahead is None  # a peer that never acknowledges costs no buffer
        offset, out = 1468, bytearray(DATA[:1468])
        while True:
            n = source.readv(offset, [block])
            out += block[:n]
            offset += n
            if n < 1468:
                break
        assert bytes(out) == DATA
    finally:
        os.close(fd)
