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
    Record,
    RecoveryReport,
    StagingFile,
    Version,
)
from tftproxy.verify import ManifestCache, verify

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
    set: str | None = None
    generation: int | None = None

    @property
    def ok(self) -> bool:
        return self.status != "failed"

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"name": self.name, "status": self.status, "source": self.source}
        if self.ok:
            data.update(size=self.size, sha256=self.sha256)
            if self.final_url and self.final_url != self.source:
                data["final_url"] = self.final_url
            if self.set is not None:
                data["set"] = self.set
                data["generation"] = self.generation
        else:
            data["error"] = self.message
        return data


@dataclass
class Job:
    """One fetch of one name; any number of callers wait on it."""

    id: str
    name: str
    url: str
    set_id: str
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

    def failed(self, reason: str, *, kept: bool) -> FetchResult:
        suffix = "previous version kept" if kept else "nothing published"
        return FetchResult(status="failed", name=self.name, source=self.url,
                           message=f"{reason}; {suffix}")

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
        self.store = BootStore(settings.tftproot, pin_window=settings.pin_window)
        self.fetcher = Fetcher(settings)
        self._jobs: dict[str, Job] = {}
        self._active: dict[str, Job] = {}
        # One small lock per set ever requested: sets are few (boot media, not requests).
        self._set_locks: dict[str, asyncio.Lock] = {}
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
            set_id = self.store.set_id(prefix)
        except (PathRefused, FetchError) as exc:
            raise BadRequest(str(exc)) from None
        if scheme == "nfs":
            # Foreman sends nfs media paths too; smart-proxy accepts and ignores them.
            job = self._new_job(name, url, set_id)
            job.finish(FetchResult(status="ignored", name=name, source=url,
                                   message="nfs sources are not fetched"))
            self._retire(job)
            return job
        running = self._active.get(name)
        if running is not None and running.url == url and not running.done:
            if progress is not None:
                running.listeners.append(progress)
            return running
        job = self._new_job(name, url, set_id)
        if progress is not None:
            job.listeners.append(progress)
        self._active[name] = job
        task = asyncio.get_running_loop().create_task(self._run(job), name=f"fetch {name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return job

    def _new_job(self, name: str, url: str, set_id: str) -> Job:
        job = Job(id=secrets.token_hex(8), name=name, url=url, set_id=set_id,
                  started=time.time())
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
            # Up-to-date checks are most requests; the access log already shows them.
            log.log(logging.DEBUG if result.status == "unchanged" else logging.INFO,
                    "%s %s <- %s (%s bytes, sha256 %s)", result.status, job.name, job.url,
                    result.size, result.sha256)
        else:
            log.warning("fetch of %s for %s failed: %s", job.url, job.name, result.message)

    async def _fetch(self, job: Job) -> FetchResult:
        # One job per set at a time in this process; flocks cover other processes (the set's
        # lock first, then each member's, in name order, so two processes cannot deadlock).
        set_lock = self._set_locks.setdefault(job.set_id, asyncio.Lock())
        async with set_lock:
            held: list[NameLock] = []
            try:
                await self._lock_all([f"set:{job.set_id}", job.name], held)
                return await self._fetch_locked(job, held)
            finally:
                for flock in held:
                    flock.unlock()

    async def _lock_all(self, names: list[str], held: list[NameLock]) -> None:
        """Take the flocks of ``names`` in order (adding them to ``held``)."""
        for name in names:
            flock = self._flock(name)
            if flock in held:
                continue
            if not flock.acquire(blocking=False):
                await asyncio.to_thread(flock.acquire)
            held.append(flock)

    def _flock(self, name: str) -> NameLock:
        flock = self._flocks.pop(name, None) or self.store.lock(name)
        self._flocks[name] = flock
        while len(self._flocks) > FLOCK_CACHE:
            _, old = self._flocks.popitem(last=False)
            old.release()
        return flock

    async def _fetch_locked(self, job: Job, held: list[NameLock]) -> FetchResult:
        store, name, url = self.store, job.name, job.url
        # The locks were free, so a half-done state is a dead process's: repair it first.
        rec = store.record(name, with_checked=False)
        if store.needs_repair(name, rec):
            await asyncio.to_thread(store.repair, name)
            rec = store.record(name, with_checked=False)
        cur = rec.current if rec is not None else None
        change = _SetChange(self, job.set_id, held)
        try:
            first = await self._check_one(job, rec, change)
            if first.error is not None or first.download is None:
                was_hidden = change.hidden
                await change.restore()
                if first.error is not None:
                    return job.failed(first.error, kept=cur is not None)
                assert first.keep is not None
                if was_hidden:
                    # New validators, same bytes: remember them, or every check re-downloads.
                    await asyncio.to_thread(store.mark_checked, name, first.keep, time.time())
                return FetchResult(status="unchanged", name=name, source=url,
                                   size=first.keep.size, sha256=first.keep.sha256,
                                   final_url=first.final_url, set=job.set_id,
                                   generation=rec.generation if rec else None)
            # A member changed (or is new): the whole set is revalidated and switches as one.
            await self._lock_all(sorted(m.name for m in store.members(job.set_id)), held)
            return await self._publish_set(job, first, change)
        except BaseException:
            await change.restore()
            raise
        finally:
            change.discard_staging()

    async def _check_one(self, job: Job, rec: Record | None, change: _SetChange) -> _Checked:
        """Conditional fetch of one member; a 304 or the same hash keeps the current version."""
        store, name, url = self.store, job.name, job.url
        cur = rec.current if rec is not None else None
        same_source = cur is not None and cur.source == url
        checked = _Checked(name=name, url=url, current=cur)

        def new_sink() -> StagingFile:
            if checked.staging is not None:
                checked.staging.discard()
            checked.staging = store.new_staging(name)
            change.staging.append(checked.staging)
            return checked.staging

        async def on_response(v: Validators) -> None:
            need = v.content_length or 0
            free = store.free_bytes()
            if free - need < self.settings.min_free_space:
                raise FetchError(
                    f"not enough free space in {store.root}: {free} bytes free, the file needs "
                    f"{need} and min_free_space is {self.settings.min_free_space}", local=True)
            if _changed(cur, same_source, v):
                await change.hide()

        try:
            outcome = await self.fetcher.fetch(
                url, new_sink,
                etag=cur.etag if same_source and cur else None,
                last_modified=cur.last_modified if same_source and cur else None,
                on_response=on_response, progress=job.progress,
            )
        except FetchError as exc:
            checked.error = exc.reason
            return checked
        now = time.time()
        checked.final_url = outcome.final_url
        if isinstance(outcome, NotModified):
            assert cur is not None  # 304 is only accepted for a conditional request
            checked.keep = cur
            fresh = now - self._touched.get(name, 0.0) < 1.0
            if not fresh and not change.hidden and store.linked_sha256(name) == cur.sha256:
                self._touched[name] = now
                store.touch_checked(name, now)
            return checked
        assert checked.staging is not None
        on_disk = os.fstat(checked.staging.fd).st_size
        if on_disk != outcome.size:
            checked.error = f"staging file holds {on_disk} bytes, expected {outcome.size}"
            return checked
        version = Version(
            sha256=outcome.sha256, size=outcome.size, source=url, final_url=outcome.final_url,
            etag=outcome.validators.etag, last_modified=outcome.validators.last_modified,
            content_length=outcome.validators.content_length, fetched_at=now,
        )
        if cur is not None and cur.sha256 == outcome.sha256 and store.object_path(
                cur.sha256).exists():
            # Same bytes under new validators: keep the content, remember the validators.
            checked.staging.discard()
            checked.staging = None
            checked.keep = replace(version, fetched_at=cur.fetched_at, verified=cur.verified)
            if not change.hidden:
                await asyncio.to_thread(store.mark_checked, name, checked.keep, now)
            return checked
        checked.download = version
        return checked

    async def _publish_set(self, job: Job, first: _Checked, change: _SetChange) -> FetchResult:
        store = self.store
        others = [m for m in store.members(job.set_id) if m.name != job.name]
        member_jobs = [self._member_job(m) for m in others]
        await change.hide()
        checks = [first]
        if others:
            checks += await asyncio.gather(
                *(self._check_one(mj, m, change) for mj, m in zip(member_jobs, others,
                                                                     strict=True)))
        failures = [c for c in checks if c.error is not None]
        if not failures:
            failures = await self._verify(checks)
        if failures:
            await change.restore()
            detail = "; ".join(f"{c.name}: {c.error}" for c in failures)
            reason = f"boot set {job.set_id} not switched: {detail}"
            for mj, c in zip(member_jobs, checks[1:], strict=True):
                mj.finish(mj.failed(c.error or f"boot set not switched: {detail}", kept=True))
                self._retire(mj)
            return job.failed(reason, kept=first.current is not None)
        versions: dict[str, Version] = {}
        gc_lock = store.gc_lock()
        try:
            await asyncio.to_thread(gc_lock.acquire, blocking=True, shared=True)
            for c in checks:
                if c.download is not None:
                    assert c.staging is not None
                    await asyncio.to_thread(store.ingest, c.staging, c.download.sha256)
                    c.staging = None
                    versions[c.name] = c.download
                else:
                    assert c.keep is not None
                    versions[c.name] = c.keep
            srec = await asyncio.to_thread(store.publish_generation, job.set_id, versions,
                                           time.time())
        finally:
            gc_lock.release()
        change.published()
        results = []
        for c in checks:
            v = versions[c.name]
            results.append(FetchResult(
                status="published" if c.download is not None else "unchanged", name=c.name,
                source=c.url, size=v.size, sha256=v.sha256, final_url=c.final_url,
                set=job.set_id, generation=srec.current))
        for mj, result in zip(member_jobs, results[1:], strict=True):
            mj.finish(result)
            self._retire(mj)
            log.info("%s %s (revalidated with %s) in generation %d of %s", result.status,
                     mj.name, job.name, srec.current, job.set_id)
        return results[0]

    async def _verify(self, checks: list[_Checked]) -> list[_Checked]:
        """Check the new generation against the distribution's checksums; returns failures.

        Every member, kept ones too, is checked against the same manifest: a kept kernel that
        the mirror's new manifest no longer lists as is means the mirror is mid-sync.
        """
        cache = ManifestCache(self.fetcher)
        mode = self.settings.verify
        failures = []
        for c in checks:
            version = c.download or c.keep
            assert version is not None
            try:
                result = await verify(cache, version.final_url, version.sha256, mode, c.name)
            except FetchError as exc:
                c.error = exc.reason.removeprefix(f"{c.name}: ")
                failures.append(c)
                continue
            verified = replace(version, verified=result.how)
            if c.download is not None:
                c.download = verified
            else:
                c.keep = verified
        return failures

    def _member_job(self, rec: Record) -> Job:
        """A job for a member revalidated on behalf of another: requests for it join it."""
        assert rec.current is not None
        job = self._new_job(rec.name, rec.current.source, rec.set or rec.name)
        running = self._active.get(rec.name)
        if running is None or running.done:
            self._active[rec.name] = job
        return job


@dataclass
class _Checked:
    """The outcome of checking one member of a set against its upstream."""

    name: str
    url: str
    current: Version | None
    final_url: str | None = None
    staging: StagingFile | None = None
    download: Version | None = None  # new content, staged, not yet published
    keep: Version | None = None  # the content stays (304 or same hash)
    error: str | None = None


class _SetChange:
    """Hiding and restoring the members of a set while a new generation is prepared."""

    def __init__(self, files: BootFiles, set_id: str, held: list[NameLock]) -> None:
        self.files = files
        self.set_id = set_id
        self.held = held
        self.hidden = False
        self._hidden_names: list[str] = []
        self.staging: list[StagingFile] = []
        self._done = False

    async def hide(self) -> None:
        """In hide mode, take every member out of the tree (once) until the switch."""
        if self.hidden or self.files.settings.refresh_mode is not RefreshMode.HIDE:
            return
        self.hidden = True
        store = self.files.store
        members = store.members(self.set_id)
        # Their locks first: a recovering process must not take our hiding for a crash's.
        await self.files._lock_all(sorted(m.name for m in members), self.held)
        for member in members:
            await asyncio.to_thread(store.begin_refresh, member.name, True)
            self._hidden_names.append(member.name)

    async def restore(self) -> None:
        """Put the previous versions back (after a failure, or when nothing changed)."""
        if self._done:
            return
        self._done = True
        for name in self._hidden_names:
            await asyncio.to_thread(self.files.store.abort_refresh, name)

    def published(self) -> None:
        self._done = True

    def discard_staging(self) -> None:
        for staging in self.staging:
            staging.discard()


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
                "verified": cur.verified or "not checked",
            },
            "set": rec.set,
            "generation": rec.generation,
            "fetched": _iso(cur.fetched_at) if cur else None,
            "checked": _iso(rec.checked_at) if rec.checked_at else None,
        })
    sets = []
    for srec in store.set_records():
        sets.append({
            "set": srec.name,
            "current": srec.current,
            "state": srec.state,
            "generations": [
                {"generation": g.number, "current": g.number == srec.current,
                 "published": _iso(g.published_at),
                 "retired": _iso(g.retired_at) if g.retired_at else None,
                 "members": dict(sorted(g.members.items()))}
                for g in srec.generations
            ],
        })
    return {"root": str(store.root), "files": files, "sets": sets}
