"""The TFTP server: sockets, timers and files around the pure :mod:`.protocol` state machine.

One worker is one thread running one epoll loop (:mod:`.loop`) over its listening sockets and
every transfer it serves; this module answers the requests. Several workers are separate
processes (:mod:`.workers`) whose listening sockets share the address through SO_REUSEPORT;
the kernel hashes a client's address to one of them, so a retransmitted request meets the
transfer it duplicates. A window of blocks (RFC 7440) leaves in one sendmsg() with UDP GSO.

Every path decision is the backend's (:class:`.backend.Backend`); the descriptor it returns
pins the version for the whole transfer and blocks are read by offset from it. Who gets a
transfer slot when they run short is :mod:`.slots`' rule.

A worker's parent talks to it over its control pipe, one JSON object a line: ``drain`` (stop
reading requests, finish what runs, then return; see :mod:`.loop`), ``config`` (new limits
for new transfers), ``log``, ``reopen_logs``; EOF means stop now.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from tftproxy.errors import PacketError, Refused
from tftproxy.logs import LogConfig, configure, fields, reopen
from tftproxy.tftp.backend import Backend, OpenFile
from tftproxy.tftp.counters import Counters
from tftproxy.tftp.loop import TransferLoop
from tftproxy.tftp.packets import ErrorCode, Request, build_error, parse_request
from tftproxy.tftp.protocol import Outcome, Policy
from tftproxy.tftp.recent import TransferRing
from tftproxy.tftp.slots import Slots
from tftproxy.tftp.transfers import (
    LOG_BUDGET,
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
_MAX_HOLDS: Final = 1024
_REQUEST_BATCH: Final = 64


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """What a worker needs besides its sockets; crosses to worker processes as JSON."""

    policy: Policy = field(default_factory=Policy)
    refresh_hold: float = 10.0
    max_transfers: int = 1000
    # Transfers (and holds) one client address may have at once.
    max_per_client: int = 32
    # The transfer latency histogram (the counters are always kept).
    metrics: bool = True

    def to_json(self) -> dict[str, Any]:
        p = self.policy
        return {"max_blksize": p.max_blksize, "max_windowsize": p.max_windowsize,
                "window_bytes": p.window_bytes, "timeout": p.timeout, "retries": p.retries,
                "first_retries": p.first_retries, "first_timeout": p.first_timeout,
                "refresh_hold": self.refresh_hold, "max_transfers": self.max_transfers,
                "max_per_client": self.max_per_client, "metrics": self.metrics}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ServerConfig:
        policy = Policy(max_blksize=int(data["max_blksize"]),
                        max_windowsize=int(data["max_windowsize"]),
                        window_bytes=int(data["window_bytes"]), timeout=float(data["timeout"]),
                        retries=int(data["retries"]), first_retries=int(data["first_retries"]),
                        first_timeout=float(data["first_timeout"]))
        return cls(policy=policy, refresh_hold=float(data["refresh_hold"]),
                   max_transfers=int(data["max_transfers"]),
                   max_per_client=int(data["max_per_client"]),
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
        if log.isEnabledFor(logging.INFO) and LOG_BUDGET.allow():
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
        return Refusal(ErrorCode.NOT_DEFINED, "cannot open file", "server_errors",
                       exc.strerror or str(exc))


class TftpServer(TransferLoop):
    """One worker: serves read requests on its listening sockets until :meth:`stop`."""

    def __init__(self, backend: Backend, sockets: Sequence[socket.socket],
                 config: ServerConfig | None = None, counters: Counters | None = None,
                 control_fd: int | None = None, recent: TransferRing | None = None) -> None:
        super().__init__(sockets, counters, control_fd, recent)
        self.backend = backend
        self._by_client: dict[Address, Transfer | Hold] = {}
        self._slots = Slots(ServerConfig().max_per_client)
        self.config = config or ServerConfig()
        self._holds = Holds(_MAX_HOLDS)

    @property
    def config(self) -> ServerConfig:
        return self._config

    @config.setter
    def config(self, config: ServerConfig) -> None:
        """New limits: for new transfers (those running keep what they negotiated)."""
        self._config = config
        self._slots.max_per_client = config.max_per_client

    @classmethod
    def bind(cls, backend: Backend, addresses: Iterable[str],
             config: ServerConfig | None = None) -> TftpServer:
        """A single in-process worker on new sockets (``HOST:PORT``, port 0 for any)."""
        return cls(backend, bind_listeners(addresses), config)

    def close(self) -> None:
        super().close()
        self._holds.clear()
        self._slots.clear()
        self._by_client.clear()

    def _held(self) -> int:
        return len(self._holds)

    def _timed(self) -> bool:
        return self.config.metrics

    def _on_tick(self, now: float) -> None:
        if self._holds:
            self._release_holds(now)

    def _ended(self, t: Transfer) -> None:
        self._slots.free(t.client, t)
        if self._by_client.get(t.client) is t:
            del self._by_client[t.client]

    def _on_control(self, message: dict[str, Any]) -> None:
        op = message.get("op")
        if op == "config":
            self.config = ServerConfig.from_json(message["config"])
        elif op == "log":
            configure(LogConfig.from_json(message["config"]), worker=True)
        elif op == "reopen_logs":
            reopen()
        else:
            super()._on_control(message)

    # ------------------------------------------------------------- requests

    def _on_listener(self, lst: Listener, now: float) -> None:
        for data, local, client, truncated in _datagrams(lst):
            self.counters.add("requests")
            try:
                if truncated:
                    self._refuse(lst, local, client, None, Refusal(
                        ErrorCode.ILLEGAL_OPERATION, "request too long", "bad_requests"))
                else:
                    self._on_request(lst, local, client, data, now)
            except Exception:
                self._bug(client, "request")

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
        # Silence, not an error, when there is no room (see .slots): firmware gives up on an
        # ERROR but retries a silent server.
        if self._slots.host_full(client):
            self.counters.add("busy_client")
            return
        if len(self._transfers) >= self.config.max_transfers:
            victim = self._slots.evictable(self._transfers)
            if victim is None:
                self.counters.add("busy")
                return
            self._finish(victim, Outcome.EVICTED, "every slot was taken; a new request got it")
        self._answer(lst, local, client, data, request, now, may_hold=True)

    def _answer(self, lst: Listener, local: LocalAddress | None, client: Address,
                raw: bytes, request: Request, now: float, *, may_hold: bool) -> None:
        name = request.filename
        # With the client's address, a boot set's members come from the generation that
        # client started on (the store's pins), so it never boots a mixed pair.
        opened = open_for(self.backend, name, client[0])
        if isinstance(opened, Refusal):
            if (opened.code == ErrorCode.FILE_NOT_FOUND and may_hold
                    and self.config.refresh_hold > 0 and self.backend.is_refreshing(name)):
                if self._holds.full():
                    self.counters.add("busy")  # silence: the client asks again later
                    return
                hold = Hold(lst, local, client, raw, request, now,
                            now + self.config.refresh_hold)
                self._holds.add(hold)
                self._by_client[client] = hold
                self._slots.take(client)
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
        self._slots.take(client, t)
        self.counters.add("transfers")
        self.counters.set("active", len(self._transfers))
        self._apply(t, t.machine.start(now))

    def _refuse(self, lst: Listener, local: LocalAddress | None, client: Address,
                request: Request | None, refusal: Refusal) -> None:
        self.counters.add(refusal.counter)
        refusal.send(lst, local, client, request.filename if request is not None else "?")

    # ----------------------------------------------------------------- holds

    def _drop_hold(self, hold: Hold) -> None:
        self._holds.drop(hold)
        self._slots.free(hold.client)
        if self._by_client.get(hold.client) is hold:
            del self._by_client[hold.client]
        self.counters.set("holding", len(self._holds))

    def _release_holds(self, now: float) -> None:
        for hold in self._holds.due(now, self.backend.is_refreshing):
            self._drop_hold(hold)
            log.debug("tftp %s %r: released after %.2f s", format_peer(hold.client),
                      hold.request.filename, now - hold.since)
            # Whatever is published now: the new version, the restored old one, or nothing.
            try:
                self._answer(hold.listener, hold.local, hold.client, hold.raw, hold.request,
                             now, may_hold=False)
            except Exception:
                self._bug(hold.client, "held request")
