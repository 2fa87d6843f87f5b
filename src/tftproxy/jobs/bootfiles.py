"""Boot-file requests: what a fetch means for the store, shared by the API and the CLI.

:meth:`BootFiles.request` checks the request, then joins the running job of its name or
starts one; each job runs one :class:`~tftproxy.jobs.transaction.SetTransaction`. Its
:attr:`BootFiles.sync` revalidates whole sets through the same transaction (background, now).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import replace
from typing import Protocol

from tftproxy.errors import InputError, ShuttingDown
from tftproxy.fetch.schemes import Fetchers, check_scheme, file_name
from tftproxy.jobs.check import Checker
from tftproxy.jobs.locking import LockCache
from tftproxy.jobs.observer import JobObserver
from tftproxy.jobs.options import JobOptions, RefreshMode, SyncOptions
from tftproxy.jobs.registry import Job, JobRegistry, ProgressFn
from tftproxy.jobs.results import FetchResult, failure_text
from tftproxy.jobs.sync import Syncer
from tftproxy.jobs.transaction import SetTransaction
from tftproxy.logs import fields
from tftproxy.store.aio import AsyncStore
from tftproxy.store.recovery import RecoveryReport

log = logging.getLogger(__name__)
# Each job's outcome, one line; a caller that shows outcomes itself (the CLI) mutes it.
results_log = logging.getLogger("tftproxy.fetches")


class Transaction(Protocol):
    # Whether the requested name had a published version when the transaction began.
    had_version: bool

    async def run(self) -> FetchResult: ...


class BootFiles:
    """The boot-file service of one process: its store, fetcher and running jobs.

    It owns all three: :meth:`close` ends the jobs and closes the fetcher and the store.
    """

    def __init__(self, store: AsyncStore, fetcher: Fetchers, options: JobOptions,
                 observer: JobObserver | None = None, sync: SyncOptions | None = None) -> None:
        self.store = store
        self.fetcher = fetcher
        self.options = options
        self.observer = observer
        self.registry = JobRegistry(options.job_retention, options.fresh_for)
        self._locks = LockCache(store)
        self._checker = Checker(store, fetcher, options)
        self._tasks: dict[asyncio.Task[None], Job] = {}
        self.draining = False
        # "<name> <- <url>" of every fetch a drain cancelled.
        self.aborted: list[str] = []
        self.sync = Syncer(self, sync or SyncOptions())

    def reconfigure(self, options: JobOptions) -> None:
        """New options for the jobs started from now on (a reload)."""
        self.options = options
        self.registry.retention = options.job_retention
        self.registry.fresh_for = options.fresh_for
        self._checker.options = options

    async def drain(self, timeout: float) -> list[Job]:  # noqa: ASYNC109 - a grace, not a limit
        """Refuse new requests, let running jobs finish for up to ``timeout`` seconds, then
        cancel the rest (each puts back its previous versions); returns the cancelled."""
        self.draining = True
        # Background revalidations are not waited for: the next start resumes them.
        await self.sync.close()
        running = list(self._tasks)
        if running:
            await asyncio.wait(running, timeout=timeout)
        late = {task: job for task, job in self._tasks.items() if not task.done()}
        self.aborted += [f"{job.name} <- {job.url}" for job in late.values()]
        for task in late:
            task.cancel()
        for task in late:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        return list(late.values())

    async def recover(self) -> RecoveryReport:
        """Repair what an interrupted run left, then keep records in memory."""
        report = await self.store.recover()
        await self.store.watch()
        if report.changed:
            log.info(
                "recovered after an interrupted run: %d staging file(s) removed, restored %s, "
                "completed %s, relinked %s, dropped %s",
                report.staging_removed, report.restored, report.completed, report.relinked,
                report.dropped,
            )
        return report

    async def close(self) -> None:
        await self.drain(0)  # stops the sync dispatcher too
        await self.fetcher.close()
        self._locks.close()
        await self.store.close()

    def check_open(self) -> None:
        """ShuttingDown once a drain began: no new job starts."""
        if self.draining:
            raise ShuttingDown("tftproxy is shutting down: retry in a moment")

    def job(self, job_id: str) -> Job | None:
        return self.registry.get(job_id)

    async def request(self, prefix: str, url: str, progress: ProgressFn | None = None, *,
                      keep: bool = False) -> Job:
        """Start (or join) the fetch of ``url`` to ``prefix``; raises InputError for bad input.

        ``keep``: serve the old version until the new one is published, whatever
        ``refresh_mode`` says (no host waits for a prefetch).
        """
        self.check_open()
        if not prefix or not url:
            raise InputError("both 'prefix' and 'path' are required")
        scheme = check_scheme(url)
        name, set_id = await self.store.target(prefix, url, file_name(url))
        if not keep:
            self.sync.note_request(set_id)
        return self._start(name, set_id, url, scheme, progress, keep=keep)

    async def request_named(self, name: str, url: str,
                            progress: ProgressFn | None = None) -> Job:
        """The same for an exact name (smart-proxy's ``{source, destination}``): its set is
        its directory, as for a prefix ending in ``/``."""
        self.check_open()
        scheme = check_scheme(url)
        (name,) = await self.store.check_names([name])
        set_id = name.rpartition("/")[0] + "/"
        self.sync.note_request(set_id)
        return self._start(name, set_id, url, scheme, progress)

    def _start(self, name: str, set_id: str, url: str, scheme: str,
               progress: ProgressFn | None, *, keep: bool = False) -> Job:
        registry = self.registry
        if scheme == "nfs":
            # Foreman sends nfs media paths too; smart-proxy accepts and ignores them.
            job = registry.new(name, url, set_id)
            job.finish(FetchResult(status="ignored", name=name, source=url,
                                   message="nfs sources are not fetched"))
            registry.retire(job)
            return job
        # No await from here on: a request that arrives meanwhile joins what starts here.
        running = registry.joinable(name, url)
        if running is not None:
            if progress is not None:
                running.listeners.append(progress)
            return running
        job = registry.new(name, url, set_id)
        if progress is not None:
            job.listeners.append(progress)
        registry.start(job)
        self.launch(job, self.transaction(job, keep=keep))
        return job

    def transaction(self, job: Job, *, keep: bool = False, whole_set: bool = False,
                    member_jobs: dict[str, Job] | None = None) -> SetTransaction:
        """The transaction ``job`` runs; see :class:`SetTransaction` for ``whole_set``."""
        options = replace(self.options, refresh_mode=RefreshMode.KEEP) if keep else self.options
        return SetTransaction(job, store=self.store, checker=self._checker,
                              registry=self.registry, locks=self._locks, options=options,
                              manifests=self.fetcher, observer=self.observer,
                              whole_set=whole_set, member_jobs=member_jobs)

    async def run_job(self, job: Job, transaction: Transaction) -> FetchResult:
        """Run a job started by the caller (a revalidation's) to its end, in this task."""
        if self.observer is not None:
            self.observer.fetch_started()
        await self._run(job, transaction)
        assert job.result is not None
        return job.result

    def launch(self, job: Job, transaction: Transaction) -> None:
        """Run ``transaction`` for the (registered, started) ``job`` in a task of its own."""
        task = asyncio.get_running_loop().create_task(self._run(job, transaction),
                                                      name=f"fetch {job.name}")
        self._tasks[task] = job
        task.add_done_callback(self._forget)
        if self.observer is not None:
            self.observer.fetch_started()

    def _forget(self, task: asyncio.Task[None]) -> None:
        self._tasks.pop(task, None)

    @property
    def checker(self) -> Checker:
        return self._checker

    @property
    def locks(self) -> LockCache:
        return self._locks

    async def _run(self, job: Job, transaction: Transaction) -> None:
        started = time.monotonic()
        try:
            result = await transaction.run()
        except asyncio.CancelledError:
            result = job.failed("aborted: tftproxy is shutting down", kept=transaction.had_version)
            job.finish(result)
            self.registry.retire(job)
            self._observe(result, started)
            log.warning("aborted fetch of %s for %s after %.1f s (tftproxy is shutting down): "
                        "%s", job.url, job.name, time.monotonic() - started,
                        "previous version put back" if transaction.had_version
                        else "nothing was published", extra=fields(file=job.name, url=job.url))
            raise
        except Exception as exc:  # a bug must still answer the waiting callers
            log.exception("fetch of %s failed unexpectedly", job.url)
            result = FetchResult(status="failed", name=job.name, source=job.url,
                                 message=f"internal error: {exc!r}")
        job.finish(result)
        self.registry.retire(job)
        self._observe(result, started)
        if result.ok:
            # Up-to-date checks are most requests; the access log already shows them.
            results_log.log(logging.DEBUG if result.status == "unchanged" else logging.INFO,
                            "%s %s <- %s (%s bytes, sha256 %s)", result.status, job.name,
                            job.url, result.size, result.sha256,
                            extra=fields(file=job.name, url=job.url, bytes=result.size))
        else:
            # An error, not a warning: the caller may have had its 202 long ago, and this line
            # is what Foreman shows of it (its proxy page lists and counts the proxy's errors).
            results_log.error("%s (boot file %s)", failure_text(job.url, result), job.name,
                              extra=fields(file=job.name, url=job.url))

    def _observe(self, result: FetchResult, started: float) -> None:
        if self.observer is not None:
            self.observer.fetch_finished(result, time.monotonic() - started)
