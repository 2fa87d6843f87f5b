"""How a worker's loop hears from outside: its self-pipe and its parent's control pipe.

The parent writes one JSON object a line (``{"op": "drain"}``...; the server says what each
means); EOF on the pipe means stop now.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
from typing import Any

log = logging.getLogger("tftproxy.tftp")


class Wakeup:
    """How a worker's loop hears from outside: a self-pipe (:meth:`wake`, safe from any
    thread or a signal handler) and the parent's control pipe, whose EOF means stop."""

    def __init__(self, epoll: select.epoll, control_fd: int | None) -> None:
        self._read, self._write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._control = control_fd
        self._partial = b""
        self.fds = {self._read} if control_fd is None else {self._read, control_fd}
        for fd in self.fds:
            epoll.register(fd, select.EPOLLIN)

    def wake(self) -> None:
        with contextlib.suppress(OSError):
            os.write(self._write, b"x")

    def read(self, fd: int) -> list[dict[str, Any]] | None:
        """The control messages that arrived on ``fd``; None once the parent said stop."""
        try:
            data = os.read(fd, 65536)
        except OSError:
            return []
        if fd != self._control:
            return []
        if not data:
            return None
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        out = []
        for line in lines:
            try:
                message = json.loads(line)
            except ValueError:
                log.warning("control message that is not JSON: %r", line[:80])
                continue
            if isinstance(message, dict):
                out.append(message)
        return out

    def close(self) -> None:
        os.close(self._read)
        os.close(self._write)
