"""One TFTP worker's event loop: epoll over its listening sockets and every transfer it serves.

Each transfer has its own connect()ed UDP socket on an ephemeral port, so the kernel drops
datagrams from any other peer and send()/recv_into() need no address. A single loop per
process (rather than a thread per transfer) is what keeps a boot storm fast in Python: a
hundred threads spend their time handing the GIL around. What a request on a listening socket
means is :class:`tftproxy.tftp.server.TftpServer`'s business; the loop runs the transfers, their
timers and their ends. A bug met by one transfer ends that transfer, never the loop.

The loop hears from outside through :class:`~tftproxy.tftp.control.Wakeup`: :meth:`stop`,
:meth:`drain` (stop reading requests, finish what runs, then return) and the parent's control
messages. Stopping ends the transfers still running with an ERROR to their clients, each logged.
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import time
from collections.abc import Sequence
from typing import Any, Final

from tftproxy.tftp.control import Wakeup
from tftproxy.tftp.counters import Counters
from tftproxy.tftp.packets import ErrorCode, build_error
from tftproxy.tftp.protocol import Action, Close, Outcome, Send
from tftproxy.tftp.recent import TransferRing
from tftproxy.tftp.transfers import LOG_BUDGET, Transfer, format_peer
from tftproxy.tftp.udp import Address, Listener

log = logging.getLogger("tftproxy.tftp")

_SCAN_INTERVAL: Final = 0.05


class TransferLoop:
    """The loop of one worker; subclasses answer what arrives on the listening sockets."""

    def __init__(self, sockets: Sequence[socket.socket], counters: Counters | None = None,
                 control_fd: int | None = None, recent: TransferRing | None = None) -> None:
        self.counters = counters or Counters.local()
        self.recent = recent or TransferRing.local()
        self._listeners = {s.fileno(): Listener(s) for s in sockets}
        self._transfers: dict[int, Transfer] = {}
        self._epoll = select.epoll()
        for fd in self._listeners:
            self._epoll.register(fd, select.EPOLLIN)
        self._wakeup = Wakeup(self._epoll, control_fd)
        self._stopping = False
        self._drain_asked = False
        self._draining = False
        self._closed = False
        self._rbuf = bytearray(2048)

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
        return len(self._transfers) + self._held()

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
        for lst in self._listeners.values():
            lst.sock.close()
        self._epoll.close()
        self._wakeup.close()

    # ---------------------------------------------------------- subclass hooks

    def _on_listener(self, lst: Listener, now: float) -> None:
        """Datagrams are waiting on a listening socket."""
        raise NotImplementedError

    def _held(self) -> int:
        """Requests waiting besides the transfers (they need the periodic tick too)."""
        return 0

    def _on_tick(self, now: float) -> None:
        """Every scan interval while busy, after the transfers' timers."""

    def _ended(self, t: Transfer) -> None:
        """A transfer has ended (its slot is free again)."""

    def _timed(self) -> bool:
        """Whether complete transfers go into the latency histogram."""
        return True

    def _on_control(self, message: dict[str, Any]) -> None:
        """A control message from the parent; the loop itself knows ``drain``."""
        if message.get("op") == "drain":
            self._start_drain()
        else:
            log.warning("unknown control message %r", message.get("op"))

    # ----------------------------------------------------------------- loop

    def _start_drain(self) -> None:
        if self._draining:
            return
        self._draining = True
        for fd in self._listeners:
            with contextlib.suppress(OSError, ValueError):
                self._epoll.unregister(fd)
        log.info("TFTP worker draining: no new requests; %d transfer(s) and %d held "
                 "request(s) in progress", len(self._transfers), self._held())

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
            if self._draining and not transfers and not self._held():
                log.info("TFTP worker drained: every transfer finished")
                return
            # Idle: sleep until a request arrives, with no periodic wakeups.
            busy = transfers or self._held()
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
                    try:
                        actions = t.receive(rbuf, now, n)
                    except Exception:
                        self._crashed(t)
                        continue
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
                    if not self._draining:
                        self._on_listener(listeners[fd], now)
                elif fd in wakeup.fds:
                    self._on_wakeup(fd)
                # Anything else is a transfer finished earlier in this batch: nothing to read.
            if now >= next_scan:
                self._scan(now)
                next_scan = now + _SCAN_INTERVAL

    def _on_wakeup(self, fd: int) -> None:
        messages = self._wakeup.read(fd)
        if messages is None:
            self._stopping = True
            return
        for message in messages:
            try:
                self._on_control(message)
            except Exception:
                self.counters.add("server_errors")
                log.exception("control message %r failed", message.get("op"))

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

    def _scan(self, now: float) -> None:
        for t in list(self._transfers.values()):
            if now >= t.machine.deadline:
                try:
                    actions = t.machine.on_timer(now)
                except Exception:
                    self._crashed(t)
                    continue
                if actions:
                    self._apply(t, actions)
        self._on_tick(now)

    # --------------------------------------------------------------- finish

    def _bug(self, client: Address, what: str) -> None:
        """A bug must cost one request, never the worker and every transfer it serves."""
        self.counters.add("server_errors")
        if LOG_BUDGET.allow():
            log.exception("tftp %s: %s failed unexpectedly", format_peer(client), what)

    def _crashed(self, t: Transfer) -> None:
        self._bug(t.client, f"transfer of {t.name!r}")
        self._finish(t, Outcome.SERVER_ERROR, "internal error")

    def _finish(self, t: Transfer, outcome: Outcome, detail: str = "") -> None:
        if self._transfers.pop(t.fd, None) is None:
            return
        self._ended(t)
        m = t.machine
        m.abort(outcome, detail)
        with contextlib.suppress(OSError, ValueError):
            self._epoll.unregister(t.fd)
        t.close()
        final = m.outcome or outcome
        t.count(self.counters, final, self._timed())
        self.counters.set("active", len(self._transfers))
        self.recent.add(format_peer(t.client), t.name, m.bytes_acknowledged,
                        time.monotonic() - t.started, final.value)
        t.log_end(final)
