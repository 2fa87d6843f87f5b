"""The job registry: one running job per published name, every caller joined to it.

Every request for the same name and URL while a job runs joins it and receives its result
(smart-proxy silently dropped such requests), and so does one that comes within ``fresh_for``
seconds after the job succeeded: Foreman's Build PXE Default asks for every host group's
kernel and initrd at once, and a check that just ended is as good as a new one. Finished jobs
stay visible at their status URL for ``job_retention`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tftproxy.jobs.progress import RateMeter
from tftproxy.jobs.results import FetchResult, failed, iso_time

ProgressFn = Callable[[int, int | None], None]
# Outcomes that say what upstream holds now; "ignored" (nfs) and failures say nothing.
FRESH = frozenset({"published", "unchanged"})


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
    meter: RateMeter = field(default_factory=RateMeter)
    _done: asyncio.Event = field(default_factory=asyncio.Event)

    def progress(self, done: int, total: int | None) -> None:
        self.bytes_done, self.bytes_total = done, total
        self.meter.add(done)
        for fn in self.listeners:
            fn(done, total)

    def failed(self, reason: str, *, kept: bool) -> FetchResult:
        return failed(self.name, self.url, reason, kept=kept)

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
            "progress": {"bytes": self.bytes_done, "total": self.bytes_total,
                         **self.meter.to_json(self.bytes_done, self.bytes_total)},
            "started": iso_time(self.started),
            "url": f"/tftp/fetch_boot_file/{self.id}",
        }
        if self.result is not None:
            data["finished"] = iso_time(self.finished or 0.0)
            data["result"] = self.result.to_json()
        return data


class JobRegistry:
    """Jobs by id (while retained) and the running one of each name."""

    def __init__(self, retention: float, fresh_for: float = 0.0) -> None:
        self.retention = retention
        self.fresh_for = fresh_for
        self._by_id: dict[str, Job] = {}
        self._running: dict[str, Job] = {}
        self._fresh: dict[str, Job] = {}  # the last job of each name that succeeded

    def get(self, job_id: str) -> Job | None:
        return self._by_id.get(job_id)

    def new(self, name: str, url: str, set_id: str) -> Job:
        job = Job(id=secrets.token_hex(8), name=name, url=url, set_id=set_id,
                  started=time.time())
        self._by_id[job.id] = job
        return job

    def running(self, name: str) -> Job | None:
        job = self._running.get(name)
        return job if job is not None and not job.done else None

    def joinable(self, name: str, url: str) -> Job | None:
        """The job a request for ``name`` from ``url`` joins, if any: the running one, or
        one that succeeded less than ``fresh_for`` seconds ago."""
        job = self.running(name) or self._fresh.get(name)
        if job is None or job.url != url:
            return None
        if job.finished is not None and time.time() - job.finished >= self.fresh_for:
            return None
        return job

    def start(self, job: Job) -> None:
        """``job`` is now the running job of its name."""
        self._running[job.name] = job

    def start_unless_running(self, job: Job) -> None:
        """A member revalidated on behalf of another: requests for it join it, unless the
        name already has a running job of its own."""
        if self.running(job.name) is None:
            self._running[job.name] = job

    def retire(self, job: Job) -> None:
        """The job has ended: it stays visible by id for the retention time."""
        if self._running.get(job.name) is job:
            del self._running[job.name]
        loop = asyncio.get_running_loop()
        loop.call_later(self.retention, self._by_id.pop, job.id, None)
        if self.fresh_for > 0 and job.result is not None and job.result.status in FRESH:
            job.listeners.clear()  # nothing more to report: no progress of a finished job
            self._fresh[job.name] = job
            loop.call_later(self.fresh_for, self._expire, job)
        elif self._fresh.get(job.name) is not None:
            # A failure or another URL since: the earlier success answers nothing more.
            del self._fresh[job.name]

    def _expire(self, job: Job) -> None:
        if self._fresh.get(job.name) is job:
            del self._fresh[job.name]

    def active(self) -> list[Job]:
        """The jobs still running."""
        return [job for job in self._running.values() if not job.done]
