"""Where a transfer's bytes come from: the descriptor opened at request time.

Octet mode reads blocks by offset (``preadv``), so a window's blocks come in one call;
netascii converts as it streams (the machine reads blocks in order).
"""

from __future__ import annotations

import errno
import os
from collections.abc import Sequence
from typing import Final

from tftproxy.tftp.packets import netascii_encode


class FileSource:
    """Octet mode: blocks read by offset from the descriptor opened at request time."""

    __slots__ = ("_fd",)

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def readv(self, offset: int, bufs: Sequence[memoryview]) -> int:
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
