"""The TFTP server: sockets, timers and files around the pure :mod:`.protocol` state machine.

One worker is one thread running one epoll loop over its listening sockets and every transfer
it serves; each transfer has its own connect()ed UDP socket on an ephemeral port, so the kernel
drops datagrams from any other peer and send()/recv_into() need no address. A single loop per
process (rather than a thread per transfer) is what keeps a boot storm fast in Python: a hundred
threads spend their time handing the GIL around. Several workers are separate processes whose
listening sockets share the address through SO_REUSEPORT; the kernel hashes a client's address
to one of them, so a retransmitted request meets the transfer it duplicates. A window of
blocks (RFC 7440) leaves in one sendmsg() with UDP GSO, the kernel cutting it into datagrams.

Every path decision is the store's (:meth:`BootStore.open_served`); the descriptor it returns
pins the version for the whole transfer and blocks are read by offset from it.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import mmap
import os
import resource
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from tftproxy.store import AccessDenied, BootStore, ServedFile
from tftproxy.tftp.packets import (
    ErrorCode,
    PacketError,
    Request,
    build_error,
    netascii_encode,
    parse_request,
)
from tftproxy.tftp.protocol import (
    Action,
    Close,
    Outcome,
    Policy,
    ReadTransfer,
    Send,
    Source,
    negotiate,
)

if TYPE_CHECKING:
    # Workers never import the settings (pydantic alone would double their memory).
    from tftproxy.config import Settings

log = logging.getLogger("tftproxy.tftp")

IP_PKTINFO: Final = getattr(socket, "IP_PKTINFO", 8)  # Linux value; absent from Python 3.11
UDP_SEGMENT: Final = getattr(socket, "UDP_SEGMENT", 103)  # Linux >= 4.18: UDP GSO
_GSO_MAX_SEGMENTS: Final = 64
_GSO_MAX_BYTES: Final = 65000  # a GSO send is one UDP datagram to the stack until it splits
_PKTINFO4 = struct.Struct("=I4s4s")  # struct in_pktinfo: ifindex, spec_dst, addr
_PKTINFO6 = struct.Struct("=16sI")  # struct in6_pktinfo: addr, ifindex
_CMSG_SPACE: Final = socket.CMSG_SPACE(_PKTINFO6.size)
# RFC 2347 caps a request at 512 bytes. Up to 4096 are read; a longer one arrives truncated
# (MSG_TRUNC) and is refused rather than parsed from a piece.
_REQUEST_BUFSIZE: Final = 4096
_SCAN_INTERVAL: Final = 0.05
_MAX_HOLDS: Final = 1024
_LISTEN_RCVBUF: Final = 1 << 20

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
    "busy",                # requests dropped at tftp_max_transfers
    "bytes_sent",          # payload bytes acknowledged by clients
    "packets_sent",
    "retransmits",
    "ignored_packets",     # duplicate/stale ACKs and stray datagrams on transfer sockets
    "active",              # gauge: transfers in progress
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

    def snapshot(self) -> dict[str, int]:
        return read_counters(self._buf, 1, self._base)


def read_counters(buf: mmap.mmap | bytearray, slots: int, base: int = 0) -> dict[str, int]:
    totals = dict.fromkeys(COUNTER_NAMES, 0)
    for slot in range(slots):
        start = base + slot * Counters.SLOT_BYTES
        for i, name in enumerate(COUNTER_NAMES):
            totals[name] += _U64.unpack_from(buf, start + i * 8)[0]
    return totals


# ------------------------------------------------------------------- sources


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


# ------------------------------------------------------------------- config


@dataclass(frozen=True, slots=True)
class ServerConfig:
    policy: Policy = field(default_factory=Policy)
    refresh_hold: float = 10.0
    max_transfers: int = 1000

    @classmethod
    def from_settings(cls, settings: Settings) -> ServerConfig:
        return cls(
            policy=Policy(
                max_blksize=settings.tftp_max_blksize,
                max_windowsize=settings.tftp_max_windowsize,
                timeout=settings.tftp_timeout,
                retries=settings.tftp_retries,
            ),
            refresh_hold=settings.refresh_hold,
            max_transfers=settings.tftp_max_transfers,
        )

    def to_json(self) -> dict[str, Any]:
        p = self.policy
        return {"max_blksize": p.max_blksize, "max_windowsize": p.max_windowsize,
                "window_bytes": p.window_bytes, "timeout": p.timeout, "retries": p.retries,
                "refresh_hold": self.refresh_hold, "max_transfers": self.max_transfers}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ServerConfig:
        policy = Policy(max_blksize=int(data["max_blksize"]),
                        max_windowsize=int(data["max_windowsize"]),
                        window_bytes=int(data["window_bytes"]), timeout=float(data["timeout"]),
                        retries=int(data["retries"]))
        return cls(policy=policy, refresh_hold=float(data["refresh_hold"]),
                   max_transfers=int(data["max_transfers"]))


# ------------------------------------------------------------------ sockets


def _is_wildcard(host: str) -> bool:
    return host in ("", "*", "0.0.0.0", "::")


def listen_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` as given in tftp_listen (port 69 if omitted; ``*`` is every IPv4 address)."""
    from tftproxy.config import parse_hostport

    host, port = parse_hostport(text, default_port=69)
    return ("0.0.0.0" if host == "*" else host), port


def bind_listener(host: str, port: int, *, reuseport: bool = False) -> socket.socket:
    """A listening UDP socket; on a wildcard address it reports each request's destination."""
    family, _, _, _, sockaddr = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0]
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if reuseport:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            # Explicit families: 0.0.0.0:69 and [::]:69 may both be listed without conflict.
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _LISTEN_RCVBUF)
        if _is_wildcard(host):
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
            else:
                sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
        sock.bind(sockaddr)
    except BaseException:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


def _local_address(ancdata: list[tuple[int, int, bytes]]) -> tuple[str, int] | None:
    """The (address, ifindex) a request was sent to, from IP_PKTINFO / IPV6_PKTINFO."""
    for level, kind, data in ancdata:
        if level == socket.IPPROTO_IP and kind == IP_PKTINFO and len(data) >= _PKTINFO4.size:
            ifindex, _, addr = _PKTINFO4.unpack_from(data)
            return socket.inet_ntop(socket.AF_INET, addr), ifindex
        if (level == socket.IPPROTO_IPV6 and kind == socket.IPV6_PKTINFO
                and len(data) >= _PKTINFO6.size):
            addr6, ifindex = _PKTINFO6.unpack_from(data)
            return socket.inet_ntop(socket.AF_INET6, addr6), ifindex
    return None


def _format_peer(addr: tuple[Any, ...]) -> str:
    host, port = addr[0], addr[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class _Listener:
    __slots__ = ("family", "host", "sock", "wildcard")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.family = sock.family
        self.host = sock.getsockname()[0]
        self.wildcard = _is_wildcard(self.host)


class _Transfer:
    __slots__ = ("client", "fd", "gso_chunk", "machine", "mode", "name", "raw", "receive",
                 "recv_into", "send", "served", "sock", "started")

    def __init__(self, sock: socket.socket, machine: ReadTransfer, served: ServedFile,
                 client: tuple[Any, ...], raw: bytes, request: Request, started: float) -> None:
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


@dataclass(slots=True)
class _Hold:
    listener: _Listener
    local: tuple[str, int] | None
    client: tuple[Any, ...]
    raw: bytes
    request: Request
    since: float
    deadline: float


# ------------------------------------------------------------------- server


class TftpServer:
    """One worker: serves read requests on its listening sockets until :meth:`stop`."""

    def __init__(
        self,
        store: BootStore,
        sockets: Sequence[socket.socket],
        config: ServerConfig | None = None,
        counters: Counters | None = None,
        control_fd: int | None = None,
    ) -> None:
        self.store = store
        self.config = config or ServerConfig()
        self.counters = counters or Counters.local()
        self._listeners = {s.fileno(): _Listener(s) for s in sockets}
        for s in sockets:
            s.setblocking(False)
        self._transfers: dict[int, _Transfer] = {}
        self._by_client: dict[tuple[Any, ...], _Transfer | _Hold] = {}
        self._holds: dict[tuple[Any, ...], _Hold] = {}
        self._epoll = select.epoll()
        for fd in self._listeners:
            self._epoll.register(fd, select.EPOLLIN)
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._epoll.register(self._wake_r, select.EPOLLIN)
        self._control_fd = control_fd
        if control_fd is not None:
            self._epoll.register(control_fd, select.EPOLLIN)
        self._stopping = False
        self._closed = False
        self._rbuf = bytearray(2048)

    @classmethod
    def bind(cls, store: BootStore, addresses: Iterable[str],
             config: ServerConfig | None = None) -> TftpServer:
        """A single in-process worker on new sockets (``HOST:PORT``, port 0 for any)."""
        sockets: list[socket.socket] = []
        try:
            for text in addresses:
                sockets.append(bind_listener(*listen_address(text)))
        except BaseException:
            for s in sockets:
                s.close()
            raise
        return cls(store, sockets, config)

    @property
    def addresses(self) -> list[tuple[str, int]]:
        return [(lst.host, lst.sock.getsockname()[1]) for lst in self._listeners.values()]

    def stop(self) -> None:
        """Ask :meth:`serve_forever` to return; safe from any thread or a signal handler."""
        self._stopping = True
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")

    def close(self) -> None:
        """Release everything; transfers still running end as ``shutdown``."""
        if self._closed:
            return
        self._closed = True
        for t in list(self._transfers.values()):
            self._finish(t, Outcome.SHUTDOWN, "server stopping")
        self._holds.clear()
        self._by_client.clear()
        for lst in self._listeners.values():
            lst.sock.close()
        self._epoll.close()
        os.close(self._wake_r)
        os.close(self._wake_w)

    # ----------------------------------------------------------------- loop

    def serve_forever(self) -> None:
        transfers = self._transfers
        listeners = self._listeners
        rbuf = self._rbuf
        poll = self._epoll.poll
        monotonic = time.monotonic
        next_scan = 0.0
        while not self._stopping:
            # Idle: sleep until a request arrives, with no periodic wakeups.
            busy = transfers or self._holds
            timeout = max(0.0, next_scan - monotonic()) if busy else -1.0
            try:
                events = poll(timeout)
            except InterruptedError:  # pragma: no cover - PEP 475 retries; belt and braces
                continue
            now = monotonic()
            for fd, _ in events:
                t = transfers.get(fd)
                if t is not None:
                    try:
                        n = t.recv_into(rbuf)
                    except BlockingIOError:
                        continue
                    except OSError as exc:
                        # ICMP port unreachable, reported on the connected socket.
                        self._finish(t, Outcome.CLIENT_GONE, exc.strerror or str(exc))
                        continue
                    actions = t.receive(rbuf, now, n)
                    if len(actions) == 1 and type(a := actions[0]) is Send and not a.segment:
                        # Lock-step's one block: sent here, without a call to _apply.
                        try:
                            t.send(a.packet)
                        except BlockingIOError:
                            pass
                        except OSError as exc:
                            self._finish(t, Outcome.CLIENT_GONE, exc.strerror or str(exc))
                    elif actions:
                        self._apply(t, actions)
                elif fd in listeners:
                    self._on_listener(listeners[fd], now)
                elif fd == self._wake_r:
                    with contextlib.suppress(OSError):
                        os.read(fd, 64)
                elif fd == self._control_fd:
                    # The parent closed its end (or died): this worker is done.
                    with contextlib.suppress(OSError):
                        if not os.read(fd, 64):
                            self._stopping = True
                # Anything else is a transfer finished earlier in this batch: nothing to read.
            if now >= next_scan:
                self._scan(now)
                next_scan = now + _SCAN_INTERVAL

    def _apply(self, t: _Transfer, actions: Sequence[Action]) -> None:
        for action in actions:
            if type(action) is Send:
                try:
                    if action.segment and len(action.packet) > action.segment:
                        _send_run(t, action)
                    else:
                        t.send(action.packet)
                except BlockingIOError:
                    pass  # socket buffer full: the block counts as lost, the timer resends it
                except OSError as exc:
                    self._finish(t, Outcome.CLIENT_GONE, exc.strerror or str(exc))
                    return
            elif type(action) is Close:
                self._finish(t, action.outcome, action.detail)
                return

    def _scan(self, now: float) -> None:
        for t in list(self._transfers.values()):
            if now >= t.machine.deadline:
                actions = t.machine.on_timer(now)
                if actions:
                    self._apply(t, actions)
        if self._holds:
            self._release_holds(now)

    # ------------------------------------------------------------- requests

    def _on_listener(self, lst: _Listener, now: float) -> None:
        # A bounded batch per wakeup keeps transfers served while a storm of requests arrives.
        for _ in range(64):
            try:
                data, ancdata, flags, client = lst.sock.recvmsg(_REQUEST_BUFSIZE, _CMSG_SPACE)
            except BlockingIOError:
                return
            except OSError as exc:
                log.debug("listening socket: %s", exc)
                return
            self.counters.add("requests")
            local = _local_address(ancdata) if lst.wildcard else None
            if flags & socket.MSG_TRUNC:
                self._refuse(lst, local, client, None, ErrorCode.ILLEGAL_OPERATION,
                             "request too long", "bad_requests")
                continue
            self._on_request(lst, local, client, data, now)

    def _on_request(self, lst: _Listener, local: tuple[str, int] | None,
                    client: tuple[Any, ...], data: bytes, now: float) -> None:
        if client[1] == 0:
            return  # nothing can be answered to port 0
        try:
            request = parse_request(data)
        except PacketError as exc:
            if len(data) >= 2 and data[0] == 0 and data[1] in (1, 2):
                self._refuse(lst, local, client, None, ErrorCode.ILLEGAL_OPERATION,
                             f"malformed request: {exc}", "bad_requests")
            else:
                # DATA/ACK/ERROR/garbage sent to the service port: answering would make us a
                # reflector, so it is dropped.
                self.counters.add("ignored_packets")
            return
        existing = self._by_client.get(client)
        if existing is not None:
            if existing.raw == data and (isinstance(existing, _Hold)
                                         or not existing.machine.progressed):
                # The client retransmitted its request before our first answer reached it;
                # the transfer (or the hold) already in place answers it.
                self.counters.add("duplicate_requests")
                return
            # The same port asks again after seeing our answer: a new request from a client
            # that gave up on, or finished with, the old one.
            if isinstance(existing, _Hold):
                self._drop_hold(existing)
            else:
                self._finish(existing, Outcome.SUPERSEDED, "client sent a new request")
        if not request.is_read:
            self._refuse(lst, local, client, request, ErrorCode.ACCESS_VIOLATION,
                         "write requests are not accepted", "write_refused")
            return
        if request.mode not in ("octet", "netascii"):
            self._refuse(lst, local, client, request, ErrorCode.ILLEGAL_OPERATION,
                         f"unsupported mode {request.mode!r}", "bad_requests")
            return
        if len(self._transfers) >= self.config.max_transfers:
            # Silence, not an error: firmware gives up on an ERROR but retries a silent server.
            self.counters.add("busy")
            return
        self._answer(lst, local, client, data, request, now, may_hold=True)

    def _answer(self, lst: _Listener, local: tuple[str, int] | None, client: tuple[Any, ...],
                raw: bytes, request: Request, now: float, *, may_hold: bool) -> None:
        try:
            # With the client's address, a boot set's members come from the generation that
            # client started on (the store's pins), so it never boots a mixed pair.
            served = self.store.open_served(request.filename, client=client[0])
        except FileNotFoundError:
            if (may_hold and self.config.refresh_hold > 0 and len(self._holds) < _MAX_HOLDS
                    and self.store.is_refreshing(request.filename)):
                hold = _Hold(lst, local, client, raw, request, now,
                             now + self.config.refresh_hold)
                self._holds[client] = hold
                self._by_client[client] = hold
                self.counters.add("held")
                log.debug("tftp %s %r: held while its new version downloads",
                          _format_peer(client), request.filename)
                return
            self._refuse(lst, local, client, request, ErrorCode.FILE_NOT_FOUND,
                         "file not found", "not_found")
            return
        except AccessDenied as exc:
            self._refuse(lst, local, client, request, ErrorCode.ACCESS_VIOLATION,
                         "access violation", "denied", str(exc))
            return
        except OSError as exc:
            if exc.errno in (errno.ENOTDIR, errno.ENAMETOOLONG):
                # "a/b" where a is a file, or a name no file can have: simply not there.
                self._refuse(lst, local, client, request, ErrorCode.FILE_NOT_FOUND,
                             "file not found", "not_found")
                return
            self._refuse(lst, local, client, request, ErrorCode.NOT_DEFINED,
                         "cannot open file", "server_errors", exc.strerror or str(exc))
            return
        try:
            self._start(lst, local, client, raw, request, served, now)
        except OSError as exc:
            served.close()
            log.warning("tftp %s %r: cannot start transfer: %s", _format_peer(client),
                        request.filename, exc)
            self.counters.add("server_errors")

    def _start(self, lst: _Listener, local: tuple[str, int] | None, client: tuple[Any, ...],
               raw: bytes, request: Request, served: ServedFile, now: float) -> None:
        source: Source
        if request.mode == "octet":
            source, size = FileSource(served.fd), served.size
        else:
            source, size = NetasciiSource(served.fd), None  # converted length is unknown
        negotiated = negotiate(request, size, self.config.policy)
        sock = self._reply_socket(lst, local)
        try:
            sock.connect(client)
            window_bytes = negotiated.windowsize * (negotiated.blksize + 4)
            if window_bytes > 128 * 1024:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 2 * window_bytes)
            machine = ReadTransfer(negotiated, source, retries=self.config.policy.retries)
            t = _Transfer(sock, machine, served, client, raw, request, now)
            if negotiated.windowsize > 1:
                t.gso_chunk = _gso_chunk(negotiated.blksize + 4)
            self._epoll.register(t.fd, select.EPOLLIN)
        except BaseException:
            sock.close()
            raise
        self._transfers[t.fd] = t
        self._by_client[client] = t
        self.counters.add("transfers")
        self.counters.set("active", len(self._transfers))
        self._apply(t, machine.start(now))

    def _reply_socket(self, lst: _Listener, local: tuple[str, int] | None) -> socket.socket:
        """A socket on a new port, sending from the address the client sent its request to."""
        sock = socket.socket(lst.family, socket.SOCK_DGRAM)
        try:
            if local is not None:
                host, ifindex = local
                if lst.family == socket.AF_INET6:
                    sock.bind((host, 0, 0, ifindex if host.startswith("fe80") else 0))
                else:
                    sock.bind((host, 0))
            elif lst.family == socket.AF_INET6:
                sock.bind((lst.host, 0, 0, 0))
            else:
                sock.bind((lst.host, 0))
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        return sock

    def _refuse(self, lst: _Listener, local: tuple[str, int] | None, client: tuple[Any, ...],
                request: Request | None, code: int, message: str, counter: str,
                detail: str = "") -> None:
        """Answer a request with an ERROR at once, from a new port as a transfer would."""
        self.counters.add(counter)
        name = request.filename if request is not None else "?"
        log.info("tftp %s %r: %s (error %d)%s", _format_peer(client), name, message, code,
                 f": {detail}" if detail else "")
        try:
            sock = self._reply_socket(lst, local)
        except OSError as exc:
            log.warning("tftp %s: cannot open a reply socket: %s", _format_peer(client), exc)
            return
        with contextlib.closing(sock), contextlib.suppress(OSError):
            sock.sendto(build_error(code, message), client)

    # ----------------------------------------------------------------- holds

    def _drop_hold(self, hold: _Hold) -> None:
        self._holds.pop(hold.client, None)
        if self._by_client.get(hold.client) is hold:
            del self._by_client[hold.client]

    def _release_holds(self, now: float) -> None:
        refreshing: dict[str, bool] = {}
        for hold in list(self._holds.values()):
            name = hold.request.filename
            if name not in refreshing:
                refreshing[name] = self.store.is_refreshing(name)
            if refreshing[name] and now < hold.deadline:
                continue
            self._drop_hold(hold)
            log.debug("tftp %s %r: released after %.2f s", _format_peer(hold.client), name,
                      now - hold.since)
            # Whatever is published now: the new version, the restored old one, or nothing.
            self._answer(hold.listener, hold.local, hold.client, hold.raw, hold.request, now,
                         may_hold=False)

    # --------------------------------------------------------------- finish

    def _finish(self, t: _Transfer, outcome: Outcome, detail: str = "") -> None:
        if self._transfers.pop(t.fd, None) is None:
            return
        m = t.machine
        m.abort(outcome, detail)
        if self._by_client.get(t.client) is t:
            del self._by_client[t.client]
        with contextlib.suppress(OSError, ValueError):
            self._epoll.unregister(t.fd)
        t.sock.close()
        t.served.close()
        final = m.outcome or outcome
        c = self.counters
        c.add(_OUTCOME_COUNTER[final])
        c.add("bytes_sent", m.bytes_acknowledged)
        c.add("packets_sent", m.packets_sent)
        c.add("retransmits", m.retransmits)
        c.add("ignored_packets", m.ignored)
        c.set("active", len(self._transfers))
        elapsed = time.monotonic() - t.started
        level = logging.INFO if final in (Outcome.COMPLETE, Outcome.PROBE) else logging.WARNING
        if log.isEnabledFor(level):
            log.log(level, "tftp %s %r %s %s: %d bytes in %.3f s (%d packets, %d resent), %s%s",
                    _format_peer(t.client), t.name, t.mode, m.negotiated.describe(),
                    m.bytes_acknowledged, elapsed, m.packets_sent, m.retransmits, final.value,
                    f": {m.detail}" if m.detail else "")


def _gso_chunk(segment: int) -> int:
    """Bytes per GSO send for runs of ``segment``-sized datagrams (0: not worth it)."""
    segments = min(_GSO_MAX_SEGMENTS, _GSO_MAX_BYTES // segment)
    return segments * segment if segments >= 2 else 0


def _send_run(t: _Transfer, action: Send) -> None:
    """A window's blocks: a few GSO sends, or one send per datagram without GSO.

    The segment size travels with each send (a control message), not as a socket option: a
    socket-wide UDP_SEGMENT would also cut an OACK or ERROR longer than a tiny block.
    """
    packet, segment = action.packet, action.segment
    chunk = t.gso_chunk
    if chunk:
        cmsg = [(socket.SOL_UDP, UDP_SEGMENT, struct.pack("=H", segment))]
        sendmsg = t.sock.sendmsg
        try:
            for i in range(0, len(packet), chunk):
                sendmsg((packet[i : i + chunk],), cmsg)
            return
        except OSError as exc:
            if exc.errno not in (errno.EIO, errno.EINVAL, errno.EMSGSIZE, errno.EOPNOTSUPP,
                                 errno.ENOPROTOOPT):
                raise
            # No UDP GSO on this kernel or route: send datagram by datagram from now on.
            t.gso_chunk = 0
    send = t.send
    for i in range(0, len(packet), segment):
        send(packet[i : i + segment])


_OUTCOME_COUNTER: Final = {
    Outcome.COMPLETE: "complete",
    Outcome.PROBE: "probes",
    Outcome.CLIENT_ERROR: "client_errors",
    Outcome.TIMEOUT: "timeouts",
    Outcome.SERVER_ERROR: "server_errors",
    Outcome.CLIENT_GONE: "client_gone",
    Outcome.SUPERSEDED: "superseded",
    Outcome.SHUTDOWN: "shutdown",
}


# ------------------------------------------------------------------ workers


def _raise_fd_limit(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def _worker_main(spec_text: str) -> int:
    """Entry point of a worker process (see :class:`TftpHandle`)."""
    spec = json.loads(spec_text)
    logging.basicConfig(level=int(spec["log_level"]),
                        format="%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s")
    # Ctrl-C reaches the whole process group; the parent decides when workers stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    config = ServerConfig.from_json(spec["config"])
    _raise_fd_limit(2 * config.max_transfers + 64)
    sockets = [socket.socket(fileno=fd) for fd in spec["listen_fds"]]
    counters_map = mmap.mmap(spec["counters_fd"], 0)
    os.close(spec["counters_fd"])
    counters = Counters(counters_map, spec["slot"])
    store = BootStore(spec["root"], create=False, pin_window=float(spec["pin_window"]))
    server = TftpServer(store, sockets, config, counters,
                        control_fd=spec["control_fd"])
    signal.signal(signal.SIGTERM, lambda *_: server.stop())
    try:
        server.serve_forever()
    finally:
        server.close()
    return 0


class TftpHandle:
    """TFTP worker processes serving a store; :meth:`close` stops them all.

    The listening sockets are bound here, in the parent, so a bad address fails the caller
    at once and requests queue in the kernel while a worker starts or is restarted.
    """

    def __init__(self, store: BootStore, addresses: Sequence[str], workers: int = 1,
                 config: ServerConfig | None = None, *, local_worker: bool = False) -> None:
        self.store = store
        # Worker 0 runs in the caller's process (see local_server) instead of a child.
        self.local_worker = local_worker
        self.config = config or ServerConfig()
        self.workers = workers
        self._closing = threading.Event()
        self._sockets: list[list[socket.socket]] = [[] for _ in range(workers)]
        self.addresses: list[tuple[str, int]] = []
        self._procs: list[subprocess.Popen[bytes] | None] = [None] * workers
        self._controls: list[int] = [-1] * workers
        self._restarts: list[float] = []
        self._counters: mmap.mmap | None = None
        self._counters_fd = -1
        self._supervisor: threading.Thread | None = None
        self.final_counters: dict[str, int] | None = None
        try:
            for text in addresses:
                host, port = listen_address(text)
                try:
                    first = bind_listener(host, port, reuseport=workers > 1)
                except OSError as exc:
                    raise OSError(exc.errno, f"cannot serve TFTP on {text}: "
                                             f"{exc.strerror or exc}") from None
                self._sockets[0].append(first)
                bound = first.getsockname()
                self.addresses.append((bound[0], bound[1]))
                for i in range(1, workers):
                    self._sockets[i].append(bind_listener(host, bound[1], reuseport=True))
            self._counters_fd = os.memfd_create("tftproxy-counters", os.MFD_CLOEXEC)
            os.ftruncate(self._counters_fd, Counters.SLOT_BYTES * workers)
            self._counters = mmap.mmap(self._counters_fd, 0)
            for i in range(1 if local_worker else 0, workers):
                self._spawn(i)
        except BaseException:
            self.close()
            raise
        self._supervisor = threading.Thread(target=self._supervise, name="tftp-supervisor",
                                            daemon=True)
        self._supervisor.start()

    def _spawn(self, i: int) -> None:
        control_r, control_w = os.pipe2(os.O_CLOEXEC)
        listen_fds = [s.fileno() for s in self._sockets[i]]
        spec = {
            "root": str(self.store.root),
            "pin_window": self.store.pin_window,
            "listen_fds": listen_fds,
            "counters_fd": self._counters_fd,
            "slot": i,
            "control_fd": control_r,
            "config": self.config.to_json(),
            "log_level": logging.getLogger("tftproxy").getEffectiveLevel(),
        }
        try:
            proc = subprocess.Popen(
                [sys.executable, "-c",
                 "import sys; from tftproxy.tftp.server import _worker_main; "
                 "sys.exit(_worker_main(sys.argv[1]))", json.dumps(spec)],
                pass_fds=[*listen_fds, self._counters_fd, control_r],
                stdin=subprocess.DEVNULL,
            )
        except BaseException:
            os.close(control_w)
            raise
        finally:
            os.close(control_r)
        self._procs[i] = proc
        self._controls[i] = control_w

    def _supervise(self) -> None:
        while not self._closing.wait(0.5):
            for i, proc in enumerate(self._procs):
                if proc is None or proc.poll() is None or self._closing.is_set():
                    continue
                now = time.monotonic()
                self._restarts = [t for t in self._restarts if now - t < 60] + [now]
                with contextlib.suppress(OSError):
                    os.close(self._controls[i])
                self._controls[i] = -1
                if len(self._restarts) > 5 * self.workers:
                    log.error("TFTP worker %d exited with %s; too many restarts, giving up",
                              i, proc.returncode)
                    self._procs[i] = None
                    continue
                log.warning("TFTP worker %d exited with %s; restarting it", i, proc.returncode)
                try:
                    self._spawn(i)
                except OSError as exc:
                    log.error("cannot restart TFTP worker %d: %s", i, exc)
                    self._procs[i] = None

    def local_server(self) -> TftpServer:
        """Worker 0, for the calling thread to run (with ``local_worker=True``)."""
        if not self.local_worker or self._counters is None:
            raise RuntimeError("this handle has no local worker")
        return TftpServer(self.store, self._sockets[0], self.config,
                          Counters(self._counters, 0))

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._procs if p is not None]

    def counters(self) -> dict[str, int]:
        """Totals over all workers (``active`` is the number of transfers in progress)."""
        if self._counters is not None:
            return read_counters(self._counters, self.workers)
        return self.final_counters or dict.fromkeys(COUNTER_NAMES, 0)

    def close(self, timeout: float = 5.0) -> None:
        """Stop the workers (transfers in progress end) and release the addresses."""
        self._closing.set()
        supervisor = self._supervisor
        if supervisor is not None and supervisor is not threading.current_thread():
            supervisor.join()
        for i, fd in enumerate(self._controls):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)  # EOF on the control pipe: the worker's cue to stop
                self._controls[i] = -1
        deadline = time.monotonic() + timeout
        for i, proc in enumerate(self._procs):
            if proc is None:
                continue
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            self._procs[i] = None
        for group in self._sockets:
            for s in group:
                s.close()
            group.clear()
        if self._counters is not None:
            self.final_counters = read_counters(self._counters, self.workers)
            self._counters.close()
            self._counters = None
        if self._counters_fd >= 0:
            os.close(self._counters_fd)
            self._counters_fd = -1

    def __enter__(self) -> TftpHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def start_tftp(settings: Settings, store: BootStore) -> TftpHandle:
    """Serve ``store`` over TFTP on ``settings.tftp_listen`` in worker processes.

    Returns once the addresses are bound (raises OSError if one cannot be); the workers
    answer from then on. ``handle.close()`` stops them.
    """
    return TftpHandle(store, settings.tftp_listen, settings.tftp_workers,
                      ServerConfig.from_settings(settings))


def run_tftpd(settings: Settings, addresses: Sequence[str]) -> int:
    """``tftproxy tftpd``: serve the root over TFTP in the foreground until SIGINT/SIGTERM.

    This process is worker 0; ``tftp_workers - 1`` child processes share the addresses.
    """
    if not os.path.isdir(settings.tftproot):
        log.error("TFTP root %s is not a directory", settings.tftproot)
        return 2
    store = BootStore(settings.tftproot, create=False, pin_window=settings.pin_window)
    config = ServerConfig.from_settings(settings)
    _raise_fd_limit(2 * config.max_transfers + 64)
    try:
        handle = TftpHandle(store, addresses, settings.tftp_workers, config, local_worker=True)
    except OSError as exc:
        log.error("%s", exc.strerror or exc)
        return 1
    with handle:
        server = handle.local_server()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: server.stop())
        for host, port in handle.addresses:
            log.info("TFTP on %s, %d worker(s), root %s", _format_peer((host, port)),
                     settings.tftp_workers, store.root)
        try:
            server.serve_forever()
        finally:
            server.close()
    return 0


__all__ = [
    "COUNTER_NAMES",
    "Counters",
    "FileSource",
    "NetasciiSource",
    "ServerConfig",
    "TftpHandle",
    "TftpServer",
    "bind_listener",
    "listen_address",
    "read_counters",
    "run_tftpd",
    "start_tftp",
]
