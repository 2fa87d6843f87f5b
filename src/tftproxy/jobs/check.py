"""Checking one member of a boot set against its upstream: Unchanged, Changed or Failed.

A conditional GET with the validators of the published version; a 304 or a 200 with the same
sha256 keeps it (Unchanged), new bytes are left staged (Changed), anything else fails with a
one-line reason (Failed). When the response says the representation changed, the set is
hidden (in hide mode) before the body downloads, so a host put in build mode waits for it.

An OCI member's validator is the digest its reference resolves to, asked once per transaction
(:class:`~tftproxy.fetch.oci.OciManifests`): the same digest is Unchanged at the cost of one
request; a new one names the layer by its digest, which is the content's name in the store, so
a layer the store holds is never downloaded again.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Protocol

from tftproxy.errors import BadSource, UpstreamError
from tftproxy.fetch.http import Fetcher
from tftproxy.fetch.oci import OciClient, OciManifests
from tftproxy.fetch.ocispec import OciSource, find_layer, is_oci, parse_source
from tftproxy.fetch.results import NotModified, ProgressFn, Sink, SinkFactory, Validators
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
    # An OCI member whose reference moved to a new manifest holding the same bytes: the rest
    # of its set is revalidated against that manifest before the move is recorded.
    moved: bool = False


@dataclass(frozen=True)
class Changed:
    """New content, complete and staged (or already in the store: no staging), not yet
    published."""

    name: str
    url: str
    version: Version
    staging: StagingFile | None
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
        return True
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

    @property
    def oci(self) -> OciManifests: ...


class Checker:
    """Runs member checks for the jobs of one process."""

    def __init__(self, store: AsyncStore, fetcher: Fetcher, options: JobOptions) -> None:
        self.store = store
        self.fetcher = fetcher
        self.options = options
        self.oci = OciClient(fetcher)
        self._touched: dict[str, float] = {}

    def _sinks(self, name: str, change: SetChangeHooks) -> tuple[SinkFactory, list[StagingFile]]:
        """Staging files for a download's attempts, and the list whose last one is current."""
        staged: list[StagingFile] = []

        async def new_sink() -> Sink:
            # Each attempt gets a new, empty file: a broken transfer is never continued.
            if staged:
                await self.store.discard(staged.pop())
            staging = await self.store.new_staging(name)
            staged.append(staging)
            change.track(staging)
            return staging

        return new_sink, staged

    async def _staged_short(self, staging: StagingFile, size: int) -> str | None:
        on_disk = await self.store.staged_size(staging)
        return None if on_disk == size else f"staging file holds {on_disk} bytes, expected {size}"

    def _confirm(self, name: str, cur: Version, now: float, change: SetChangeHooks) -> None:
        if now - self._touched.get(name, 0.0) >= TOUCH_INTERVAL and not change.hidden:
            self._touched[name] = now
            self.store.confirm(name, cur.sha256, now)

    async def check(self, name: str, url: str, cur: Version | None, progress: ProgressFn,
                    change: SetChangeHooks, *, preflight: bool = False) -> Check:
        if is_oci(url):
            try:
                src = parse_source(url)
            except BadSource as exc:
                return Failed(name, url, str(exc))
            return await self._check_oci(name, src, cur, progress, change)
        store = self.store
        same_source = cur is not None and cur.source == url
        new_sink, staged = self._sinks(name, change)

        async def on_response(v: Validators) -> None:
            await self._check_space(v.content_length or 0)
            if representation_changed(cur, same_source, v):
                await change.hide()

        try:
            outcome = await self.fetcher.fetch(
                url, new_sink,
                etag=cur.etag if same_source and cur else None,
                last_modified=cur.last_modified if same_source and cur else None,
                on_response=on_response, progress=progress, preflight=preflight,
            )
        except UpstreamError as exc:
            return Failed(name, url, exc.reason)
        now = time.time()
        if isinstance(outcome, NotModified):
            assert cur is not None  # 304 is only accepted for a conditional request
            self._confirm(name, cur, now, change)
            return Unchanged(name, url, cur, outcome.final_url)
        staging = staged[-1]
        short = await self._staged_short(staging, outcome.size)
        if short is not None:
            return Failed(name, url, short)
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

    async def _check_oci(self, name: str, src: OciSource, cur: Version | None,
                         progress: ProgressFn, change: SetChangeHooks) -> Check:
        url, store = src.url, self.store
        same_source = cur is not None and cur.source == url
        try:
            digest = await change.oci.resolve(src)
            now = time.time()
            if same_source and cur is not None and cur.manifest_digest == digest:
                self._confirm(name, cur, now, change)
                return Unchanged(name, url, cur, cur.final_url)
            image = await change.oci.image(src, digest)
            layer = find_layer(image, src.title, src.shown())
            version = Version(
                sha256=layer.sha256, size=layer.size, source=url,
                final_url=src.pinned(image.digest), content_length=layer.size, fetched_at=now,
                verified=f"sha256 is the layer's digest in manifest {image.digest}",
                manifest_digest=digest)
            if (cur is not None and cur.sha256 == layer.sha256
                    and await store.has_object(cur.sha256)):
                kept = replace(version, fetched_at=cur.fetched_at)
                if not same_source and not change.hidden:
                    await store.mark_checked(name, kept, now)
                return Unchanged(name, url, kept, kept.final_url, moved=same_source)
            if layer.size > self.fetcher.options.max_file_size:
                raise UpstreamError(f"{src.title!r} is {layer.size} bytes, more than "
                                    f"max_file_size ({self.fetcher.options.max_file_size})")
            if await store.has_object(layer.sha256):
                return Changed(name, url, version, None, version.final_url)
            await self._check_space(layer.size)
            if cur is not None:
                await change.hide()
            new_sink, staged = self._sinks(name, change)
            await self.oci.download(src, layer, new_sink, progress)
        except UpstreamError as exc:
            return Failed(name, url, exc.reason)
        short = await self._staged_short(staged[-1], layer.size)
        if short is not None:
            return Failed(name, url, short)
        return Changed(name, url, replace(version, fetched_at=time.time()), staged[-1],
                       version.final_url)

    async def _check_space(self, need: int) -> None:
        free = await self.store.free_bytes()
        minimum = self.options.min_free_space
        if free - need < minimum:
            raise UpstreamError(
                f"not enough free space in {self.store.root}: {free} bytes free, the file "
                f"needs {need} and min_free_space is {minimum}", local=True)

