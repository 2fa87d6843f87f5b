"""Hashing and writing a download off the event loop, overlapped with the network; the one
loop that copies a body (HTTP or FTP) into a staging file."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections import deque
from collections.abc import Awaitable, Callable
from concurrent.futures import Future, ThreadPoolExecutor

from tftproxy.errors import UpstreamError
from tftproxy.fetch.results import ProgressFn, Sink

# Large batches keep per-batch thread hand-offs rare; a few in flight bound memory (~5 MiB).
BATCH = 1024 * 1024


class HashingWriter:
    """Hashes and writes batches on a worker thread, so hashing overlaps the network.

    hashlib and os.write release the GIL for large buffers. Batches are lists of the chunks
    as received (no copy in the event loop); at most ``INFLIGHT`` wait, which bounds memory.
    Every ``SYNC_EVERY`` bytes a second thread starts an fdatasync, so the disk writes while
    the download goes on and the final fsync before publishing has little left to do.
    """

    INFLIGHT = 4
    SYNC_EVERY = 64 * 1024 * 1024

    def __init__(self, sink: Sink) -> None:
        self._sink = sink
        self._hash = hashlib.sha256()
        # One worker keeps batches in order; a separate one flushes without blocking it.
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tftproxy-write")
        self._flusher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tftproxy-sync")
        self._pending: deque[Future[None]] = deque()
        self._flush: Future[None] | None = None
        self._unsynced = 0
        self._broken = False

    def _work(self, chunks: list[bytes]) -> None:
        # Once a write failed (disk full, min_free_space), batches already queued are dropped:
        # the download is over, and they must not take more of the disk.
        if self._broken:
            return
        try:
            self._write(chunks)
        except BaseException:
            self._broken = True
            raise

    def _write(self, chunks: list[bytes]) -> None:
        update = self._hash.update
        for chunk in chunks:
            update(chunk)
        written = 0
        for chunk in chunks:
            self._sink.write(chunk)
            written += len(chunk)
        self._unsynced += written
        if self._unsynced >= self.SYNC_EVERY and (self._flush is None or self._flush.done()):
            self._unsynced = 0
            self._flush = self._flusher.submit(os.fdatasync, self._sink.fd)

    async def submit(self, chunks: list[bytes]) -> None:
        while len(self._pending) >= self.INFLIGHT:
            await asyncio.wrap_future(self._pending.popleft())
        self._pending.append(self._worker.submit(self._work, chunks))

    async def drain(self) -> None:
        while self._pending:
            await asyncio.wrap_future(self._pending.popleft())
        if self._flush is not None:
            await asyncio.wrap_future(self._flush)

    def close(self) -> None:
        for fut in self._pending:
            fut.cancel()
        self._worker.shutdown(wait=True)
        self._flusher.shutdown(wait=True)

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


class RateFloor:
    """Fails a body that arrives slower than ``min_rate`` bytes/s over a ``window``.

    Measured over consecutive windows from the start of the body; each chunk's arrival is a
    check, and the reader's own timeout (stall_timeout) bounds the time between two.
    """

    def __init__(self, min_rate: int, window: float, now: float) -> None:
        self.min_rate = min_rate
        self.window = window
        self._start = now
        self._bytes = 0

    def update(self, received: int, now: float) -> None:
        self._bytes += received
        elapsed = now - self._start
        if not self.min_rate or elapsed < self.window:
            return
        if self._bytes < self.min_rate * elapsed:
            raise UpstreamError(
                f"too slow: {self._bytes} bytes in the last {elapsed:.0f} s, less than "
                f"min_rate ({self.min_rate} bytes/s over rate_window {self.window:g} s)",
                retryable=True)
        self._start, self._bytes = now, 0


class BodyBroken(Exception):
    """A read of a body failed mid-way: :func:`copy_body` names it with the bytes so far."""


async def copy_body(read: Callable[[], Awaitable[bytes]], sink: Sink, *, expected: int | None,
                    progress: ProgressFn | None, max_file_size: int,
                    limit_name: str = "max_file_size", min_rate: int = 0,
                    rate_window: float = 60.0,
                    written: Callable[[int], None] | None = None) -> tuple[str, int]:
    """Every chunk ``read()`` gives, until it gives ``b""``, into ``sink``; (sha256, size).

    ``read`` raises :class:`UpstreamError` for what it can name itself (a stall) and
    :class:`BodyBroken` for a body that ended early; its length is checked against
    ``expected`` (the server's Content-Length, an FTP server's SIZE); more than
    ``max_file_size`` bytes (``limit_name`` in the message) stops it at once; so does a body
    slower than ``min_rate`` bytes/s over a ``rate_window`` (0: no floor). ``written`` hears
    the bytes received, whatever the outcome (the metrics of downloaded bytes).
    """
    writer = HashingWriter(sink)
    floor = RateFloor(min_rate, rate_window, time.monotonic())
    size = 0
    batch: list[bytes] = []
    batch_size = 0
    last_report = time.monotonic()
    if progress is not None:
        progress(0, expected)
    try:
        while True:
            try:
                chunk = await read()
            except BodyBroken as exc:
                raise _broken_off(exc.__cause__ or exc, size, expected) from None
            if not chunk:
                break
            floor.update(len(chunk), time.monotonic())
            size += len(chunk)
            if size > max_file_size:
                raise UpstreamError(f"file grew past {limit_name} ({max_file_size} bytes)")
            batch.append(chunk)
            batch_size += len(chunk)
            if batch_size >= BATCH:
                await writer.submit(batch)
                batch, batch_size = [], 0
            if progress is not None:
                now = time.monotonic()
                if now - last_report >= 0.1:
                    last_report = now
                    progress(size, expected)
        if batch:
            await writer.submit(batch)
        await writer.drain()
    except OSError as exc:
        raise UpstreamError(f"cannot write the staging file: {exc.strerror}",
                            local=True) from None
    finally:
        writer.close()
        if written is not None:
            written(size)
    if expected is not None and size != expected:
        raise UpstreamError(f"truncated: got {size} of {expected} bytes", retryable=True)
    if progress is not None:
        progress(size, expected)
    return writer.hexdigest(), size


def _broken_off(exc: BaseException, size: int, expected: int | None) -> UpstreamError:
    """Name a body that ended early: reset by the peer, or closed (truncated)."""
    of = f"{size} of {expected}" if expected is not None else f"{size}"
    chain: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and len(chain) < 5:
        chain.append(cur)
        cur = cur.__cause__ or cur.__context__
    if any(isinstance(e, ConnectionResetError) for e in chain) or "reset" in str(exc).lower():
        return UpstreamError(f"connection reset by the server after {of} bytes", retryable=True)
    return UpstreamError(f"truncated: the server closed the connection after {of} bytes",
                         retryable=True)
