"""The API's connections: a header timeout and caps, so slow or many clients cannot take it.

A client that opens a connection and sends half a header costs a descriptor for as long as it
stays; a thousand of them used to make the API unreachable at the common limit of 1024. Here:

* a connection must complete its first request's header within ``header_timeout`` seconds
  of being accepted, or it is closed (aiohttp's ``keepalive_timeout`` then closes a kept-alive
  connection that idles, or stalls in a later header, for that long);
* at most ``max_per_client`` connections per client address;
* at most ``max_connections`` in all: when full, a new connection replaces the oldest one that
  has not sent a complete header yet (the kind a slow-header attack holds); if there is none,
  the new connection is closed at once.

aiohttp has no header timeout of its own (older versions close a connection that never sends a
request only at their keep-alive timeout, if at all), so the guard wraps the protocol aiohttp
makes for each connection; a middleware tells it when a request's header is complete.

aiohttp also logs every request it cannot parse as an error with a traceback; a flood of
malformed requests would fill the disk with them. :func:`server_logger` makes each one line,
within a budget of lines a second.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.typedefs import Handler

from tftproxy._addr import format_hostport
from tftproxy._limits import LogBudget


@dataclass(frozen=True)
class ConnectionLimits:
    header_timeout: float = 15.0
    max_connections: int = 512
    max_per_client: int = 64


class _Guarded(asyncio.Protocol):
    """aiohttp's protocol for one connection, behind the guard's admission and header timer."""

    def __init__(self, guard: ConnectionGuard, make: Callable[[], asyncio.Protocol]) -> None:
        self._guard = guard
        self._make = make
        self._inner: asyncio.Protocol | None = None
        self.transport: asyncio.Transport | None = None
        self.host = ""
        self._timer: asyncio.TimerHandle | None = None
        self.released = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        peer = transport.get_extra_info("peername")
        self.host = str(peer[0]) if isinstance(peer, tuple) and peer else ""
        self.transport = transport
        if not self._guard.admit(self):
            transport.abort()
            return
        self.released = False
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self._guard.limits.header_timeout, self._expire)
        self._inner = self._make()
        self._inner.connection_made(transport)

    def _expire(self) -> None:
        self._timer = None
        if self._guard.header_missing(self) and self.transport is not None:
            self.transport.abort()

    def request_seen(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def data_received(self, data: bytes) -> None:
        if self._inner is not None:
            self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._inner is not None else None

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self.request_seen()  # no timer for a connection that is gone
        self._guard.release(self)
        if self._inner is not None:
            self._inner.connection_lost(exc)


class ConnectionGuard:
    """Admission, header timeouts and counts for every listener of one API."""

    def __init__(self, limits: ConnectionLimits) -> None:
        self.limits = limits
        self.live = 0
        self._per_host: dict[str, int] = {}
        # Connections with no complete request header yet, oldest first.
        self._pending: dict[asyncio.BaseTransport, _Guarded] = {}
        self.refused = self.evicted = self.timed_out = 0

    def factory(self, make: Callable[[], asyncio.Protocol]) -> Callable[[], asyncio.Protocol]:
        """A protocol factory for ``loop.create_server`` around aiohttp's (``runner.server``)."""
        return lambda: _Guarded(self, make)

    def admit(self, conn: _Guarded) -> bool:
        limits = self.limits
        if self._per_host.get(conn.host, 0) >= limits.max_per_client:
            self.refused += 1
            return False
        if self.live >= limits.max_connections:
            victim = next(iter(self._pending.values()), None)
            if victim is None:
                self.refused += 1
                return False
            self.evicted += 1
            self.release(victim)
            if victim.transport is not None:
                victim.transport.abort()
        self.live += 1
        self._per_host[conn.host] = self._per_host.get(conn.host, 0) + 1
        assert conn.transport is not None
        self._pending[conn.transport] = conn
        return True

    def header_missing(self, conn: _Guarded) -> bool:
        """At the header timeout: whether the connection still owes its first header."""
        if conn.transport is not None and self._pending.get(conn.transport) is conn:
            self.timed_out += 1
            self.release(conn)
            return True
        return False

    def release(self, conn: _Guarded) -> None:
        if conn.released:
            return
        conn.released = True
        if conn.transport is not None and self._pending.get(conn.transport) is conn:
            del self._pending[conn.transport]
        self.live -= 1
        left = self._per_host.get(conn.host, 0) - 1
        if left > 0:
            self._per_host[conn.host] = left
        else:
            self._per_host.pop(conn.host, None)

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """A request's header is complete: its connection owes nothing to the header timer."""
        transport = request.transport
        if transport is not None:
            conn = self._pending.pop(transport, None)
            if conn is not None:
                conn.request_seen()
        return await handler(request)


class GuardedSite(web.BaseSite):
    """A TCP listener whose connections go through a :class:`ConnectionGuard`."""

    def __init__(self, runner: web.BaseRunner, guard: ConnectionGuard, host: str | None,
                 port: int, *, ssl_context: ssl.SSLContext | None = None) -> None:
        # asyncio accepts up to ``backlog`` connections per loop iteration, and a connection
        # refused or evicted is closed only at the next: aiohttp's 128 keeps that burst of
        # descriptors small next to the cap.
        super().__init__(runner, ssl_context=ssl_context, backlog=128)
        self._guard = guard
        self._host = host
        self._port = port

    @property
    def name(self) -> str:
        scheme = "https" if self._ssl_context else "http"
        return f"{scheme}://{format_hostport(self._host or '0.0.0.0', self._port)}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        self._server = await asyncio.get_running_loop().create_server(
            self._guard.factory(server), self._host, self._port, ssl=self._ssl_context,
            backlog=self._backlog, reuse_address=True,
            # A TLS handshake that never ends must not hold a descriptor either.
            ssl_handshake_timeout=self._guard.limits.header_timeout if self._ssl_context
            else None)


class _BadRequests(logging.Filter):
    """A request aiohttp could not parse (the client's fault): one INFO line, no traceback,
    within a budget. Anything else aiohttp logs passes as it is."""

    def __init__(self, budget: LogBudget) -> None:
        super().__init__()
        self._budget = budget

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, HttpProcessingError):
            return True
        if not self._budget.allow():
            return False
        record.msg = "bad request from %s: %s"
        record.args = (*(record.args if isinstance(record.args, tuple) else ())[:1],
                       " ".join(str(exc.message).split())[:200])
        record.exc_info = None
        record.exc_text = None
        record.levelno, record.levelname = logging.INFO, "INFO"
        return True


def server_logger(name: str = "tftproxy.api.http") -> logging.Logger:
    """The logger to give aiohttp's server (``AppRunner(logger=...)``)."""
    logger = logging.getLogger(name)
    if not any(isinstance(f, _BadRequests) for f in logger.filters):
        logger.addFilter(_BadRequests(LogBudget(logger)))
    return logger
