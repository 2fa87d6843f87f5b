"""The TFTP server: sockets, timers and files around the pure :mod:`.protocol` state machine.

One worker is one thread running one epoll loop over its listening sockets and every transfer
it serves; each transfer has its own connect()ed UDP socket on an ephemeral port, so the kernel
drops datagrams from any other peer and send()/recv_into() need no address. A single loop per
process (rather than a thread per transfer) is what keeps a boot storm fast in Python: a hundred
threads spend their time handing the GIL around. Several workers are separate processes
(:mod:`.workers`) whose listening sockets share the address through SO_REUSEPORT; the kernel
hashes a client's address to one of them, so a retransmitted request meets the transfer it
duplicates. A window of blocks (RFC 7440) leaves in one sendmsg() with UDP GSO.

Every path decision is the backend's (:class:`.backend.Backend`); the descriptor it returns
pins the version for the whole transfer and blocks are read by offset from it.

A worker's parent talks to it over its control pipe, one JSON object a line: ``drain`` (stop
reading requests, finish what runs, then return), ``config`` (new limits for new
transfers), ``log_level``, ``reopen_logs``; EOF means stop now. Stopping ends the transfers
still running with an ERROR to their clients, each logged.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import select
import socket
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from tftproxy.errors import PacketError, Refused
from tftproxy.logs import LogConfig, configure, fields, reopen
from tftproxy.tftp.backend import Backend, OpenFile
from tftproxy.tftp.control import Wakeup
from tftproxy.tftp.counters import Counters
from tftproxy.tftp.packets import ErrorCode, Request, build_error, parse_request
from tftproxy.tftp.protocol import Action, Close, Outcome, Policy, Send
from tftproxy.tftp.transfers import (
    Hold,
    Holds,
    Transfer,
    format_peer,
    open_transfer,
)
from tftproxy.tftp.udp import (
    CMSG_SPACE,
    Address,
    Listener,
    LocalAddress,
    bind_listeners,
    local_address,
    send_error,
)

log = logging.getLogger("tftproxy.tftp")

# RFC 2347 caps a request at 512 bytes. Up to 4096 are read; a longer one arrives truncated
# (MSG_TRUNC) and is refused rather than parsed from a piece.
_REQUEST_BUFSIZE: Final = 4096
_SCAN_INTERVAL: Final = 0.05
_MAX_HOLDS: Final = 1024
_REQUEST_BATCH: Final = 64


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """What a worker needs besides its sockets; crosses to worker processes as JSON."""

    policy: Policy = field(default_factory=Policy)
    refresh_hold: float = 10.0
    max_transfers: int = 1000
    # The transfer latency histogram (the counters are always kept).
    metrics: bool = True

    def to_json(self) -> dict[str, Any]:
        p = self.policy
        return {"max_blksize": p.max_blksize, "max_windowsize": p.max_windowsize,
                "window_bytes": p.window_bytes, "timeout": p.timeout, "retries": p.retries,
                "refresh_hold": self.refresh_hold, "max_transfers": self.max_transfers,
                "metrics": self.metrics}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ServerConfig:
        policy = Policy(max_blksize=int(data["max_blksize"]),
                        max_windowsize=int(data["max_windowsize"]),
                        window_bytes=int(data["window_bytes"]), timeout=float(data["timeout"]),
                        retries=int(data["retries"]))
        return cls(policy=policy, refresh_hold=float(data["refresh_hold"]),
                   max_transfers=int(data["max_transfers"]),
                   metrics=bool(data.get("metrics", True)))


def _datagrams(lst: Listener) -> Iterator[tuple[bytes, LocalAddress | None, Address, bool]]:
    """(data, where it was sent to, sender, truncated) of the requests waiting on ``lst``.

    A bounded batch per wakeup keeps transfers served while a storm of requests arrives.
    """
    for _ in range(_REQUEST_BATCH):
        try:
            data, ancdata, flags, client = lst.sock.recvmsg(_REQUEST_BUFSIZE, CMSG_SPACE)
        except BlockingIOError:
            return
        except OSError as exc:
            log.debug("listening socket: %s", exc)
            return
        local = local_address(ancdata) if lst.wildcard else None
        yield data, local, client, bool(flags & socket.MSG_TRUNC)


@dataclass(frozen=True, slots=True)
class Refusal:
    """An ERROR to answer a request with, and the counter it goes to."""

    code: int
    message: str
    counter: str
    detail: str = ""

    def send(self, lst: Listener, local: LocalAddress | None, client: Address,
             name: str) -> None:
        """Answer at once, from a new port as a transfer would, and log it."""
        log.info("tftp %s %r: %s (error %d)%s", format_peer(client), name, self.message,
                 self.code, f": {self.detail}" if self.detail else "",
                 extra=fields(file=name, client=format_peer(client), error=self.code))
        try:
            send_error(lst, local, client, build_error(self.code, self.message))
        except OSError as exc:
            log.warning("tftp %s: cannot open a reply socket: %s", format_peer(client), exc)


def unservable(request: Request) -> Refusal | None:
    """Why a well-formed request is not served, whatever it names (None: it may be)."""
    if not request.is_read:
        return Refusal(ErrorCode.ACCESS_VIOLATION, "write requests are not accepted",
                       "write_refused")
    if request.mode not in ("octet", "netascii"):
        return Refusal(ErrorCode.ILLEGAL_OPERATION, f"unsupported mode {request.mode!r}",
                       "bad_requests")
    return None


def open_for(backend: Backend, name: str, client: str) -> OpenFile | Refusal:
    """The file a request names, opened for ``client``, or the ERROR to answer."""
    try:
        return backend.open_served(name, client)
    except FileNotFoundError:
        return Refusal(ErrorCode.FILE_NOT_FOUND, "file not found", "not_found")
    except Refused as exc:
        return Refusal(ErrorCode.ACCESS_VIOLATION, "access violation", "denied", str(exc))
    except OSError as exc:
        if exc.errno in (errno.ENOTDIR, errno.ENAMETOOLONG):
            # "a/b" where a is a file, or a name no file can have: simply not there.
            return Refusal(ErrorCode.FILE_NOT_FOUND, "file not found", "not_found")
        return Refusal(ErrorCode.NOT_DEFINED, "cannot open file", "server_errors",
                       exc.strerror or str(exc))


class _Answering:
    """A worker's state and how it answers requests; :class:`TftpServer` runs it."""

    def __init__(self, backend: Backend, sockets: Sequence[socket.socket],
                 config: ServerConfig | None = None, counters: Counters | None = None,
                 control_fd: int | None = None) -> None:
        self.backend = backend
        self.config = config or ServerConfig()
        self.counters = counters or Counters.local()
        self._listeners = {s.fileno(): Listener(s) for s in sockets}
        self._transfers: dict[int, Transfer] = {}
        self._by_client: dict[Address, Transfer | Hold] = {}
        self._holds = Holds(_MAX_HOLDS)
        self._epoll = select.epoll()
        for fd in self._listeners:
            self._epoll.register(fd, select.EPOLLIN)
        self._wakeup = Wakeup(self._epoll, control_fd)
        self._stopping = False
        self._drain_asked = False
        self._draining = False
        self._closed = False
        self._rbuf = bytearray(2048)

    def _apply(self, t: Transfer, actions: Sequence[Action]) -> None:
        for action in actions:
            if type(action) is Send:
                try:
                    if action.segment and len(action.packet) > action.segment:
                        t.send_run(action)
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

    def _on_listener(self, lst: Listener, now: float) -> None:
        for data, local, client, truncated in _datagrams(lst):
            self.counters.add("requests")
            if truncated:
                self._refuse(lst, local, client, None, Refusal(
                    ErrorCode.ILLEGAL_OPERATION, "request too long", "bad_requests"))
            else:
                self._on_request(lst, local, client, data, now)

    def _on_request(self, lst: Listener, local: LocalAddress | None, client: Address,
                    data: bytes, now: float) -> None:
        if client[1] == 0:
            return  # nothing can be answered to port 0
        try:
            request = parse_request(data)
        except PacketError as exc:
            if len(data) >= 2 and data[0] == 0 and data[1] in (1, 2):
                self._refuse(lst, local, client, None, Refusal(
                    ErrorCode.ILLEGAL_OPERATION, f"malformed request: {exc}", "bad_requests"))
            else:
                # DATA/ACK/ERROR/garbage sent to the service port: answering would make us a
                # reflector, so it is dropped.
                self.counters.add("ignored_packets")
            return
        existing = self._by_client.get(client)
        if existing is not None:
            if existing.raw == data and (isinstance(existing, Hold)
                                         or not existing.machine.progressed):
                # The client retransmitted its request before our first answer reached it;
                # the transfer (or the hold) already in place answers it.
                self.counters.add("duplicate_requests")
                return
            # The same port asks again after seeing our answer: a new request from a client
            # that gave up on, or finished with, the old one.
            if isinstance(existing, Hold):
                self._drop_hold(existing)
            else:
                self._finish(existing, Outcome.SUPERSEDED, "client sent a new request")
        refusal = unservable(request)
        if refusal is not None:
            self._refuse(lst, local, client, request, refusal)
            return
        if len(self._transfers) >= self.config.max_transfers:
            # Silence, not an error: firmware gives up on an ERROR but retries a silent server.
            self.counters.add("busy")
            return
        self._answer(lst, local, client, data, request, now, may_hold=True)

    def _answer(self, lst: Listener, local: LocalAddress | None, client: Address,
                raw: bytes, request: Request, now: float, *, may_hold: bool) -> None:
        name = request.filename
        # With the client's address, a boot set's members come from the generation that
        # client started on (the store's pins), so it never boots a mixed pair.
        opened = open_for(self.backend, name, client[0])
        if isinstance(opened, Refusal):
            if (opened.code == ErrorCode.FILE_NOT_FOUND and may_hold
                    and self.config.refresh_hold > 0 and not self._holds.full()
                    and self.backend.is_refreshing(name)):
                hold = Hold(lst, local, client, raw, request, now,
                            now + self.config.refresh_hold)
                self._holds.add(hold)
                self._by_client[client] = hold
                self.counters.add("held")
                self.counters.set("holding", len(self._holds))
                log.debug("tftp %s %r: held while its new version downloads",
                          format_peer(client), name)
                return
            self._refuse(lst, local, client, request, opened)
            return
        try:
            t = open_transfer(lst, local, client, raw, request, opened, self.config.policy,
                              now, self._epoll)
        except OSError as exc:
            opened.close()
            log.warning("tftp %s %r: cannot start transfer: %s", format_peer(client), name, exc)
            self.counters.add("server_errors")
            return
        self._transfers[t.fd] = self._by_client[client] = t
        self.counters.add("transfers")
        self.counters.set("active", len(self._transfers))
        self._apply(t, t.machine.start(now))

    def _refuse(self, lst: Listener, local: LocalAddress | None, client: Address,
                request: Request | None, refusal: Refusal) -> None:
        self.counters.add(refusal.counter)
        refusal.send(lst, local, client, request.filename if request is not None else "?")

    def _drop_hold(self, hold: Hold) -> None:
        self._holds.drop(hold)
        if self._by_client.get(hold.client) is hold:
            del self._by_client[hold.client]
        self.counters.set("holding", len(self._holds))

    def _release_holds(self, now: float) -> None:
        for hold in self._holds.due(now, self.backend.is_refreshing):
            self._drop_hold(hold)
            log.debug("tftp %s %r: released after %.2f s", format_peer(hold.client),
                      hold.request.filename, now - hold.since)
            # Whatever is published now: the new version, the restored old one, or nothing.
            self._answer(hold.listener, hold.local, hold.client, hold.raw, hold.request, now,
                         may_hold=False)

    def _finish(self, t: Transfer, outcome: Outcome, detail: str = "") -> None:
        if self._transfers.pop(t.fd, None) is None:
            return
        m = t.machine
        m.abort(outcome, detail)
        if self._by_client.get(t.client) is t:
            del self._by_client[t.client]
        with contextlib.suppress(OSError, ValueError):
            self._epoll.unregister(t.fd)
        t.close()
        final = m.outcome or outcome
        t.count(self.counters, final, self.config.metrics)
        self.counters.set("active", len(self._transfers))
        t.log_end(final)


class TftpServer(_Answering):
    """One worker: serves read requests on its listening sockets until :meth:`stop`."""

    @classmethod
    def bind(cls, backend: Backend, addresses: Iterable[str],
             config: ServerConfig | None = None) -> TftpServer:
        """A single in-process worker on new sockets (``HOST:PORT``, port 0 for any)."""
        return cls(backend, bind_listeners(addresses), config)

    @property
    def addresses(self) -> list[tuple[str, int]]:
        return [(lst.host, lst.sock.getsockname()[1]) for lst in self._listeners.values()]

    def stop(self) -> None:
        """Ask :meth:`serve_forever` to return; safe from any thread or a signal handler."""
        self._stopping = True
        self._wakeup.wake()

    def drain(self) -> None:
        """Stop reading requests; :meth:`serve_forever` returns once the transfers and held
        requests in progress are done. Safe from any thread or a signal handler."""
        self._drain_asked = True
        self._wakeup.wake()

    @property
    def in_progress(self) -> int:
        return len(self._transfers) + len(self._holds)

    def _start_drain(self) -> None:
        if self._draining:
            return
        self._draining = True
        for fd in self._listeners:
            with contextlib.suppress(OSError, ValueError):
                self._epoll.unregister(fd)
        log.info("TFTP worker draining: no new requests; %d transfer(s) and %d held "
                 "request(s) in progress", len(self._transfers), len(self._holds))

    def _on_control(self, message: dict[str, Any]) -> None:
        op = message.get("op")
        if op == "drain":
            self._start_drain()
        elif op == "config":
            self.config = ServerConfig.from_json(message["config"])
        elif op == "log":
            configure(LogConfig.from_json(message["config"]), worker=True)
        elif op == "reopen_logs":
            reopen()
        else:
            log.warning("unknown control message %r", op)

    def close(self) -> None:
        """Release everything; transfers still running end as ``shutdown``, and their
        clients get an ERROR rather than silence."""
        if self._closed:
            return
        self._closed = True
        if self._transfers:
            log.warning("TFTP worker stopping: ending %d transfer(s) in progress",
                        len(self._transfers))
        goodbye = build_error(ErrorCode.NOT_DEFINED, "server shutting down")
        for t in list(self._transfers.values()):
            with contextlib.suppress(OSError):
                t.send(goodbye)
            self._finish(t, Outcome.SHUTDOWN, "server stopping")
        self._holds.clear()
        self._by_client.clear()
        for lst in self._listeners.values():
            lst.sock.close()
        self._epoll.close()
        self._wakeup.close()

    def serve_forever(self) -> None:
        transfers = self._transfers
        listeners = self._listeners
        rbuf = self._rbuf
        wakeup = self._wakeup
        poll = self._epoll.poll
        monotonic = time.monotonic
        next_scan = 0.0
        while not self._stopping:
            if self._drain_asked:
                self._start_drain()
            if self._draining and not transfers and not self._holds:
                log.info("TFTP worker drained: every transfer finished")
                return
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
                elif fd in wakeup.fds:
                    messages = wakeup.read(fd)
                    if messages is None:
                        self._stopping = True
                    else:
                        for message in messages:
                            self._on_control(message)
                # Anything else is a transfer finished earlier in this batch: nothing to read.
            if now >= next_scan:
                self._scan(now)
                next_scan = now + _SCAN_INTERVAL

    def _scan(self, now: float) -> None:
        for t in list(self._transfers.values()):
            if now >= t.machine.deadline:
                actions = t.machine.on_timer(now)
                if actions:
                    self._apply(t, actions)
        if self._holds:
            self._release_holds(now)
