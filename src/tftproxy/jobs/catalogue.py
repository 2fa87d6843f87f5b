"""The sets the revalidation knows, and each one's schedule, kept in step with the store.

The store's set records say which sets exist; its sync state files hold each set's schedule
and last outcome, so a restart keeps the schedule and ``status`` (or another process) shows
it. The catalogue is re-read every ``REFRESH_EVERY`` seconds, which also adopts what another
process (``tftproxy sync``) checked meanwhile. When a set is checked next is
:mod:`tftproxy.jobs.schedule`'s rule; here it is applied.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, replace
from urllib.parse import urlsplit

from tftproxy.errors import TftproxyError
from tftproxy.fetch.schemes import file_name
from tftproxy.jobs.options import PrefetchSet, SyncOptions
from tftproxy.jobs.revalidate import SetOutcome
from tftproxy.jobs.schedule import first_check, is_idle, next_check
from tftproxy.store import BootStore
from tftproxy.store.aio import AsyncStore
from tftproxy.store.syncstate import SyncState

log = logging.getLogger(__name__)

# How often serve re-reads which sets exist (and what other processes checked).
REFRESH_EVERY = 30.0


def host_of(url: str) -> str:
    """The upstream host a URL is fetched from: what politeness is counted per."""
    return (urlsplit(url).hostname or url).lower()


@dataclass(frozen=True)
class _Known:
    """A published set as the store has it: read on a store thread."""

    set: str
    hosts: frozenset[str]
    last_checked: float  # the latest check of any member (by a request, or a sync)
    state: SyncState | None


def _read(store: BootStore) -> tuple[list[_Known], list[str]]:
    """Every published set, and the sync states of sets that are gone."""
    states = store.sync_states.all()
    known = []
    for srec in store.records.set_records():
        gen = srec.generation(srec.current)
        hosts: set[str] = set()
        last = 0.0
        for name in sorted(gen.members if gen else ()):
            # The time of a member's last check is only needed for a set seen the first time.
            rec = store.records.record(name, with_checked=srec.name not in states)
            if rec is None or rec.current is None or rec.set != srec.name:
                continue
            hosts.add(host_of(rec.current.source))
            last = max(last, rec.checked_at)
        if hosts:
            known.append(_Known(srec.name, frozenset(hosts), last, states.get(srec.name)))
    names = {k.set for k in known}
    return known, [s for s in states if s not in names]


def _set_id(store: BootStore, prefix: str) -> str:
    return store.names.set_id(prefix)


@dataclass
class Entry:
    """A set the revalidation knows: its upstream hosts and its schedule."""

    set: str
    hosts: frozenset[str]
    state: SyncState
    last_checked: float = 0.0
    prefetch: PrefetchSet | None = None


class Catalogue:
    """The known sets of one process; ``background``: schedule them (``serve``)."""

    def __init__(self, store: AsyncStore, options: SyncOptions,
                 rand: Callable[[], float]) -> None:
        self._store = store
        self.options = options
        self._rand = rand
        self.entries: dict[str, Entry] = {}
        self.asked: dict[str, float] = {}
        self.background = False
        self.refresh_at = 0.0

    async def set_id(self, prefix: str) -> str:
        return await self._store.call(lambda store: _set_id(store, prefix))

    def due(self, now: float, running: Collection[str]) -> list[Entry]:
        """The scheduled sets whose check is due, the longest overdue first."""
        if not self.background:
            return []
        due = [e for e in self.entries.values() if e.state.next_check is not None
               and e.state.next_check <= now and e.set not in running]
        return sorted(due, key=lambda e: e.state.next_check or 0.0)

    def next_event(self, running: Collection[str]) -> float | None:
        """When something is due next (a check, or the next refresh); None: nothing."""
        if not self.background:
            return None
        due = [e.state.next_check for e in self.entries.values()
               if e.state.next_check is not None and e.set not in running]
        return min([self.refresh_at, *due])

    def note_outcome(self, entry: Entry, outcome: SetOutcome) -> SyncState:
        """The entry's state after a check: its outcome and its next check."""
        now = time.time()
        state = entry.state
        failed = outcome.status == "failed"
        failures = state.failures + 1 if failed else 0
        asked = max(state.asked_at, self.asked.get(entry.set, 0.0))
        idle = is_idle(asked, now, self.options, prefetched=entry.prefetch is not None)
        entry.state = replace(
            state, checked_at=outcome.checked_at, outcome=outcome.status,
            message=outcome.message, from_generation=outcome.from_generation,
            generation=outcome.generation, failures=failures,
            failed_total=state.failed_total + failed, asked_at=asked,
            next_check=next_check(now, failures=failures, idle=idle, options=self.options,
                                  u=self._rand()))
        entry.last_checked = outcome.checked_at
        return entry.state

    def forget(self, set_id: str) -> None:
        entry = self.entries.get(set_id)
        if entry is not None and entry.prefetch is None:
            del self.entries[set_id]

    async def write(self, states: list[SyncState]) -> None:
        if not states:
            return

        def put(store: BootStore) -> None:
            for state in states:
                store.sync_states.put(state)

        try:
            await self._store.call(put)
        except OSError as exc:  # advisory: the schedule in memory stays right
            log.warning("sync: cannot write the sync state: %s", exc)

    async def add_prefetch(self) -> list[str]:
        """Every prefetch entry becomes a known set; returns their set ids."""
        with contextlib.suppress(OSError, TftproxyError):
            await self.refresh(time.time(), ())
        out = []
        for entry in self.options.prefetch:
            try:
                url = entry.urls[0]
                _, set_id = await self._store.target(entry.prefix, url, file_name(url))
            except TftproxyError as exc:
                log.error("prefetch of %s: %s", entry.prefix, exc)
                continue
            known = self.entries.get(set_id)
            if known is None:
                known = self.entries[set_id] = Entry(
                    set_id, frozenset(host_of(u) for u in entry.urls), SyncState(set=set_id))
            known.prefetch = entry
            out.append(set_id)
        return out

    async def refresh(self, now: float, running: Collection[str]) -> None:
        """Re-read which sets exist; adopt what another process checked since."""
        known, gone = await self._store.call(_read)
        self.refresh_at = now + REFRESH_EVERY
        changed: list[SyncState] = []
        for k in known:
            entry = self.entries.get(k.set)
            if entry is None:
                entry = self.entries[k.set] = Entry(
                    k.set, k.hosts, k.state or SyncState(set=k.set, asked_at=k.last_checked))
            elif (k.state is not None and k.state.checked_at > entry.state.checked_at
                  and k.set not in running):
                entry.state = replace(k.state, asked_at=max(k.state.asked_at,
                                                            entry.state.asked_at))
            entry.hosts = k.hosts
            entry.last_checked = max(entry.last_checked, k.last_checked)
            before = entry.state
            asked = max(before.asked_at, self.asked.get(k.set, 0.0))
            entry.state = replace(before, asked_at=asked)
            entry.state = replace(entry.state, next_check=self._sane_next(entry, now))
            if entry.state != before or k.state is None:
                changed.append(entry.state)
        present = {k.set for k in known}
        for set_id in [s for s, e in self.entries.items()
                       if s not in present and e.prefetch is None and s not in running]:
            del self.entries[set_id]
        await self.write(changed)
        if gone:
            def drop(store: BootStore) -> None:
                for set_id in gone:
                    store.sync_states.drop(set_id)

            with contextlib.suppress(OSError):
                await self._store.call(drop)

    def _sane_next(self, entry: Entry, now: float) -> float | None:
        """The entry's next check under this process's settings.

        A stored time is kept unless it is later than these settings allow (the interval was
        shortened, or a request woke an idle set); a set never checked is scheduled anew.
        """
        if not self.background:
            return entry.state.next_check
        state, options = entry.state, self.options
        idle = is_idle(state.asked_at, now, options, prefetched=entry.prefetch is not None)
        last = state.checked_at or entry.last_checked
        if state.failures > 0:
            cap = state.checked_at + options.backoff_max
        else:
            interval = options.idle_interval if idle else options.interval
            if interval <= 0:
                return None
            # An overdue set was put at a random moment of the jitter window: it stays there.
            cap = max(last + interval * (1.0 + options.jitter), now + interval * options.jitter)
        if state.next_check is not None and state.next_check <= cap:
            return state.next_check
        if state.failures > 0:
            return max(now, cap)
        return first_check(now, last, idle=idle, options=options, u=self._rand())
