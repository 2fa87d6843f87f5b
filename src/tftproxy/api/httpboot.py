"""HTTP boot: ``GET``/``HEAD /httpboot/<path>`` and ``/EFI/<path>`` serve the tree to UEFI HTTP
boot and iPXE, as smart-proxy's httpboot module mounts it at both.

The tree is the TFTP root, or ``httpboot_root_dir`` when that is another directory. The same
path rules as TFTP (the store's serving face decides: leading ``/`` stripped, ``\\`` read as
``/``, nothing outside the root or in tftproxy's private state, no directories), answered
with smart-proxy's statuses and bodies: 404 ``Not found``; 403 ``Invalid or empty path``
(empty, outside the root, private); 403 ``Directory listing not allowed``; 503 ``Not a
regular file`` (a device, pipe or socket); 503 ``Service Unavailable: <reason>`` when this
machine cannot open the file (descriptors, I/O). A name whose version is being fetched (the
first one, or a changed one while hidden) is waited for up to ``refresh_hold`` seconds, as
TFTP does. The
file is opened once, through the store, and aiohttp's FileResponse then serves that very open
file through
``/proc/self/fd`` (the descriptor stays open until the response is sent): Content-Length,
Last-Modified, ETag, conditional requests, Range and sendfile all come from aiohttp, and a
publish during the response cannot change its bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import mimetypes
import os
import time
import weakref
from collections import deque
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter

from tftproxy.api.context import context
from tftproxy.api.responses import text_response
from tftproxy.errors import NotRegularFile, Refused
from tftproxy.store.aio import AsyncStore
from tftproxy.store.serving import ServedFile, ServedTree

PREFIXES = ("/httpboot", "/EFI")
_HOLD_POLL = 0.1

# The type table is read from /etc/mime.types on first use: now, not on the event loop.
mimetypes.init()


async def _open(store: AsyncStore, path: str, client: str | None, hold: float,
                tree: ServedTree | None) -> ServedFile:
    """Open through the store; a name being fetched is waited for, as TFTP does.

    ``client`` (the peer's address) lets the store serve a boot set's members from the
    generation that client started on. Another ``tree`` than the store's is served as it
    is: nothing there is ever being fetched.
    """
    if tree is not None:
        return await store.open_served(path, None, tree)
    deadline = time.monotonic() + hold
    while True:
        try:
            return await store.open_served(path, client)
        except FileNotFoundError:
            if time.monotonic() >= deadline or not await store.is_refreshing(path):
                raise
        await asyncio.sleep(_HOLD_POLL)


class _PinnedFileResponse(web.FileResponse):
    """A FileResponse over a descriptor the store opened; the descriptor is closed once the
    response is sent, or when the response is dropped unsent (a client that went away)."""

    def __init__(self, served: ServedFile, content_type: str,
                 recent: deque[dict[str, Any]]) -> None:
        super().__init__(f"/proc/self/fd/{served.fd}", headers={"Content-Type": content_type})
        fd = served.fd
        self._release = weakref.finalize(self, _close_fd, fd)
        self.sent_bytes = 0
        self._name = served.name
        self._recent = recent

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        started, outcome = time.monotonic(), "client-gone"
        try:
            writer = await super().prepare(request)
            outcome = "complete"
        finally:
            self._release()
            if request.method != "HEAD":
                self._recent.appendleft({
                    "protocol": "http", "end": time.time(),
                    "seconds": time.monotonic() - started, "outcome": outcome,
                    "bytes": (self.content_length or 0) if outcome == "complete" else 0,
                    "client": request.remote or "", "name": self._name})
        # Reached only when the whole body went out (a broken send raises): the access log
        # reads it, since sendfile() bypasses aiohttp's own byte count.
        self.sent_bytes = self.content_length or 0
        return writer


def _close_fd(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)


async def serve(request: web.Request) -> web.StreamResponse:
    """``GET``/``HEAD /httpboot/{path}`` and ``/EFI/{path}``."""
    ctx = context(request)
    path = request.match_info.get("path", "")
    try:
        served = await _open(ctx.store, path, request.remote, ctx.settings.refresh_hold,
                             ctx.httpboot_tree)
    except NotRegularFile as exc:
        if exc.directory:
            return text_response(403, "Directory listing not allowed")
        return text_response(503, "Not a regular file")
    except Refused:
        return text_response(403, "Invalid or empty path")
    except FileNotFoundError:
        return text_response(404, "Not found")
    except OSError as exc:  # this machine's trouble (descriptors, I/O), not the request's
        return text_response(503, f"Service Unavailable: {exc.strerror or exc}")
    content_type = mimetypes.guess_type(served.name)[0] or "application/octet-stream"
    return _PinnedFileResponse(served, content_type, ctx.http_transfers)
