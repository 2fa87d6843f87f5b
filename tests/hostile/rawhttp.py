"""HTTP at byte level: the tests decide every byte a client sends."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import Any


def exchange(port: int, data: bytes, *, timeout: float = 5.0, host: str = "127.0.0.1",
             source: str | None = None) -> bytes:
    """Send ``data`` on a new connection, then read until the server closes (or times out)."""
    with socket.socket() as s:
        if source is not None:
            s.bind((source, 0))
        s.settimeout(timeout)
        s.connect((host, port))
        # No half-close after sending: a server may (aiohttp does) take it as the end of the
        # connection and drop what it was answering.
        # The server may answer and close before reading everything.
        with contextlib.suppress(OSError):
            s.sendall(data)
        chunks = []
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
        except (TimeoutError, ConnectionResetError):
            pass
        return b"".join(chunks)


async def aexchange(port: int, data: bytes, **kwargs: Any) -> bytes:
    """:func:`exchange` from a thread, for a server on the caller's event loop."""
    return await asyncio.to_thread(exchange, port, data, **kwargs)


def statuses(reply: bytes) -> list[int]:
    """The status of every response in ``reply`` (pipelined responses included)."""
    out = []
    for line in reply.split(b"\r\n"):
        if line.startswith(b"HTTP/1.") and len(line) >= 12 and line[9:12].isdigit():
            out.append(int(line[9:12]))
    return out


def request(method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None,
            ) -> bytes:
    hdrs = {"Host": "tftproxy.test", "Connection": "close", **(headers or {})}
    if body and "Content-Length" not in hdrs and "Transfer-Encoding" not in hdrs:
        hdrs["Content-Length"] = str(len(body))
    head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs.items())
    # UTF-8 for what is not ASCII; a surrogate stands for the raw byte it escapes.
    return head.encode("utf-8", "surrogateescape") + b"\r\n" + body
