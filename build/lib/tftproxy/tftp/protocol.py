"""The TFTP read transfer as a pure state machine: datagrams and timer ticks in, actions out.

No sockets and no clock: the caller passes ``now`` (any monotonic seconds) and reads
:attr:`ReadTransfer.deadline` to know when to call :meth:`ReadTransfer.on_timer`. File content
comes through a :class:`Source`, which the server backs with ``pread`` on the descriptor it
opened at request time; tests back it with bytes.

Rules the machine enforces, each with a packet-level test:

* Go-back-N over RFC 7440 windows (lock-step is windowsize 1). An ACK advances only if it
  acknowledges a block that was sent and not yet acknowledged; a duplicate or stale ACK is
  ignored and never triggers a resend: resends come from the timer alone, which is what keeps
  a window from multiplying (Sorcerer's Apprentice; EDK2 at windowsize 4 storms otherwise).
* Block numbers are 16 bits on the wire and unbounded here; they wrap past 65535 to 0.
* An OACK counts as block 0: ACK 0 acknowledges it, ERROR 8 in reply to it is the UEFI size
  probe (a normal end), any other ERROR is the client giving up.
* Every transmission re-arms the timer; after ``retries`` timeouts without progress the
  transfer ends silently (the peer is gone; an ERROR would go nowhere).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Final, Protocol

from tftproxy.tftp.packets import (
    DEFAULT_BLKSIZE,
    HEADER,
    MAX_BLKSIZE,
    MAX_TIMEOUT,
    MAX_WINDOWSIZE,
    MIN_BLKSIZE,
    MIN_TIMEOUT,
    ErrorCode,
    Request,
    build_error,
    build_oack,
    pack_data_header,
)


class Source(Protocol):
    """Where a transfer's bytes come from.

    ``readv`` fills ``bufs`` in order, completely unless the data ends, and returns the byte
    count. The machine reads every block exactly once and in order (a window's blocks stay
    cached until acknowledged), so a source may be a stream.
    """

    def readv(self, offset: int, bufs: Sequence[memoryview]) -> int: ...


class BytesSource:
    """A source over bytes in memory."""

    def __init__(self, data: bytes) -> None:
        self._data = memoryview(data)

    def readv(self, offset: int, bufs: Sequence[memoryview]) -> int:
        total = 0
        for buf in bufs:
            chunk = self._data[offset + total : offset + total + len(buf)]
            buf[: len(chunk)] = chunk
            total += len(chunk)
            if len(chunk) < len(buf):
                break
        return total


@dataclass(frozen=True, slots=True)
class Policy:
    """What the server grants; a client never gets more than it asked for."""

    max_blksize: int = 1468
    max_windowsize: int = 64
    # A transfer keeps its unacknowledged window in memory; this caps windowsize x blksize.
    window_bytes: int = 1 << 20
    timeout: float = 1.0
    retries: int = 5


@dataclass(frozen=True, slots=True)
class Negotiated:
    """The transfer's parameters and the OACK that announces them (empty: no OACK)."""

    blksize: int = DEFAULT_BLKSIZE
    windowsize: int = 1
    timeout: float = 1.0
    oack: tuple[tuple[str, str], ...] = ()

    def describe(self) -> str:
        return " ".join(f"{k.lower()}={v}" for k, v in self.oack) or "no options"


def _integer(text: str) -> int | None:
    # Strictly decimal: int() would also take "+5", " 5" and "5_0", which firmware never sends
    # and whose echo could confuse a client that compares strings.
    if not text or len(text) > 10 or not text.isascii() or not text.isdigit():
        return None
    return int(text)


def negotiate(request: Request, size: int | None, policy: Policy) -> Negotiated:
    """Apply RFC 2347/2348/2349/7440 to a request.

    ``size`` is the transfer size to announce for ``tsize``, or None when it cannot be known
    (netascii), in which case tsize is not acknowledged. Options that are unknown, malformed
    or out of range are left out of the OACK, which RFC 2347 reads as refused.
    """
    blksize, windowsize, timeout = DEFAULT_BLKSIZE, 1, policy.timeout
    accepted: list[tuple[str, str]] = []  # (client's spelling, canonical name)
    seen: set[str] = set()
    for key, value in request.options:
        name = key.lower()
        if name in seen:
            continue  # the first occurrence counts, as in every common server
        seen.add(name)
        number = _integer(value)
        if name == "blksize":
            if number is None or number < MIN_BLKSIZE:
                continue
            blksize = min(number, MAX_BLKSIZE, policy.max_blksize)
        elif name == "tsize":
            if size is None or number is None:
                continue
        elif name == "timeout":
            # Integer seconds only: echoing anything else makes EDK2 and pxelinux abort.
            if number is None or not MIN_TIMEOUT <= number <= MAX_TIMEOUT:
                continue
            timeout = float(number)
        elif name == "windowsize":
            if number is None or not 1 <= number <= MAX_WINDOWSIZE:
                continue
            windowsize = number
        else:
            continue
        accepted.append((key, name))
    # The window's memory cap depends on the block size, so it is applied last.
    windowsize = max(1, min(windowsize, policy.max_windowsize,
                            policy.window_bytes // (blksize + 4)))
    values = {"blksize": str(blksize), "tsize": str(size), "timeout": str(int(timeout)),
              "windowsize": str(windowsize)}
    oack = tuple((key, values[name]) for key, name in accepted)
    return Negotiated(blksize, windowsize, timeout, oack)


class Outcome(StrEnum):
    COMPLETE = "complete"
    PROBE = "probe"  # ERROR 8 after the OACK: UEFI asked for the size only
    CLIENT_ERROR = "client-error"
    TIMEOUT = "timeout"
    SERVER_ERROR = "server-error"
    # Ends decided at the socket edge:
    CLIENT_GONE = "client-gone"  # ICMP port unreachable
    SUPERSEDED = "superseded"  # the same client port asked for a new transfer
    SHUTDOWN = "shutdown"


@dataclass(frozen=True, slots=True)
class Send:
    """Send ``packet``; with ``segment`` > 0 it is a run of datagrams of that size laid end to
    end (the last may be shorter), which the edge hands to UDP GSO in one system call."""

    packet: bytes | memoryview
    segment: int = 0

    def datagrams(self) -> list[bytes | memoryview]:
        if not self.segment:
            return [self.packet]
        p, n = self.packet, self.segment
        return [p[i : i + n] for i in range(0, len(p), n)]


@dataclass(frozen=True, slots=True)
class Close:
    outcome: Outcome
    detail: str = ""


Action = Send | Close

NOTHING: Final[tuple[Action, ...]] = ()
_NO_FINAL: Final = 1 << 62


class ReadTransfer:
    """One read transfer after the request was accepted and its file opened."""

    def __init__(self, negotiated: Negotiated, source: Source, *, retries: int = 5) -> None:
        self.negotiated = negotiated
        self._source = source
        self._blksize = b = negotiated.blksize
        self._window = w = negotiated.windowsize
        self._stride = b + 4
        self._timeout = negotiated.timeout
        self._retries = retries
        # One buffer for the whole window, allocated once: block k lives in slot (k - 1) % w from
        # the moment it is read until it is acknowledged, and resends come from there. The
        # slots are contiguous, so consecutive blocks form runs the edge sends in one call.
        self._buffer = bytearray(w * (b + 4))
        self._view = view = memoryview(self._buffer)
        self._slots = [view[i * (b + 4) : (i + 1) * (b + 4)] for i in range(w)]
        self._bodies = [slot[4:] for slot in self._slots]
        self._single: list[tuple[Action, ...]] = [(Send(slot),) for slot in self._slots]
        # Lock-step needs none of the window bookkeeping: these serve its per-block path.
        self._readv = source.readv
        self._pack = HEADER.pack_into
        self._first_slot = self._slots[0]
        self._first_body = [self._bodies[0]]
        self._oack = Send(build_oack(negotiated.oack)) if negotiated.oack else None
        # The OACK is block 0: with one, nothing is acknowledged yet (-1).
        self._acked = -1 if self._oack else 0
        self._sent = 0
        self._rewound = 0  # the last block sent by the last go-back
        self._final = _NO_FINAL
        self._final_len = 0
        self._read_bytes = 0
        self._tries = 0
        self.deadline = math.inf
        self.finished = False
        self.outcome: Outcome | None = None
        self.detail = ""
        self.packets_sent = 0
        self.retransmits = 0
        self.ignored = 0

    # ------------------------------------------------------------------ state

    @property
    def progressed(self) -> bool:
        """True once the client acknowledged something: it has seen our answer."""
        return self._acked > 0 or (self._acked == 0 and self._oack is not None)

    @property
    def bytes_acknowledged(self) -> int:
        """Payload bytes the client confirmed (for the log line and counters)."""
        if self._acked <= 0:
            return 0
        return min(self._acked * self._blksize, self._read_bytes)

    @property
    def last_block(self) -> int | None:
        return None if self._final == _NO_FINAL else self._final

    # ----------------------------------------------------------------- events

    def start(self, now: float) -> Sequence[Action]:
        """The first transmission: the OACK, or the first window of data."""
        if self.finished:
            return NOTHING
        if self._oack is not None:
            self.packets_sent += 1
            self.deadline = now + self._timeout
            return (self._oack,)
        return self._send_window(now, 1)

    def receive(self, data: bytes | bytearray | memoryview, now: float,
                size: int = -1) -> Sequence[Action]:
        """A datagram from the client (``size`` bytes of ``data``, default all of it)."""
        if size < 0:
            size = len(data)
        if self.finished:
            return NOTHING
        if size >= 4 and data[0] == 0:
            opcode = data[1]
            if opcode == 4:
                return self._on_ack((data[2] << 8) | data[3], now)
            if opcode == 5:
                return self._on_error((data[2] << 8) | data[3], bytes(data[4:size]))
        # Truncated packets, DATA, requests, OACKs: nothing a reader of ours should send. They
        # are dropped rather than answered so a confused or spoofed peer cannot end a transfer.
        self.ignored += 1
        return NOTHING

    def on_timer(self, now: float) -> Sequence[Action]:
        """Call when ``now >= deadline``: resend what is unacknowledged, or give up."""
        if self.finished or now < self.deadline:
            return NOTHING
        if self._tries >= self._retries:
            what = "OACK" if self._acked < 0 else f"block {self._acked + 1}"
            return self._close(Outcome.TIMEOUT, f"no ACK for {what} after {self._tries} resends")
        self._tries += 1
        self.deadline = now + self._timeout
        if self._acked < 0:
            assert self._oack is not None
            self.retransmits += 1
            self.packets_sent += 1
            return (self._oack,)
        count = self._sent - self._acked
        self.retransmits += count
        self.packets_sent += count
        return self._runs(self._acked + 1, self._sent)

    def abort(self, outcome: Outcome, detail: str = "") -> None:
        """End the transfer for a reason seen at the edge (client gone, shutdown...)."""
        if not self.finished:
            self._close(outcome, detail)

    # --------------------------------------------------------------- internal

    def _close(self, outcome: Outcome, detail: str = "") -> tuple[Action, ...]:
        self.finished = True
        self.outcome = outcome
        self.detail = detail
        self.deadline = math.inf
        return (Close(outcome, detail),)

    def _on_ack(self, block: int, now: float) -> Sequence[Action]:
        acked = self._acked
        # Which of the blocks in flight does this 16-bit number name? Only acked+1..sent are
        # candidates; everything else (the same block again, an older one, a future one) is
        # a duplicate or garbage, and answering it is how windows multiply.
        delta = (block - acked) & 0xFFFF
        if delta == 0 or delta > self._sent - acked:
            self.ignored += 1
            return NOTHING
        acked += delta
        self._acked = acked
        self._tries = 0
        if acked >= self._final:
            return self._close(Outcome.COMPLETE)
        if self._window == 1:
            return self._step(now)
        if acked < self._sent:
            # A partial ACK: RFC 7440 clients send one when a block is missing, and the window
            # restarts after it (go-back-N). Once per round, though: until the blocks sent
            # now are acknowledged, later partial ACKs only release new blocks. Otherwise a
            # client that acknowledges every block would get a whole window per ACK.
            if acked < self._rewound:
                return self._send_window(now, self._sent + 1)
            self.retransmits += self._sent - acked
            actions = self._send_window(now, acked + 1)
            self._rewound = self._sent
            return actions
        return self._send_window(now, acked + 1)

    def _on_error(self, code: int, rest: bytes) -> tuple[Action, ...]:
        message = rest.split(b"\x00", 1)[0].decode("utf-8", "replace")
        if self._acked < 0 and code == ErrorCode.OPTION_REFUSED:
            return self._close(Outcome.PROBE, message)
        return self._close(Outcome.CLIENT_ERROR, f"error {code}: {message}")

    def _read(self, first: int, last: int) -> bool:
        """Read blocks first..last (consecutive slots, no wrap) with one scatter read."""
        w, b = self._window, self._blksize
        s0 = (first - 1) % w
        try:
            total = self._source.readv((first - 1) * b, self._bodies[s0 : s0 + last - first + 1])
        except OSError as exc:
            self.detail = f"read error: {exc.strerror or exc}"
            return False
        slots = self._slots
        for k in range(first, last + 1):
            n = min(b, total)
            total -= n
            pack_data_header(slots[(k - 1) % w], 0, k)
            self._read_bytes += n
            self._sent = k
            if n < b:
                self._final = k
                self._final_len = n
                self._single[(k - 1) % w] = (Send(slots[(k - 1) % w][: 4 + n]),)
                break
        return True

    def _send_window(self, now: float, first: int) -> Sequence[Action]:
        """Blocks ``first`` up to the window's end after the last acknowledged block."""
        w = self._window
        if w == 1:
            return self._step(now)
        last = min(self._acked + w, self._final)
        k = self._sent + 1
        while k <= last:
            # Up to the end of the ring, then from its start: each part is one read.
            end = min(last, k + (w - 1 - (k - 1) % w))
            if not self._read(k, end):
                return self._fail_read()
            last = min(last, self._final)
            k = end + 1
        self.deadline = now + self._timeout
        if first > last:
            return NOTHING
        self.packets_sent += last - first + 1
        return self._runs(first, last)

    def _step(self, now: float) -> Sequence[Action]:
        """Lock-step: read and send the block after the acknowledged one (the hot path)."""
        k = self._acked + 1
        if k > self._sent:
            b = self._blksize
            try:
                n = self._readv((k - 1) * b, self._first_body)
            except OSError as exc:
                self.detail = f"read error: {exc.strerror or exc}"
                return self._fail_read()
            self._pack(self._first_slot, 0, 3, k & 0xFFFF)
            self._read_bytes += n
            self._sent = k
            if n < b:
                self._final = k
                self._final_len = n
                self._single[0] = (Send(self._first_slot[: 4 + n]),)
        self.packets_sent += 1
        self.deadline = now + self._timeout
        return self._single[0]

    def _runs(self, first: int, last: int) -> Sequence[Action]:
        """Blocks first..last (all read) as at most two runs of consecutive slots."""
        w, stride = self._window, self._stride
        if w == 1:
            return self._single[(first - 1) % w]
        out: list[Action] = []
        k = first
        while k <= last:
            s0 = (k - 1) % w
            end = min(last, k + (w - 1 - s0))
            stop = ((end - 1) % w + 1) * stride
            if end == self._final:
                stop -= self._blksize - self._final_len
            out.append(Send(self._view[s0 * stride : stop], stride))
            k = end + 1
        return out

    def _fail_read(self) -> tuple[Action, ...]:
        detail = self.detail
        error = Send(build_error(ErrorCode.NOT_DEFINED, "read error"))
        return (error, *self._close(Outcome.SERVER_ERROR, detail))
