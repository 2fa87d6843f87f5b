"""Where the logs go: smart-proxy's ``:log_file:`` and ``:log_level:``, in every process.

``log_file`` takes smart-proxy's values: a path (appended to; reopened by :func:`reopen`, which
``serve`` and ``tftpd`` call on SIGUSR1, as logrotate's ``postrotate`` expects), ``STDOUT``,
``STDERR``, ``SYSLOG`` (``/dev/log``, facility LOCAL5 as smart-proxy uses) or ``JOURNAL`` /
``JOURNALD`` (the journal's native protocol: priorities and structured fields). Unset, logs go
to standard error. A target that cannot be used falls back to standard error with a warning,
as smart-proxy falls back to STDOUT: logging never stops the service.

Structured fields travel with a record as ``extra=fields(file=..., client=..., bytes=...)``;
the journal gets them as ``FILE=``, ``CLIENT=``, ``BYTES=`` (``journalctl CLIENT=10.0.0.5``).

The journal protocol is written here (a datagram per entry, a sealed memfd for large ones)
rather than through python-systemd: that needs libsystemd and a compiler in every venv, for
thirty lines of protocol.

:func:`configure` owns the root logger's handlers; other code (an in-memory buffer for
``/logs``...) adds its own with :func:`add_handler`, which survive a reconfiguration.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import logging.handlers
import os
import socket
import struct
import sys
import threading
from dataclasses import dataclass
from typing import Any, Final, TextIO

JOURNAL_SOCKET = "/run/systemd/journal/socket"
SYSLOG_SOCKET = "/dev/log"
IDENTIFIER = "tftproxy"
FIELDS_ATTR: Final = "tftproxy_fields"

# smart-proxy's level names (Ruby's Logger and the logging gem), and Python's.
LEVELS: Final = {
    "DEBUG": logging.DEBUG, "INFO": logging.INFO, "WARN": logging.WARNING,
    "WARNING": logging.WARNING, "ERROR": logging.ERROR, "FATAL": logging.CRITICAL,
    "CRITICAL": logging.CRITICAL,
}
SPECIAL_TARGETS: Final = ("STDOUT", "STDERR", "SYSLOG", "JOURNAL", "JOURNALD")
_PRIORITY: Final = ((logging.CRITICAL, 2), (logging.ERROR, 3), (logging.WARNING, 4),
                    (logging.INFO, 6))
_FILE_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_WORKER_FORMAT = "%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s"


def parse_level(text: str) -> int:
    """A level name (``DEBUG``, ``INFO``, ``WARN``, ``ERROR``, ``FATAL``; any case)."""
    level = LEVELS.get(text.strip().upper())
    if level is None:
        raise ValueError(f"unknown log level {text!r}: use one of DEBUG, INFO, WARN, ERROR, "
                         f"FATAL")
    return level


def level_name(level: int) -> str:
    return logging.getLevelName(level)


def fields(**values: Any) -> dict[str, Any]:
    """``extra=`` for a log call: structured fields the journal stores beside the message."""
    return {FIELDS_ATTR: values}


@dataclass(frozen=True)
class LogConfig:
    """Where logs go and from which level; crosses to TFTP workers as JSON."""

    target: str | None = None
    level: int = logging.INFO

    def to_json(self) -> dict[str, Any]:
        return {"target": self.target, "level": self.level}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LogConfig:
        return cls(data.get("target"), int(data["level"]))


# ------------------------------------------------------------------- handlers


def _priority(levelno: int) -> int:
    for threshold, priority in _PRIORITY:
        if levelno >= threshold:
            return priority
    return 7


def _journal_field(key: str, value: object) -> bytes:
    data = str(value).encode("utf-8", "replace")
    name = key.encode("ascii")
    if b"\n" in data:
        # Multi-line values are length-prefixed (the native protocol's binary form).
        return name + b"\n" + struct.pack("<Q", len(data)) + data + b"\n"
    return name + b"=" + data + b"\n"


def _field_name(key: str) -> str:
    name = "".join(c if c.isalnum() else "_" for c in key.upper()).lstrip("_")
    return name or "FIELD"


class JournalHandler(logging.Handler):
    """systemd's journal, over its native socket: one datagram per entry."""

    def __init__(self, path: str = JOURNAL_SOCKET) -> None:
        super().__init__()
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self.sock.connect(path)  # fails at once when there is no journal

    def encode(self, record: logging.LogRecord) -> bytes:
        message = record.getMessage()
        if record.exc_info:
            message += "\n" + logging.Formatter().formatException(record.exc_info)
        parts = [
            _journal_field("MESSAGE", message),
            _journal_field("PRIORITY", _priority(record.levelno)),
            _journal_field("SYSLOG_IDENTIFIER", IDENTIFIER),
            _journal_field("SYSLOG_FACILITY", 21),  # LOCAL5, as smart-proxy logs
            _journal_field("LOGGER", record.name),
            _journal_field("CODE_FILE", record.pathname),
            _journal_field("CODE_LINE", record.lineno),
            _journal_field("CODE_FUNC", record.funcName),
        ]
        for key, value in (getattr(record, FIELDS_ATTR, None) or {}).items():
            if value is not None:
                parts.append(_journal_field(_field_name(key), value))
        return b"".join(parts)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            data = self.encode(record)
            try:
                self.sock.send(data)
            except OSError as exc:
                if exc.errno not in (errno.EMSGSIZE, errno.ENOBUFS):
                    raise
                self._send_large(data)
        except Exception:
            self.handleError(record)

    def _send_large(self, data: bytes) -> None:
        # Over the datagram limit: the entry goes in a sealed memfd passed with SCM_RIGHTS.
        fd = os.memfd_create("tftproxy-journal", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            os.write(fd, data)
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW
                        | fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SEAL)
            self.sock.sendmsg([], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                    struct.pack("i", fd))])
        finally:
            os.close(fd)

    def close(self) -> None:
        self.sock.close()
        super().close()


class ReopeningFileHandler(logging.FileHandler):
    """A log file that :meth:`reopen` closes and opens again by name (after logrotate)."""

    def reopen(self) -> None:
        self.acquire()
        try:
            if self.stream is not None:
                with contextlib.suppress(OSError):
                    self.stream.close()
            self.stream = self._open()
        finally:
            self.release()


# --------------------------------------------------------------- the root logger

_lock = threading.Lock()
_ours: list[logging.Handler] = []
_extra: list[logging.Handler] = []


def _stream_handler(stream: TextIO, worker: bool) -> logging.Handler:
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter(_WORKER_FORMAT if worker else _FILE_FORMAT))
    return handler


def _handler_for(target: str | None, worker: bool) -> tuple[logging.Handler, str | None]:
    """The handler of a target, and a warning when it had to fall back to standard error."""
    special = (target or "STDERR").upper()
    try:
        if special == "STDOUT":
            return _stream_handler(sys.stdout, worker), None
        if special == "STDERR":
            return _stream_handler(sys.stderr, worker), None
        if special in ("JOURNAL", "JOURNALD"):
            return JournalHandler(), None
        if special == "SYSLOG":
            syslog = logging.handlers.SysLogHandler(
                SYSLOG_SOCKET, logging.handlers.SysLogHandler.LOG_LOCAL5)
            syslog.ident = f"{IDENTIFIER}[{os.getpid()}]: "
            return syslog, None
        assert target is not None
        handler = ReopeningFileHandler(target, encoding="utf-8")
        handler.setFormatter(logging.Formatter(_WORKER_FORMAT if worker else _FILE_FORMAT))
        return handler, None
    except OSError as exc:
        why = exc.strerror or str(exc)
        return (_stream_handler(sys.stderr, worker),
                f"log_file {target}: cannot be used ({why}); logging to standard error")


def configure(config: LogConfig, *, worker: bool = False) -> None:
    """Send every log record of this process to ``config.target`` from ``config.level`` on.

    Replaces the handlers a previous call installed; those of :func:`add_handler` stay.
    """
    handler, warning = _handler_for(config.target, worker)
    root = logging.getLogger()
    with _lock:
        for old in _ours:
            root.removeHandler(old)
            old.close()
        _ours[:] = [handler]
        root.addHandler(handler)
        root.setLevel(config.level)
    # aiohttp logs every request at INFO on its own loggers; ours (tftproxy.access) says it.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    if warning:
        logging.getLogger(__name__).warning("%s", warning)


def set_level(level: int) -> None:
    logging.getLogger().setLevel(level)


def reopen() -> None:
    """Reopen file logs by name: logrotate has moved the old file away."""
    with _lock:
        for handler in _ours:
            if isinstance(handler, ReopeningFileHandler):
                handler.reopen()


def add_handler(handler: logging.Handler) -> None:
    """Another destination beside the configured one, kept across :func:`configure`."""
    with _lock:
        _extra.append(handler)
        logging.getLogger().addHandler(handler)


def remove_handler(handler: logging.Handler) -> None:
    """Undo :func:`add_handler` (a service that stops)."""
    with _lock:
        if handler in _extra:
            _extra.remove(handler)
        logging.getLogger().removeHandler(handler)
