"""Checking one member of a boot set against its upstream: Unchanged, Changed or Failed.

A conditional GET with the validators of the published version; a 304 or a 200 with the same
sha256 keeps it (Unchanged), new bytes are left staged (Changed), anything else fails with a
one-line reason (Failed). When the response says the representation changed, the set is
hidden (in hide mode) before the body downloads, so a host put in build mode waits for it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Protocol

from tftproxy.errors import UpstreamError
from tftproxy.fetch.http import Fetcher
from tftproxy.fetch.results import NotModified, ProgressFn, Sink, Validators
from tftproxy.jobs.options import JobOptions
from tftproxy.store.aio import AsyncStore
from tftproxy.store.objects import StagingFile
from tftproxy.store.records import Version

# An up-to-date name's "last checked" time is written at most this often.
TOUCH_INTERVAL = 1.0


@dataclass(frozen=True)
class Unchanged:
    """The published content stays (304, or the same bytes under new validators)."""

    name: str
    url: str
    version: Version
    final_url: str | None


@dataclass(frozen=True)
class Changed:
    """New content, complete and staged, not yet published."""

    name: str
    url: str
    version: Version
    staging: StagingFile
    final_url: str


@dataclass(frozen=True)
class Failed:
    name: str
    url: str
    reason: str


Check = Unchanged | Changed | Failed


def representation_changed(cur: Version | None, same_source: bool, v: Validators) -> bool:
    """Whether a 200's headers say the representation differs from the published one.

    Without validators nothing can be said before the hash is known, so the old version
    stays served until the hash proves a change.
    """
    if cur is None:
        return False
    if not same_source:
        # An adopted file of unknown source may well be these very bytes: the hash decides.
        return bool(cur.source)
    if v.etag and cur.etag:
        return v.etag != cur.etag
    if v.content_length is not None and v.content_length != cur.size:
        return True
    if v.last_modified and cur.last_modified:
        return v.last_modified != cur.last_modified
    return False


class SetChangeHooks(Protocol):
    """What a check may do to its set's transaction: hide the set, hand it staging files."""

    @property
    def hidden(self) -> bool: ...

    async def hide(self) -> None: ...

    def track(self, staging: StagingFile) -> None: ...


class Checker:
    """Runs member checks for the jobs of one process."""

    def __init__(self, store: AsyncStore, fetcher: Fetcher, options: JobOptions) -> None:
        self.store = store
        self.fetcher = fetcher
        self.options = options
        self._touched: dict[str, float] = {}

    async def check(self, name: str, url: str, cur: Version | None, progress: ProgressFn,
                    change: SetChangeHooks) -> Check:
        store = self.store
        same_source = cur is not None and cur.source == url
        staged: list[StagingFile] = []

        async def new_sink() -> Sink:
            # Each attempt gets a new, empty file: a broken transfer is never continued.
            if staged:
                await store.discard(staged.pop())
            staging = await store.new_staging(name)
            staged.append(staging)
            change.track(staging)
            return staging

        async def on_response(v: Validators) -> None:
            await self._check_space(v.content_length or 0)
            if representation_changed(cur, same_source, v):
                await change.hide()

        try:
            outcome = await self.fetcher.fetch(
                url, new_sink,
                etag=cur.etag if same_source and cur else None,
                last_modified=cur.last_modified if same_source and cur else None,
                on_response=on_response, progress=progress,
            )
        except UpstreamError as exc:
            return Failed(name, url, exc.reason)
        now = time.time()
        if isinstance(outcome, NotModified):
            assert cur is not None  # 304 is only accepted for a conditional request
            if now - self._touched.get(name, 0.0) >= TOUCH_INTERVAL and not change.hidden:
                self._touched[name] = now
                store.confirm(name, cur.sha256, now)
            return Unchanged(name, url, cur, outcome.final_url)
        staging = staged[-1]
        on_disk = await store.staged_size(staging)
        if on_disk != outcome.size:
            return Failed(name, url, f"staging file holds {on_disk} bytes, expected "
                                     f"{outcome.size}")
        version = Version(
            sha256=outcome.sha256, size=outcome.size, source=url, final_url=outcome.final_url,
            etag=outcome.validators.etag, last_modified=outcome.validators.last_modified,
            content_length=outcome.validators.content_length, fetched_at=now,
        )
        if (cur is not None and cur.sha256 == outcome.sha256
                and await store.has_object(cur.sha256)):
            # Same bytes under new validators: keep the content, remember the validators.
            await store.discard(staging)
            kept = replace(version, fetched_at=cur.fetched_at, verified=cur.verified)
            if not change.hidden:
                await store.mark_checked(name, kept, now)
            return Unchanged(name, url, kept, outcome.final_url)
        return Changed(name, url, version, staging, outcome.final_url)

    async def _check_space(self, need: int) -> None:
        free = await self.store.free_bytes()
        minimum = self.options.min_free_space
        if free - need < minimum:
            raise UpstreamError(
                f"not enough free space in {self.store.root}: {free} bytes free, the file "
                f"needs {need} and min_free_space is {minimum}", local=True)

