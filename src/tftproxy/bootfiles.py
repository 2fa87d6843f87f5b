"""Boot-file jobs: what a fetch request means for the store, shared by the API and the CLI.

One job per destination name runs at a time; every request for the same name and URL while
it runs joins it and receives its result (smart-proxy silently dropped such requests).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from tftproxy.config import RefreshMode, Settings
from tftproxy.fetcher import (
    Downloaded,
    Fetcher,
    FetchError,
    NotModified,
    Validators,
    check_scheme,
)
from tftproxy.store import (
    BootStore,
    NameLock,
    PathRefused,
    RecoveryReport,
    StagingFile,
    Version,
)

log = logging.getLogger(__name__)

# Lock files kept open (each is one descriptor); least recently used ones are closed.
FLOCK_CACHE = 256

ResultStatus = Literal["published", "unchanged", "ignored", "failed"]
ProgressFn = Callable[[int, int | None], None]


class BadRequest(ValueError):
    """The request itself is wrong (answered with 400); the message names the problem."""


@dataclass(frozen=True)
class FetchResult:
    status: ResultStatus
    name: str
    source: str
    size: int | None = None
    sha256: str | None = None
    final_url: str | None = None
    message: str | None = None

    @property
    def ok(self) -> bool:
        return self.status != "failed"

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"name": self.name, "status": self.status, "source": self.source}
        if self.ok:
            data.update(size=self.size, sha256=self.sha256)
            if self.final_url and self.final_url != self.source:
                data["final_url"] = self.final_url
        else:
            data["error"] = self.message
        return data


@dataclass
class Job:
    """One fetch of one name; any number of callers wait on it."""

    id: str
    name: str
    url: str
    started: float
    bytes_done: int = 0
    bytes_total: int | None = None
    finished: float | None = None
    result: FetchResult | None = None
    listeners: list[ProgressFn] = field(default_factory=list)
    _done: asyncio.Event = field(default_factory=asyncio.Event)

    def progress(self, done: int, total: int | None) -> None:
        self.bytes_done, self.bytes_total = done, total
        for fn in self.listeners:
            fn(done, total)

    def finish(self, result: FetchResult) -> None:
        self.result = result
        self.finished = time.time()
        self._done.set()

    @property
    def done(self) -> bool:
        return self._done.is_set()

    async def outcome(self) -> FetchResult:
        """The result, once the job has ended."""
        await self._done.wait()
        assert self.result is not None
        return self.result

    async def wait(self, seconds: float | None = None) -> FetchResult | None:
        """The result, or None if the job is still running after ``seconds``."""
        if seconds is None:
            await self._done.wait()
        else:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._done.wait(), seconds)
        return self.result

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": self.id,
            "name": self.name,
            "source": self.url,
            "state": "running" if self.result is None else self.result.status,
            "progress": {"bytes": self.bytes_done, "total": self.bytes_total},
            "started": _iso(self.started),
            "url": f"/tftp/fetch_boot_file/{self.id}",
        }
        if self.result is not None:
            data["finished"] = _iso(self.finished or 0.0)
            data["result"] = self.result.to_json()
        return data


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def failure_text(url: str, result: FetchResult) -> str:
    """The plain-text body Foreman shows for a failed fetch."""
    return f"TFTP: Failed to fetch boot file: {url}: {result.message}"


def _changed(cur: Version | None, same_source: bool, v: Validators) -> bool:
    """Whether a 200 says the representation differs from the published one.

    Without validators nothing can be said before the hash is known, so the old version
    stays served until the hash proves a change.
    """
    if cur is None:
        return False
    if not same_source:
        return True
    if v.etag and cur.etag:
        return v.etag != cur.etag
    if v.content_length is not None and v.content_length != cur.size:
        return True
    if v.last_modified and cur.last_modified:
        return v.last_modified != cur.last_modified
    return False


class BootFiles:
    """The boot-file service: the store, the fetcher and the running jobs."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store = BootStore(settings.tftproot)
        self.fetcher = Fetcher(settings)
        self._jobs: dict[str, Job] = {}
        self._active: dict[str, Job] = {}
        self._name_locks: dict[str, asyncio.Lock] = {}
        # Open lock files and last check times, so an up-to-date check costs no open().
        self._flocks: OrderedDict[str, NameLock] = OrderedDict()
        self._touched: dict[str, float] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def recover(self) -> RecoveryReport:
        report = self.store.recover()
        if report.staging_removed or report.restored or report.completed or report.relinked:
            log.info(
                "recovered after an interrupted run: %d staging file(s) removed, restored %s, "
                "completed %s, relinked %s, dropped %s",
                report.staging_removed, report.restored, report.completed, report.relinked,
                report.dropped,
            )
        return report

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.fetcher.close()
        for flock in self._flocks.values():
            flock.release()
        self._flocks.clear()

    def job(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    def request(self, prefix: str, url: str, progress: ProgressFn | None = None) -> Job:
        """Start (or join) the fetch of ``url`` to ``prefix``; raises BadRequest for bad input."""
        if not prefix or not url:
            raise BadRequest("both 'prefix' and 'path' are required")
        try:
            scheme = check_scheme(url)
            name = self.store.destination(prefix, url)
        except (PathRefused, FetchError) as exc:
            raise BadRequest(str(exc)) from None
        if scheme == "nfs":
            # Foreman sends nfs media paths too; smart-proxy accepts and ignores them.
            job = self._new_job(name, url)
            job.finish(FetchResult(status="ignored", name=name, source=url,
                                   message="nfs sources are not fetched"))
            self._retire(job)
            return job
        running = self._active.get(name)
        if running is not None and running.url == url and not running.done:
            if progress is not None:
                running.listeners.append(progress)
            return running
        job = self._new_job(name, url)
        if progress is not None:
            job.listeners.append(progress)
        self._active[name] = job
        task = asyncio.get_running_loop().create_task(self._run(job), name=f"fetch {name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return job

    def _new_job(self, name: str, url: str) -> Job:
        job = Job(id=secrets.token_hex(8), name=name, url=url, started=time.time())
        self._jobs[job.id] = job
        return job

    def _retire(self, job: Job) -> None:
        if self._active.get(job.name) is job:
            del self._active[job.name]
        loop = asyncio.get_running_loop()
        loop.call_later(self.settings.job_retention, self._jobs.pop, job.id, None)

    async def _run(self, job: Job) -> None:
        try:
            result = await self._fetch(job)
        except asyncio.CancelledError:
            job.finish(FetchResult(status="failed", name=job.name, source=job.url,
                                   message="cancelled: tftproxy is shutting down"))
            raise
        except Exception as exc:  # a bug must still answer the waiting callers
            log.exception("fetch of %s failed unexpectedly", job.url)
            result = FetchResult(status="failed", name=job.name, source=job.url,
                                 message=f"internal error: {exc!r}")
        job.finish(result)
        self._retire(job)
        if result.ok:
            log.info("%s %s <- %s (%s bytes, sha256 %s)", result.status, job.name, job.url,
                     result.size, result.sha256)
        else:
            log.warning("fetch of %s for %s failed: %s", job.url, job.name, result.message)

    async def _fetch(self, job: Job) -> FetchResult:
        # Requests for one name with different URLs queue here; flock covers other processes.
        # One small lock per name ever requested: names are few (boot files, not requests).
        name_lock = self._name_locks.setdefault(job.name, asyncio.Lock())
        async with name_lock:
            flock = self._flock(job.name)
            try:
                if not flock.acquire(blocking=False):
                    await asyncio.to_thread(flock.acquire)
                return await self._fetch_locked(job)
            finally:
                flock.unlock()

    def _flock(self, name: str) -> NameLock:
        flock = self._flocks.pop(name, None) or self.store.lock(name)
        self._flocks[name] = flock
        while len(self._flocks) > FLOCK_CACHE:
            _, old = self._flocks.popitem(last=False)
            old.release()
        return flock

    async def _fetch_locked(self, job: Job) -> FetchResult:
        store, name, url = self.store, job.name, job.url
        # The lock was free, so a half-done state is a dead process's: repair it first.
        rec = store.record(name, with_checked=False)
        if store.needs_repair(name, rec):
            await asyncio.to_thread(store.repair, name)
            rec = store.record(name, with_checked=False)
        cur = rec.current if rec is not None else None
        same_source = cur is not None and cur.source == url
        staging: StagingFile | None = None
        hidden = False

        def new_sink() -> StagingFile:
            nonlocal staging
            if staging is not None:
                staging.discard()
            staging = store.new_staging(name)
            return staging

        async def on_response(v: Validators) -> None:
            nonlocal hidden
            need = v.content_length or 0
            free = store.free_bytes()
            if free - need < self.settings.min_free_space:
                raise FetchError(
                    f"not enough free space in {store.root}: {free} bytes free, the file needs "
                    f"{need} and min_free_space is {self.settings.min_free_space}", local=True)
            if (not hidden and self.settings.refresh_mode is RefreshMode.HIDE
                    and _changed(cur, same_source, v)):
                await asyncio.to_thread(store.begin_refresh, name, True)
                hidden = True

        try:
            outcome = await self.fetcher.fetch(
                url, new_sink,
                etag=cur.etag if same_source and cur else None,
                last_modified=cur.last_modified if same_source and cur else None,
                on_response=on_response,
                progress=job.progress,
            )
            now = time.time()
            if isinstance(outcome, NotModified):
                assert cur is not None  # 304 is only accepted for a conditional request
                if store.linked_sha256(name) == cur.sha256:
                    if now - self._touched.get(name, 0.0) >= 1.0:
                        self._touched[name] = now
                        store.touch_checked(name, now)
                else:
                    await asyncio.to_thread(store.mark_checked, name, cur, now)
                return FetchResult(status="unchanged", name=name, source=url, size=cur.size,
                                   sha256=cur.sha256, final_url=outcome.final_url)
            assert staging is not None
            return await self._finish(job, cur, outcome, staging, now)
        except FetchError as exc:
            if staging is not None:
                staging.discard()
            if hidden or (rec is not None and rec.state != "published"):
                await asyncio.to_thread(store.abort_refresh, name)
            kept = "previous version kept" if cur is not None else "nothing published"
            return FetchResult(status="failed", name=name, source=url,
                               message=f"{exc.reason}; {kept}")
        except BaseException:
            if staging is not None:
                staging.discard()
            if hidden:
                await asyncio.to_thread(store.abort_refresh, name)
            raise

    async def _finish(self, job: Job, cur: Version | None, d: Downloaded,
                      staging: StagingFile, now: float) -> FetchResult:
        store, name, url = self.store, job.name, job.url
        on_disk = os.fstat(staging.fd).st_size
        if on_disk != d.size:
            raise FetchError(f"staging file holds {on_disk} bytes, expected {d.size}", local=True)
        version = Version(
            sha256=d.sha256, size=d.size, source=url, final_url=d.final_url,
            etag=d.validators.etag, last_modified=d.validators.last_modified,
            content_length=d.validators.content_length, fetched_at=now,
        )
        if cur is not None and cur.sha256 == d.sha256 and store.object_path(d.sha256).exists():
            staging.discard()
            keep = replace(version, fetched_at=cur.fetched_at)
            await asyncio.to_thread(store.mark_checked, name, keep, now)
            return FetchResult(status="unchanged", name=name, source=url, size=d.size,
                               sha256=d.sha256, final_url=d.final_url)
        await asyncio.to_thread(store.ingest, staging, d.sha256)
        await asyncio.to_thread(store.commit, name, version)
        return FetchResult(status="published", name=name, source=url, size=d.size,
                           sha256=d.sha256, final_url=d.final_url)


def status_report(root: Path) -> dict[str, Any]:
    """Every published name with its source, size, hash, validators and times."""
    store = BootStore(root, create=False)
    files = []
    records = store.records() if store.meta_dir.is_dir() else []
    for rec in records:
        cur = rec.current
        files.append({
            "name": rec.name,
            "state": "hidden (refreshing)" if rec.hidden and rec.state != "published"
            else rec.state,
            "current": None if cur is None else {
                "source": cur.source,
                "final_url": cur.final_url,
                "size": cur.size,
                "sha256": cur.sha256,
                "etag": cur.etag,
                "last_modified": cur.last_modified,
                "content_length": cur.content_length,
            },
            "fetched": _iso(cur.fetched_at) if cur else None,
            "checked": _iso(rec.checked_at) if rec.checked_at else None,
        })
    return {"root": str(store.root), "files": files}
