"""An in-process HTTP/1.1 server whose responses can break at a chosen byte.

Real sockets, real kernel TCP: a test scripts what goes on the wire (truncation, reset,
stall, status sequences, odd headers) where nginx could not be made to misbehave.
"""

from __future__ import annotations

import contextlib
import socket
import socketserver
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]


@dataclass
class Reply:
    """What to send. ``body`` goes out after the headers, then ``then`` happens."""

    status: int = 200
    reason: str = "OK"
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    # Claimed Content-Length; None means len(body); -1 means omit the header (close-delimited).
    length: int | None = None
    # Stop after this many body bytes, then: "close" (truncate), "reset" (RST), "stall".
    cut_at: int | None = None
    then: str = "close"
    stall_seconds: float = 30.0
    # Optional gate: the body pauses at ``pause_at`` until the event is set.
    pause_at: int | None = None
    pause: threading.Event | None = None
    chunk: int = 65536
    # Seconds to sleep after each chunk: a slow link.
    chunk_delay: float = 0.0


Handler = Callable[[Seen], Reply]


class _TCPServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


class Upstream:
    """Routes map a path to a handler returning a :class:`Reply`; every request is recorded."""

    def __init__(self) -> None:
        self.routes: dict[str, Handler] = {}
        self.seen: list[Seen] = []
        self._lock = threading.Lock()
        outer = self

        class _H(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                outer._serve(self.request)

        self._server = _TCPServer(("127.0.0.1", 0), _H)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def requests_for(self, path: str) -> list[Seen]:
        with self._lock:
            return [s for s in self.seen if s.path == path]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(60)
        buf = b""
        with contextlib.suppress(OSError):
            while True:
                while b"\r\n\r\n" not in buf:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buf += data
                head, _, buf = buf.partition(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    k, _, v = line.partition(":")
                    headers[k.strip().lower()] = v.strip()
                seen = Seen(method, path, headers)
                with self._lock:
                    self.seen.append(seen)
                handler = self.routes.get(path)
                reply = handler(seen) if handler else Reply(404, "Not Found", body=b"no\n")
                if not self._send(conn, method, reply):
                    return

    def _send(self, conn: socket.socket, method: str, r: Reply) -> bool:
        hdrs = dict(r.headers)
        if r.length != -1:
            hdrs["Content-Length"] = str(len(r.body) if r.length is None else r.length)
        else:
            hdrs["Connection"] = "close"
        head = f"HTTP/1.1 {r.status} {r.reason}\r\n" + "".join(
            f"{k}: {v}\r\n" for k, v in hdrs.items()) + "\r\n"
        conn.sendall(head.encode("latin-1"))
        if method == "HEAD":
            return True
        body = r.body if r.cut_at is None else r.body[: r.cut_at]
        pos = 0
        pause_at = r.pause_at if r.pause is not None else None
        while pos < len(body):
            end = min(pos + r.chunk, len(body))
            if pause_at is not None and r.pause is not None and pos <= pause_at < end:
                conn.sendall(body[pos:pause_at])
                pos, pause_at = pause_at, None
                r.pause.wait(60)
                continue
            conn.sendall(body[pos:end])
            pos = end
            if r.chunk_delay:
                time.sleep(r.chunk_delay)
        if r.cut_at is None:
            return r.length != -1
        if r.then == "reset":
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        elif r.then == "stall":
            time.sleep(r.stall_seconds)
        conn.close()
        return False


def static(body: bytes, *, etag: str | None = None, last_modified: str | None = None,
           extra: dict[str, str] | None = None) -> Handler:
    """A resource with optional validators that honours If-None-Match / If-Modified-Since."""

    def handle(seen: Seen) -> Reply:
        headers = dict(extra or {})
        if etag:
            headers["ETag"] = etag
        if last_modified:
            headers["Last-Modified"] = last_modified
        inm = seen.headers.get("if-none-match")
        ims = seen.headers.get("if-modified-since")
        if (etag and inm == etag) or (not inm and last_modified and ims == last_modified):
            return Reply(304, "Not Modified", headers=headers, length=0)
        return Reply(200, "OK", headers=headers, body=body)

    return handle
