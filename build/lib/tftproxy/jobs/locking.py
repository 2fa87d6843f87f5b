"""Locks for a set transaction: in-process per set, flocks across processes.

One job per set runs at a time in this process (an asyncio lock); flocks cover other
processes (``tftproxy fetch`` beside ``serve``): the set's lock first, then each member's, in
name order, so two processes cannot deadlock. Lock files stay open in a small cache, so an
up-to-date check costs no open().
"""

from __future__ import annotations

import asyncio
from collections import Counter, OrderedDict
from collections.abc import Iterable

from tftproxy.store.aio import AsyncStore, acquire_lock
from tftproxy.store.locks import NameLock

# Lock files kept open (each is one descriptor); least recently used ones are closed.
FLOCK_CACHE = 256


class LockCache:
    """Open lock files by name, and the in-process lock of each set."""

    def __init__(self, store: AsyncStore) -> None:
        self._store = store
        self._flocks: OrderedDict[str, NameLock] = OrderedDict()
        # Names whose flock some transaction holds: closing those would drop the lock.
        self._held: Counter[str] = Counter()
        # One small lock per set ever requested: sets are few (boot media, not requests).
        self._set_locks: dict[str, asyncio.Lock] = {}

    def set_lock(self, set_id: str) -> asyncio.Lock:
        return self._set_locks.setdefault(set_id, asyncio.Lock())

    async def hold(self, name: str) -> NameLock:
        """The flock of ``name``, kept open until :meth:`let_go`."""
        flock = self._flocks.pop(name, None) or await self._store.open_lock(name)
        self._flocks[name] = flock
        self._held[name] += 1
        if len(self._flocks) > FLOCK_CACHE:
            for old in [n for n in self._flocks if n not in self._held][
                    :len(self._flocks) - FLOCK_CACHE]:
                self._flocks.pop(old).release()
        return flock

    def let_go(self, name: str) -> None:
        """The flock of ``name`` is unlocked; the cache may close it."""
        self._held[name] -= 1
        if self._held[name] <= 0:
            del self._held[name]

    def close(self) -> None:
        for flock in self._flocks.values():
            flock.release()
        self._flocks.clear()


class LockSet:
    """The flocks one transaction holds; :meth:`release` drops them all."""

    def __init__(self, cache: LockCache) -> None:
        self._cache = cache
        self._held: list[tuple[str, NameLock]] = []
        self._names: set[str] = set()

    async def acquire(self, names: Iterable[str]) -> None:
        """Take the flocks of ``names`` in the order given (those held already are kept)."""
        for name in names:
            if name in self._names:
                continue
            flock = await self._cache.hold(name)
            self._names.add(name)
            try:
                await acquire_lock(flock)
            except BaseException:
                self._names.discard(name)
                self._cache.let_go(name)
                raise
            self._held.append((name, flock))

    def release(self) -> None:
        for name, flock in self._held:
            flock.unlock()
            self._cache.let_go(name)
        self._held.clear()
        self._names.clear()
