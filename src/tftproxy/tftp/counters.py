"""Per-worker TFTP counters in shared memory, summed by the parent without locks.

Besides the counters, each worker's slot holds a histogram of complete transfers' latency
(request to last ACK): one cell per bucket of :data:`LATENCY_BUCKETS` and one past the last,
their sum in microseconds and their count. Buckets are stored per bucket (not cumulative);
the reader makes them cumulative, as Prometheus wants.
"""

from __future__ import annotations

import bisect
import mmap
import struct
from typing import Final

# Seconds; a boot loader over a LAN takes well under a second, a big initrd over a slow or
# lossy link minutes.
LATENCY_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                          60.0, 120.0, 300.0)

COUNTER_NAMES: Final = (
    "requests",            # datagrams read on the listening sockets
    "transfers",           # transfers started
    "complete",
    "probes",              # UEFI size probes (ERROR 8 after OACK)
    "client_errors",
    "timeouts",
    "server_errors",
    "client_gone",
    "superseded",
    "shutdown",
    "not_found",
    "denied",
    "write_refused",
    "bad_requests",
    "duplicate_requests",
    "held",                # requests held while their name was refreshing
    "busy",                # requests dropped at tftp_max_transfers (or holds full)
    "busy_client",         # requests dropped at tftp_max_per_client
    "evicted",             # unverified transfers ended to make room for a new request
    "bytes_sent",          # payload bytes acknowledged by clients
    "packets_sent",
    "retransmits",
    "ignored_packets",     # duplicate/stale ACKs and stray datagrams on transfer sockets
    "active",              # gauge: transfers in progress
    "holding",             # gauge: requests held right now
    *(f"latency_bucket_{i}" for i in range(len(LATENCY_BUCKETS) + 1)),
    "latency_sum_us",
    "latency_count",
)
_INDEX: Final = {name: i for i, name in enumerate(COUNTER_NAMES)}
_U64 = struct.Struct("=Q")


class Counters:
    """Per-worker counters in a buffer the parent can read while workers write.

    Each worker owns one slot of 8-byte cells, so writers never share a cell and a reader
    sums slots without locks.
    """

    SLOT_BYTES: Final = len(COUNTER_NAMES) * 8

    def __init__(self, buf: mmap.mmap | bytearray, slot: int = 0) -> None:
        self._buf = buf
        self._base = slot * self.SLOT_BYTES

    @classmethod
    def local(cls) -> Counters:
        return cls(bytearray(cls.SLOT_BYTES))

    def add(self, name: str, n: int = 1) -> None:
        offset = self._base + _INDEX[name] * 8
        _U64.pack_into(self._buf, offset, _U64.unpack_from(self._buf, offset)[0] + n)

    def set(self, name: str, value: int) -> None:
        _U64.pack_into(self._buf, self._base + _INDEX[name] * 8, value)

    def observe_latency(self, seconds: float) -> None:
        """Count one complete transfer's latency in the histogram."""
        self.add(f"latency_bucket_{bisect.bisect_left(LATENCY_BUCKETS, seconds)}")
        self.add("latency_sum_us", int(seconds * 1e6))
        self.add("latency_count")

    def reset_gauges(self) -> None:
        """A new worker in a dead one's slot starts with nothing in progress."""
        self.set("active", 0)
        self.set("holding", 0)

    def snapshot(self) -> dict[str, int]:
        return read_counters(self._buf, 1, self._base)


def read_counters(buf: mmap.mmap | bytearray, slots: int, base: int = 0) -> dict[str, int]:
    totals = dict.fromkeys(COUNTER_NAMES, 0)
    for slot in range(slots):
        start = base + slot * Counters.SLOT_BYTES
        for i, name in enumerate(COUNTER_NAMES):
            totals[name] += _U64.unpack_from(buf, start + i * 8)[0]
    return totals
