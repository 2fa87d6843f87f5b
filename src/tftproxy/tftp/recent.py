"""The last transfers of each TFTP worker, in shared memory, for the status page.

Workers are processes of their own: each writes the transfers it ended into its slot of a
small ring beside the counters, and the parent reads every slot without locks. A slot has
one writer, so a sequence number per entry is enough (odd while the entry is being written):
a reader that sees it odd, or changed after the copy, skips the entry instead of showing a
torn one. Bounded in memory whatever the traffic: :data:`ENTRIES` per worker, each of a
fixed size (names and addresses cut to fit).
"""

from __future__ import annotations

import struct
import time
from typing import Any, Final

ENTRIES: Final = 32
_NAME = 192
_CLIENT = 48
_OUTCOME = 16
# seq, end (epoch s), seconds, bytes, outcome, client, name
_ENTRY = struct.Struct(f"=QddQ{_OUTCOME}s{_CLIENT}s{_NAME}s")
_U64 = struct.Struct("=Q")
_HEAD = 8


def _cut(text: str, size: int) -> bytes:
    raw = text.encode("utf-8", "replace")[:size]
    return raw.decode("utf-8", "ignore").encode()  # never half a character


class TransferRing:
    """One worker's ring: the writer side."""

    SLOT_BYTES: Final = _HEAD + ENTRIES * _ENTRY.size

    def __init__(self, buf: Any, slot: int = 0) -> None:
        self._buf = buf
        self._base = slot * self.SLOT_BYTES

    @classmethod
    def local(cls) -> TransferRing:
        return cls(bytearray(cls.SLOT_BYTES))

    def add(self, client: str, name: str, nbytes: int, seconds: float, outcome: str,
            end: float | None = None) -> None:
        head = _U64.unpack_from(self._buf, self._base)[0]
        at = self._base + _HEAD + (head % ENTRIES) * _ENTRY.size
        seq = _U64.unpack_from(self._buf, at)[0]
        _U64.pack_into(self._buf, at, seq + 1)  # odd: being written
        _ENTRY.pack_into(self._buf, at, seq + 1, time.time() if end is None else end,
                         seconds, nbytes, _cut(outcome, _OUTCOME), _cut(client, _CLIENT),
                         _cut(name, _NAME))
        _U64.pack_into(self._buf, at, seq + 2)
        _U64.pack_into(self._buf, self._base, head + 1)

    def entries(self) -> list[dict[str, Any]]:
        return read_recent(self._buf, 1, self._base)


def read_recent(buf: Any, slots: int, base: int = 0) -> list[dict[str, Any]]:
    """Every complete entry of ``slots`` rings, newest first."""
    out = []
    for slot in range(slots):
        start = base + slot * TransferRing.SLOT_BYTES + _HEAD
        for i in range(ENTRIES):
            at = start + i * _ENTRY.size
            seq, end, seconds, nbytes, outcome, client, name = _ENTRY.unpack_from(buf, at)
            if seq == 0 or seq % 2 or _U64.unpack_from(buf, at)[0] != seq:
                continue
            out.append({"protocol": "tftp", "end": end, "seconds": seconds, "bytes": nbytes,
                        "outcome": outcome.rstrip(b"\0").decode(),
                        "client": client.rstrip(b"\0").decode(),
                        "name": name.rstrip(b"\0").decode()})
    out.sort(key=lambda e: e["end"], reverse=True)
    return out
