"""smart-proxy's ``logs`` module: ``GET /logs/``, fed by an in-memory buffer of log records.

Foreman shows a proxy's errors only this way: RestClient gives it a status line
("502 Bad Gateway"), never a body, but its proxy page lists the proxy's log buffer and counts
its errors. So a fetch that failed, also one that failed after its request was answered 202,
shows up in Foreman with its URL and reason, once it is logged.

:class:`LogBuffer` is a plain :class:`logging.Handler`: whoever sets up logging attaches it
(``tftproxy serve`` does, to the root logger), beside whatever writes the log elsewhere. It
keeps smart-proxy's shapes: a ring of ``log_buffer`` records and, once error records leave
it, a tail of ``log_buffer_errors`` of them, listed tail first, oldest first. Each record
is ``{timestamp (float), level, message[, backtrace][, request_id]}``; the request id is the
first 8 characters of the ``X-Request-Id`` Foreman sends, as smart-proxy records it.
"""

from __future__ import annotations

import contextvars
import logging
import re
import threading
from collections import deque
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from tftproxy.api.context import context

REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "tftproxy_request_id", default=None)

# Ruby's Logger::ERROR, which smart-proxy reports as the tail's level.
LEVEL_TAIL = 3
# A record is kept whole up to here: the buffer's memory stays bounded whatever is logged.
MAX_MESSAGE = 8192
MAX_BACKTRACE = 16384
_FLOAT_PREFIX = re.compile(r"\s*[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")


def _level_name(levelno: int) -> str:
    # smart-proxy's (Ruby Logger's) names: WARN, not WARNING; FATAL, not CRITICAL.
    for limit, name in ((logging.INFO, "DEBUG"), (logging.WARNING, "INFO"),
                        (logging.ERROR, "WARN"), (logging.CRITICAL, "ERROR")):
        if levelno < limit:
            return name
    return "FATAL"


class LogBuffer(logging.Handler):
    """The last ``size`` records, and the last ``tail_size`` errors that fell out of them."""

    def __init__(self, size: int = 2000, tail_size: int = 1000) -> None:
        super().__init__()
        self.size = size
        self.tail_size = tail_size
        self._main: deque[dict[str, Any]] = deque(maxlen=size)
        self._tail: deque[dict[str, Any]] = deque(maxlen=tail_size)
        self._last = 0.0
        # Records arrive from any thread; readers copy the deques under the same lock.
        self._guard = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        with self._guard:
            try:
                entry = self._entry(record)
            except Exception:
                self.handleError(record)
                return
            if len(self._main) == self.size:
                old = self._main[0]
                if old["level"] in ("ERROR", "FATAL"):
                    self._tail.append(old)
            self._main.append(entry)

    def _entry(self, record: logging.LogRecord) -> dict[str, Any]:
        # Strictly increasing, so that from_timestamp=<a record's timestamp> starts at it.
        stamp = max(record.created, self._last + 1e-6)
        self._last = stamp
        entry: dict[str, Any] = {"timestamp": stamp, "level": _level_name(record.levelno),
                                 "message": record.getMessage()[:MAX_MESSAGE]}
        backtrace = None
        if record.exc_info and record.exc_info[0] is not None:
            backtrace = logging.Formatter().formatException(record.exc_info)
        elif record.stack_info:
            backtrace = record.stack_info
        if backtrace:
            entry["backtrace"] = backtrace[:MAX_BACKTRACE]
        request_id = REQUEST_ID.get()
        if request_id:
            entry["request_id"] = request_id
        return entry

    def records(self, from_timestamp: float = 0.0) -> list[dict[str, Any]]:
        """The kept records at or after ``from_timestamp`` (0: all), error tail first."""
        with self._guard:
            kept = [*self._tail, *self._main]
        if from_timestamp == 0:
            return kept
        return [r for r in kept if r["timestamp"] >= from_timestamp]

    def info(self) -> dict[str, Any]:
        return {"size": self.size, "tail_size": self.tail_size, "level": None,
                "level_tail": LEVEL_TAIL, "failed_modules": {}}


def ruby_to_f(text: str | None) -> float:
    """``String#to_f``, as smart-proxy reads ``from_timestamp``: the leading number, else 0."""
    match = _FLOAT_PREFIX.match(text or "")
    return float(match.group(0)) if match else 0.0


async def logs(request: web.Request) -> web.Response:
    """``GET /logs/?from_timestamp=<epoch seconds>``."""
    buffer = context(request).logs
    since = ruby_to_f(request.query.get("from_timestamp"))
    return web.json_response({"info": buffer.info(), "logs": buffer.records(since)})


@web.middleware
async def request_ids(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Tag every record logged while answering (and by the jobs it starts) with its id."""
    raw = request.headers.get("X-Request-Id", "")
    token = REQUEST_ID.set(raw[:8] if raw.isprintable() and raw else None)
    try:
        return await handler(request)
    finally:
        REQUEST_ID.reset(token)
