"""The one door to the store for code on an event loop.

Every method runs its file-system work on the store's own threads and awaits it, so a slow
disk delays the request that needs it and never the loop (every other request, the job
registry, the listeners). A hop to a thread costs more than the rest of an up-to-date check,
so that check makes none once warm: names are derived as text, the tree walk that checks a
name is remembered for a few seconds (and repeated, on a thread, right before any link is
made), and records come from :mod:`tftproxy.store.live`'s exact in-memory view.
Waiting for another process's lock never occupies a thread: locks are tried without blocking
(an flock with LOCK_NB only consults the kernel's lock table) and retried with backoff.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import ParamSpec, TypeVar

from tftproxy.pxe import UniverseParams
from tftproxy.store import BootStore
from tftproxy.store.gc import GcReport, collect
from tftproxy.store.live import LiveRecords
from tftproxy.store.locks import NameLock
from tftproxy.store.objects import StagingFile
from tftproxy.store.records import Record, SetRecord, Version
from tftproxy.store.recovery import RecoveryReport
from tftproxy.store.serving import ServedFile
from tftproxy.store.universe import check_universe

log = logging.getLogger(__name__)
P = ParamSpec("P")
T = TypeVar("T")

STORE_THREADS = 4
# How long a name's tree walk is taken as still valid for requests (links re-check anyway).
PATH_CHECK_TTL = 5.0
_LOCK_POLL_FIRST = 0.005
_LOCK_POLL_MAX = 0.2


def _log_failure(future: Future[None]) -> None:
    exc = future.exception()
    if exc is not None:
        log.warning("noting an up-to-date check failed: %s", exc)


async def acquire_lock(lock: NameLock, *, shared: bool = False) -> None:
    """Take ``lock`` without holding a thread while another process has it."""
    delay = _LOCK_POLL_FIRST
    while not lock.acquire(blocking=False, shared=shared):
        await asyncio.sleep(delay)
        delay = min(delay * 2, _LOCK_POLL_MAX)


class AsyncStore:
    """A :class:`~tftproxy.store.BootStore` seen from an event loop."""

    def __init__(self, store: BootStore, threads: int = STORE_THREADS) -> None:
        self.store = store
        self.root = store.root
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="tftproxy-store")
        self._live = LiveRecords()
        self._checked_paths: dict[str, float] = {}

    async def watch(self) -> None:
        """Keep records in memory from now on (after recovery: it rewrites many)."""
        try:
            await self._run(self._live.open, self.store.layout)
        except OSError as exc:  # no inotify (limits, file system): records come from disk
            log.warning("cannot watch the store's records, reading them from disk: %s", exc)

    async def _run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))

    async def close(self) -> None:
        self._live.close()
        await asyncio.get_running_loop().run_in_executor(None, self._pool.shutdown)

    # ------------------------------------------------------------- publishing

    async def target(self, prefix: str, url: str,
                     file_name: str | None = None) -> tuple[str, str]:
        """The published name and the boot set of a request (NameRefused if not allowed);
        ``file_name`` stands for the URL's basename when the source names its file otherwise."""
        names = self.store.names
        name, set_id = names.derive(prefix, url, file_name), names.set_id(prefix)
        now = time.monotonic()
        if self._checked_paths.get(name, 0.0) < now:
            await self._run(names.check_path, name)
            if len(self._checked_paths) >= 4096:
                self._checked_paths.clear()
            self._checked_paths[name] = now + PATH_CHECK_TTL
        return name, set_id

    async def check_names(self, names: list[str]) -> list[str]:
        """Each name normalised, after the text and path rules (NameRefused if one fails)."""
        store_names = self.store.names
        checked = [store_names.check_text(n) for n in names]
        def walk() -> None:
            for name in checked:
                store_names.check_path(name)

        await self._run(walk)
        return checked

    def content_path(self, sha256: str) -> Path:
        """Where stored content lives (for a reader on its own thread)."""
        return self.store.layout.object_path(sha256)

    async def repaired_record(self, name: str) -> Record | None:
        """The name's record, once any half-done state left by a dead process is repaired.

        The caller holds the name's lock, so such a state cannot be a live process's, and
        every change another process made before is in the live view's queue.
        """
        live = self._live
        live.drain()
        known, rec = live.clean_record(name)
        if known:
            return rec
        mark = live.mark()
        rec, srec = await self._run(self._repaired_record, name)
        live.fill(mark, name, rec, srec)
        return rec

    def _repaired_record(self, name: str) -> tuple[Record | None, SetRecord | None]:
        store = self.store
        rec = store.records.record(name, with_checked=False)
        if store.recovery.needs_repair(name, rec):
            store.recovery.repair(name)
            rec = store.records.record(name, with_checked=False)
        srec = store.records.set_record(rec.set) if rec is not None and rec.set else None
        return rec, srec

    async def members(self, set_id: str) -> list[Record]:
        return await self._run(self.store.records.members, set_id)

    async def open_lock(self, name: str) -> NameLock:
        return await self._run(self.store.lock, name)

    async def begin_refresh(self, name: str, hide: bool) -> Record:
        return await self._run(self.store.transactions.begin_refresh, name, hide)

    async def abort_refresh(self, name: str) -> Record | None:
        return await self._run(self.store.transactions.abort_refresh, name)

    async def mark_checked(self, name: str, current: Version, checked_at: float) -> Record:
        return await self._run(self.store.transactions.mark_checked, name, current, checked_at)

    def confirm(self, name: str, sha256: str, checked_at: float) -> None:
        """Note an up-to-date check of a name that still links to ``sha256``.

        Not awaited: the time of the last check is informational, and no answer waits on it.
        """
        self._pool.submit(self._confirm, name, sha256, checked_at).add_done_callback(
            _log_failure)

    def _confirm(self, name: str, sha256: str, checked_at: float) -> None:
        if self.store.links.linked_sha256(name) == sha256:
            self.store.records.touch_checked(name, checked_at)

    async def new_staging(self, name: str) -> StagingFile:
        return await self._run(self.store.objects.new_staging, name)

    async def discard(self, staging: StagingFile) -> None:
        await self._run(staging.discard)

    async def staged_size(self, staging: StagingFile) -> int:
        return await self._run(staging.size)

    async def free_bytes(self) -> int:
        return await self._run(self.store.objects.free_bytes)

    async def has_object(self, sha256: str) -> bool:
        return await self._run(self.store.objects.exists, sha256)

    async def publish(self, set_id: str, staged: dict[str, tuple[Version, StagingFile | None]],
                      published_at: float) -> SetRecord:
        """Ingest the staged members and switch the set to a generation of all of them.

        Clean-up's lock is held shared from the first ingest to the switch, so content about
        to be linked is never taken for garbage.
        """
        gc_lock = await self._run(self.store.gc_lock)
        try:
            await acquire_lock(gc_lock, shared=True)
            return await self._run(self._publish, set_id, staged, published_at)
        finally:
            await self._run(gc_lock.release)

    def _publish(self, set_id: str, staged: dict[str, tuple[Version, StagingFile | None]],
                 published_at: float) -> SetRecord:
        for version, staging in staged.values():
            if staging is not None:
                self.store.objects.ingest(staging, version.sha256)
        versions = {name: version for name, (version, _) in staged.items()}
        return self.store.transactions.publish_generation(set_id, versions, published_at)

    async def recover(self) -> RecoveryReport:
        return await self._run(self.store.recover)

    # ---------------------------------------------------------------- readers

    async def open_served(self, requested: str, client: str | None = None) -> ServedFile:
        return await self._run(self.store.serving.open_served, requested, client)

    async def is_refreshing(self, requested: str) -> bool:
        return await self._run(self.store.serving.is_refreshing, requested)

    async def collect(self, grace: float, *, dry_run: bool = False) -> GcReport:
        return await self._run(collect, self.store, grace, dry_run=dry_run)

    async def check_universe(self, wanted: UniverseParams) -> None:
        """Conflict unless the published universe matches what a host config relies on."""
        store = self.store
        await self._run(check_universe, store.layout, store.records, wanted)

    async def call(self, fn: Callable[[BootStore], T]) -> T:
        """Run ``fn(store)`` on the store's threads (reports that read many records)."""
        return await self._run(fn, self.store)

