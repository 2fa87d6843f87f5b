"""Keeping boot sets current before anyone boots: the background revalidation and "sync now".

One dispatcher per process decides which sets to revalidate and starts them, each through
:func:`~tftproxy.jobs.revalidate.revalidate_set` (the request path's transaction, in keep
mode): sets asked for now (``tftproxy sync``, ``POST /tftp/sync``, the prefetch list at
start) first, then, in ``serve``, every set whose next check is due (:mod:`.schedule` says
when, :mod:`.catalogue` keeps the schedules). At most ``concurrency`` sets run at once, and
at most ``host_concurrency`` of them from one upstream host, so a round over hundreds of
sets never hammers a mirror. A "sync now" of a set being revalidated joins that run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from tftproxy.errors import InputError, NotFound, TftproxyError
from tftproxy.fetch.schemes import file_name
from tftproxy.jobs.catalogue import Catalogue, Entry
from tftproxy.jobs.options import SyncOptions
from tftproxy.jobs.results import iso_time
from tftproxy.jobs.revalidate import SetOutcome, failed_outcome, prefetch_set, revalidate_set

if TYPE_CHECKING:
    from tftproxy.jobs.bootfiles import BootFiles

log = logging.getLogger(__name__)

# The dispatcher looks again at least this often, whatever is due.
MAX_SLEEP = 60.0


@dataclass
class SyncRun:
    """One "sync now" (API or CLI): its sets and their outcomes as they come in."""

    id: str
    sets: list[str]
    started: float
    outcomes: dict[str, SetOutcome] = field(default_factory=dict)
    finished: float | None = None
    _done: asyncio.Event = field(default_factory=asyncio.Event)

    def deliver(self, outcome: SetOutcome | None = None) -> bool:
        """Take a set's outcome; True when that ended the run."""
        if outcome is not None and outcome.set in self.sets and outcome.set not in self.outcomes:
            self.outcomes[outcome.set] = outcome
        if len(self.outcomes) < len(self.sets) or self.finished is not None:
            return False
        self.finished = time.time()
        self._done.set()
        return True

    @property
    def done(self) -> bool:
        return self._done.is_set()

    async def wait(self, seconds: float | None = None) -> bool:
        """Whether the run has ended (within ``seconds``)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._done.wait(), seconds)
        return self.done

    @property
    def failed(self) -> list[SetOutcome]:
        return [o for o in self.outcomes.values() if o.status == "failed"]

    def to_json(self) -> dict[str, Any]:
        counts = Counter(o.status for o in self.outcomes.values())
        data: dict[str, Any] = {
            "id": self.id, "url": f"/tftp/sync/{self.id}",
            "state": "done" if self.done else "running",
            "started": iso_time(self.started),
            "total": len(self.sets),
            **{k: counts.get(k, 0) for k in ("unchanged", "updated", "failed")},
            "sets": [self.outcomes[s].to_json() for s in self.sets if s in self.outcomes],
            "pending": [s for s in self.sets if s not in self.outcomes],
        }
        if self.finished is not None:
            data["finished"] = iso_time(self.finished)
        return data


class Syncer:
    """The revalidation dispatcher of one :class:`~tftproxy.jobs.bootfiles.BootFiles`."""

    def __init__(self, files: BootFiles, options: SyncOptions, *,
                 rand: Callable[[], float] = random.random) -> None:
        self._files = files
        self.options = options
        self.catalogue = Catalogue(files.store, options, rand)
        self._wanted: dict[str, list[SyncRun]] = {}  # sets asked for now, in order
        self._listeners: dict[str, list[SyncRun]] = {}  # runs waiting for a running set
        self._running: dict[str, asyncio.Task[None]] = {}
        self._busy_hosts: Counter[str] = Counter()
        self._runs: dict[str, SyncRun] = {}
        self._wake = asyncio.Event()
        self._dispatcher: asyncio.Task[None] | None = None
        self._prefetch_pending = False
        self.counts: Counter[str] = Counter()

    # ------------------------------------------------------------ the edges

    def start(self) -> None:
        """``serve``: fetch the prefetch list, then keep every set current (if an interval
        is set). Returns at once; the work runs on the event loop."""
        self.catalogue.background = self.options.interval > 0
        self.catalogue.refresh_at = 0.0  # schedules made without a background are redone
        self._prefetch_pending = bool(self.options.prefetch)
        if self.catalogue.background or self._prefetch_pending:
            self._ensure_dispatcher()
            self._wake.set()

    def note_request(self, set_id: str) -> None:
        """A request asked for a member of ``set_id``: the set is in use (not idle)."""
        self.catalogue.asked[set_id] = time.time()

    def run(self, run_id: str) -> SyncRun | None:
        return self._runs.get(run_id)

    async def sync(self, prefixes: Sequence[str] = ()) -> SyncRun:
        """Revalidate the sets of ``prefixes`` (every published set when empty) now.

        Raises InputError for a malformed prefix and NotFound for one with no set; the
        returned run ends when every set has an outcome.
        """
        self._files.check_open()
        now = time.time()
        entries = self.catalogue.entries
        await self.catalogue.refresh(now, self._running)
        set_ids: list[str] = []
        for prefix in prefixes:
            if not prefix.strip():
                raise InputError("prefix is empty")
            set_id = await self.catalogue.set_id(prefix)
            if set_id not in entries:
                raise NotFound(f"no boot set is published under prefix {prefix!r}")
            if set_id not in set_ids:
                set_ids.append(set_id)
        if not prefixes:
            set_ids = sorted(entries)
        run = SyncRun(id=secrets.token_hex(8), sets=set_ids, started=now)
        self._runs[run.id] = run
        for set_id in set_ids:
            waiting = self._listeners if set_id in self._running else self._wanted
            waiting.setdefault(set_id, []).append(run)
        self._deliver(run, None)  # a run over no set ends at once
        self._ensure_dispatcher()
        self._wake.set()
        return run

    def summary(self) -> dict[str, Any]:
        """What the dispatcher is doing, for ``GET /tftp/status``."""
        return {"background": self.catalogue.background, "interval": self.options.interval,
                "sets": len(self.catalogue.entries), "running": sorted(self._running),
                "queued": len(self._wanted), "counts": dict(self.counts)}

    async def close(self) -> None:
        tasks = list(self._running.values())
        if self._dispatcher is not None:
            tasks.append(self._dispatcher)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._dispatcher = None
        for set_id, runs in [*self._wanted.items(), *self._listeners.items()]:
            for run in runs:
                run.deliver(failed_outcome(set_id, "cancelled: tftproxy is shutting down"))
        self._wanted.clear()
        self._listeners.clear()

    def _deliver(self, run: SyncRun, outcome: SetOutcome | None) -> None:
        if run.deliver(outcome):
            # Finished runs stay visible at their status URL as long as finished jobs do.
            asyncio.get_running_loop().call_later(self._files.options.job_retention,
                                                  self._runs.pop, run.id, None)

    # ------------------------------------------------------------ dispatching

    def _ensure_dispatcher(self) -> None:
        if self._dispatcher is None or self._dispatcher.done():
            self._dispatcher = asyncio.get_running_loop().create_task(
                self._dispatch(), name="tftproxy sync")

    async def _dispatch(self) -> None:
        catalogue = self.catalogue
        while True:
            self._wake.clear()
            if self._prefetch_pending:
                self._prefetch_pending = False
                for set_id in await catalogue.add_prefetch():
                    if set_id not in self._running:
                        self._wanted.setdefault(set_id, [])
            now = time.time()
            if catalogue.background and now >= catalogue.refresh_at:
                try:
                    await catalogue.refresh(now, self._running)
                except (OSError, TftproxyError) as exc:
                    log.warning("sync: cannot read the boot sets: %s", exc)
                    catalogue.refresh_at = now + MAX_SLEEP
            self._start_ready(now)
            wake_at = catalogue.next_event(self._running)
            delay = None if wake_at is None else min(max(wake_at - time.time(), 0.01), MAX_SLEEP)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)

    def _start_ready(self, now: float) -> None:
        """Start what may run now: asked-for sets first, then due ones, within the limits."""
        entries = self.catalogue.entries
        for set_id in list(self._wanted):
            if len(self._running) >= self.options.concurrency:
                return
            entry = entries.get(set_id)
            if entry is None:
                for run in self._wanted.pop(set_id):
                    self._deliver(run, failed_outcome(set_id,
                                                      f"no boot set {set_id} is published"))
            elif set_id in self._running or self._hosts_free(entry):
                # Joins the set's running check, or starts one.
                self._listeners.setdefault(set_id, []).extend(self._wanted.pop(set_id))
                if set_id not in self._running:
                    self._launch(entry)
        for entry in self.catalogue.due(now, self._running):
            if len(self._running) >= self.options.concurrency:
                return
            if self._hosts_free(entry):
                self._launch(entry)

    def _hosts_free(self, entry: Entry) -> bool:
        return all(self._busy_hosts[h] < self.options.host_concurrency for h in entry.hosts)

    def _launch(self, entry: Entry) -> None:
        self._busy_hosts.update(entry.hosts)
        self._running[entry.set] = asyncio.get_running_loop().create_task(
            self._run_set(entry), name=f"sync {entry.set}")

    async def _run_set(self, entry: Entry) -> None:
        try:
            outcome = await self._check(entry)
            if entry.set in self.catalogue.entries:
                await self._record(entry, outcome)
            for run in self._listeners.pop(entry.set, []):
                self._deliver(run, outcome)
        finally:
            self._running.pop(entry.set, None)
            self._busy_hosts.subtract(entry.hosts)
            self._wake.set()

    async def _check(self, entry: Entry) -> SetOutcome:
        files = self._files
        try:
            if entry.prefetch is not None and await self._needs_prefetch(entry):
                # Reported under the set's id even when its prefix could not be resolved.
                return replace(await prefetch_set(files, entry.prefetch), set=entry.set)
            return await revalidate_set(files, entry.set)
        except NotFound as exc:
            self.catalogue.forget(entry.set)
            return failed_outcome(entry.set, str(exc))
        except TftproxyError as exc:
            return failed_outcome(entry.set, str(exc), entry.state.generation)
        except Exception as exc:  # a bug must still end the waiting runs
            log.exception("sync of boot set %s failed unexpectedly", entry.set)
            return failed_outcome(entry.set, f"internal error: {exc!r}", entry.state.generation)

    async def _needs_prefetch(self, entry: Entry) -> bool:
        """Whether a configured URL is not (yet) a member: then it is requested."""
        assert entry.prefetch is not None
        store = self._files.store
        sources = {m.name: m.current.source for m in await store.members(entry.set)
                   if m.current is not None}
        for url in entry.prefetch.urls:
            name, _ = await store.target(entry.prefetch.prefix, url, file_name(url))
            if sources.get(name) != url:
                return True
        return False

    async def _record(self, entry: Entry, outcome: SetOutcome) -> None:
        """Count and log the outcome; keep the set's new schedule in the store."""
        state = self.catalogue.note_outcome(entry, outcome)
        self.counts["checked"] += 1
        self.counts[outcome.status] += 1
        later = "" if state.next_check is None else \
            f"; next check in {state.next_check - time.time():.0f} s"
        if outcome.status == "failed":
            log.warning("sync: boot set %s failed (%d in a row%s): %s", entry.set,
                        state.failures, later, outcome.message)
        else:
            log.log(logging.INFO if outcome.status == "updated" else logging.DEBUG,
                    "sync: %s%s", outcome.line(), later)
        await self.catalogue.write([state])
