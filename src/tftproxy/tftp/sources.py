"""Where a transfer's bytes come from: the descriptor opened at request time.

Octet mode reads blocks by offset (``preadv``), so a window's blocks come in one call, and
reads ahead: a lock-step transfer asks for one block at a time, and a system call per block
is a fifth of a boot storm's CPU. Netascii converts as it streams (the machine reads blocks in
order).
"""

from __future__ import annotations

import errno
import os
from collections.abc import Sequence
from typing import Final

from tftproxy.tftp.packets import netascii_encode


class FileSource:
    """Octet mode: blocks read by offset from the descriptor opened at request time.

    Reads smaller than :attr:`READAHEAD` are served from a buffer refilled
    :attr:`READAHEAD` bytes at a time. The buffer is made on the second read only: a request
    from a peer that never acknowledges reads one block and holds no buffer.
    """

    READAHEAD: Final = 32 * 1024

    __slots__ = ("_ahead", "_fd", "_reads", "_start", "_stop")

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._reads = 0
        self._ahead: memoryview | None = None
        self._start = self._stop = 0  # the file's bytes [start, stop) are in the buffer

    def readv(self, offset: int, bufs: Sequence[memoryview]) -> int:
        want = len(bufs[0]) if len(bufs) == 1 else sum(len(b) for b in bufs)
        if want < self.READAHEAD:
            self._reads += 1
            if self._reads > 1:
                return self._buffered(offset, bufs, want)
        return self._direct(offset, bufs, want)

    def _buffered(self, offset: int, bufs: Sequence[memoryview], want: int) -> int:
        if not (self._start <= offset and offset + want <= self._stop):
            ahead = self._ahead
            if ahead is None:
                ahead = self._ahead = memoryview(bytearray(self.READAHEAD))
            self._start, self._stop = offset, offset + self._direct(offset, (ahead,),
                                                                     self.READAHEAD)
        at = offset - self._start
        ahead = self._ahead
        assert ahead is not None
        total = 0
        for buf in bufs:
            n = min(len(buf), self._stop - self._start - at)
            if n <= 0:
                break
            buf[:n] = ahead[at:at + n]
            at += n
            total += n
        return total

    def _direct(self, offset: int, bufs: Sequence[memoryview], want: int) -> int:
        total = os.preadv(self._fd, bufs, offset)
        want = len(bufs[0]) if len(bufs) == 1 else sum(len(b) for b in bufs)
        if total == want:
            return total
        # A regular file reads short only at its end (where the next read returns 0).
        while 0 < total < want:
            n = os.preadv(self._fd, _skip(bufs, total), offset + total)
            if n == 0:
                break
            total += n
        return total


def _skip(bufs: Sequence[memoryview], count: int) -> list[memoryview]:
    """The parts of ``bufs`` after the first ``count`` bytes."""
    out: list[memoryview] = []
    for buf in bufs:
        if count >= len(buf):
            count -= len(buf)
            continue
        out.append(buf[count:])
        count = 0
    return out


class NetasciiSource:
    """Netascii mode: the file converted as it streams (the machine reads blocks in order)."""

    _CHUNK: Final = 64 * 1024

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._raw_offset = 0
        self._pending = bytearray()
        self._offset = 0
        self._eof = False

    def readv(self, offset: int, bufs: Sequence[memoryview]) -> int:
        if offset != self._offset:
            raise OSError(errno.ESPIPE, "netascii source read out of order")
        total = 0
        for buf in bufs:
            n = self._fill(buf)
            total += n
            if n < len(buf):
                break
        return total

    def _fill(self, buf: memoryview) -> int:
        need = len(buf)
        while len(self._pending) < need and not self._eof:
            chunk = os.pread(self._fd, self._CHUNK, self._raw_offset)
            if not chunk:
                self._eof = True
                break
            self._raw_offset += len(chunk)
            self._pending += netascii_encode(chunk)
        n = min(need, len(self._pending))
        buf[:n] = self._pending[:n]
        del self._pending[:n]
        self._offset += n
        return n
