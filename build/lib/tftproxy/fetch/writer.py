"""Hashing and writing a download off the event loop, overlapped with the network."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor

from tftproxy.fetch.results import Sink


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

    def _work(self, chunks: list[bytes]) -> None:
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
