"""One transfer's socket and state machine, and a request held while its file refreshes."""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from tftproxy._addr import format_hostport
from tftproxy._limits import LogBudget
from tftproxy.logs import fields
from tftproxy.tftp.backend import OpenFile
from tftproxy.tftp.counters import Counters
from tftproxy.tftp.packets import Request
from tftproxy.tftp.protocol import Outcome, Policy, ReadTransfer, Send, Source, negotiate
from tftproxy.tftp.sources import FileSource, NetasciiSource
from tftproxy.tftp.udp import Address, Listener, LocalAddress, gso_chunk, send_segments

log = logging.getLogger("tftproxy.tftp")

OUTCOME_COUNTER: Final = {
    Outcome.COMPLETE: "complete",
    Outcome.PROBE: "probes",
    Outcome.CLIENT_ERROR: "client_errors",
    Outcome.TIMEOUT: "timeouts",
    Outcome.SERVER_ERROR: "server_errors",
    Outcome.CLIENT_GONE: "client_gone",
    Outcome.SUPERSEDED: "superseded",
    Outcome.SHUTDOWN: "shutdown",
    Outcome.EVICTED: "evicted",
}
_BIG_WINDOW: Final = 128 * 1024


def format_peer(addr: Address) -> str:
    return format_hostport(addr[0], addr[1])


# One budget per worker process for every line a request or transfer costs.
LOG_BUDGET = LogBudget(log)


class Transfer:
    """A running transfer: its connect()ed socket, its machine and the file it reads."""

    __slots__ = ("client", "fd", "gso_chunk", "machine", "mode", "name", "raw", "receive",
                 "recv_into", "send", "served", "sock", "started")

    def __init__(self, sock: socket.socket, machine: ReadTransfer, served: OpenFile,
                 client: Address, raw: bytes, request: Request, started: float) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.machine = machine
        self.served = served
        self.client = client
        self.raw = raw
        self.name = served.name
        self.mode = request.mode
        self.started = started
        # Bound once: the per-packet path looks up nothing it can avoid.
        self.send = sock.send
        self.recv_into = sock.recv_into
        self.receive = machine.receive
        # Bytes per GSO send (whole segments), or 0 to send a run datagram by datagram.
        self.gso_chunk = 0

    def send_run(self, action: Send) -> None:
        """A window's blocks: a few GSO sends, or one send per datagram without GSO."""
        if not send_segments(self.sock, action.packet, action.segment, self.gso_chunk):
            self.gso_chunk = 0

    def close(self) -> None:
        self.sock.close()
        self.served.close()

    def count(self, counters: Counters, final: Outcome, latency: bool = True) -> None:
        """Add what this transfer did to the worker's counters, once it has ended."""
        m = self.machine
        counters.add(OUTCOME_COUNTER[final])
        if latency and final is Outcome.COMPLETE:
            counters.observe_latency(time.monotonic() - self.started)
        counters.add("bytes_sent", m.bytes_acknowledged)
        counters.add("packets_sent", m.packets_sent)
        counters.add("retransmits", m.retransmits)
        counters.add("ignored_packets", m.ignored)

    def log_end(self, final: Outcome) -> None:
        m = self.machine
        level = logging.INFO if final in (Outcome.COMPLETE, Outcome.PROBE) else logging.WARNING
        if log.isEnabledFor(level) and LOG_BUDGET.allow():
            log.log(level, "tftp %s %r %s %s: %d bytes in %.3f s (%d packets, %d resent), %s%s",
                    format_peer(self.client), self.name, self.mode, m.negotiated.describe(),
                    m.bytes_acknowledged, time.monotonic() - self.started, m.packets_sent,
                    m.retransmits, final.value, f": {m.detail}" if m.detail else "",
                    extra=fields(file=self.name, client=format_peer(self.client),
                                 bytes=m.bytes_acknowledged, outcome=final.value))


def open_transfer(lst: Listener, local: LocalAddress | None, client: Address, raw: bytes,
                  request: Request, served: OpenFile, policy: Policy, now: float,
                  epoll: select.epoll) -> Transfer:
    """A transfer of ``served`` to ``client``, its socket registered with ``epoll``."""
    source: Source
    if request.mode == "octet":
        source, size = FileSource(served.fd), served.size
    else:
        source, size = NetasciiSource(served.fd), None  # converted length is unknown
    negotiated = negotiate(request, size, policy)
    sock = lst.reply_socket(local)
    try:
        sock.connect(client)
        window_bytes = negotiated.windowsize * (negotiated.blksize + 4)
        if window_bytes > _BIG_WINDOW:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 2 * window_bytes)
        machine = ReadTransfer(negotiated, source, retries=policy.retries,
                               first_retries=policy.first_retries,
                               first_timeout=policy.first_timeout)
        t = Transfer(sock, machine, served, client, raw, request, now)
        if negotiated.windowsize > 1:
            t.gso_chunk = gso_chunk(negotiated.blksize + 4)
        epoll.register(t.fd, select.EPOLLIN)
    except BaseException:
        sock.close()
        raise
    return t


@dataclass(slots=True)
class Hold:
    """A request for a name being refreshed, answered once it is published (or too late)."""

    listener: Listener
    local: LocalAddress | None
    client: Address
    raw: bytes
    request: Request
    since: float
    deadline: float


class Holds:
    """Requests held while their names refresh, at most ``limit`` at a time."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._by_client: dict[Address, Hold] = {}

    def __bool__(self) -> bool:
        return bool(self._by_client)

    def __len__(self) -> int:
        return len(self._by_client)

    def full(self) -> bool:
        return len(self._by_client) >= self.limit

    def add(self, hold: Hold) -> None:
        self._by_client[hold.client] = hold

    def drop(self, hold: Hold) -> None:
        if self._by_client.get(hold.client) is hold:
            del self._by_client[hold.client]

    def clear(self) -> None:
        self._by_client.clear()

    def due(self, now: float, is_refreshing: Callable[[str], bool]) -> list[Hold]:
        """The holds to answer now (their name is published, or they waited long enough);
        they are dropped from the table."""
        refreshing: dict[str, bool] = {}
        out = []
        for hold in list(self._by_client.values()):
            name = hold.request.filename
            if name not in refreshing:
                refreshing[name] = is_refreshing(name)
            if refreshing[name] and now < hold.deadline:
                continue
            self.drop(hold)
            out.append(hold)
        return out
