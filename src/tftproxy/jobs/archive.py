"""An archive request's transaction: the archive fetched like any boot file, the chosen members
extracted from it, all published with their aliases as one generation of one boot set.

The archive goes through the same check as every boot file (conditional GET, hashed as it
streams, hidden while a changed version downloads, verified against ``SHA256SUMS`` beside it
or a ``.treeinfo`` above it). Then the members are extracted on a thread, from the new staging
file or from the stored archive, each into its own staging file (verified against the image's
own manifests), and the store switches the archive, the members and the aliases together. A
reader sees the old universe or the new one; if anything fails nothing switches and hidden
names come back. An unchanged archive whose universe already holds what the request asks for
redoes nothing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import replace

from tftproxy.errors import UnsupportedSource, UpstreamError
from tftproxy.fetch.extract import Extracted, Limits, extract_members
from tftproxy.fetch.oci import OciManifests
from tftproxy.fetch.schemes import FETCHED, check_scheme
from tftproxy.fetch.verify import ManifestCache, verify
from tftproxy.jobs.bootfiles import BootFiles
from tftproxy.jobs.check import Changed, Failed, Unchanged
from tftproxy.jobs.extract_spec import ExtractSpec
from tftproxy.jobs.hiding import SetChanges
from tftproxy.jobs.locking import LockSet
from tftproxy.jobs.options import RefreshMode
from tftproxy.jobs.registry import Job, ProgressFn
from tftproxy.jobs.results import FetchResult
from tftproxy.store.objects import StagingFile
from tftproxy.store.records import Record, Version


class Archives:
    """Archive requests of one process, run as jobs of its :class:`BootFiles`."""

    def __init__(self, files: BootFiles) -> None:
        self.files = files
        self._signatures: dict[str, str] = {}

    async def request(self, spec: ExtractSpec, progress: ProgressFn | None = None) -> Job:
        """Start (or join, for the same request) the archive's job; InputError if bad."""
        files = self.files
        files.check_open()
        if check_scheme(spec.source) not in FETCHED:
            raise UnsupportedSource(f"{spec.source!r}: archives are fetched over http, "
                                    "https, ftp or oci only")
        spec = spec.with_names(await files.store.check_names(spec.names))
        registry = files.registry
        # No await from here on: a request that arrives meanwhile joins what starts here.
        running = registry.joinable(spec.destination, spec.source)
        if running is not None and self._signatures.get(running.id) == spec.signature:
            if progress is not None:
                running.listeners.append(progress)
            return running
        job = registry.new(spec.destination, spec.source, spec.set_id)
        if progress is not None:
            job.listeners.append(progress)
        registry.start(job)
        self._signatures[job.id] = spec.signature
        files.launch(job, ArchiveTransaction(job, spec, files, self._forget))
        return job

    def _forget(self, job: Job) -> None:
        self._signatures.pop(job.id, None)

    def busy(self, directory: str) -> str | None:
        """The name being fetched or extracted in ``directory``, if any (smart-proxy's 409)."""
        inside = directory.rstrip("/") + "/"
        for job in self.files.registry.active():
            if job.name.startswith(inside):
                return job.name
        return None


class ArchiveTransaction:
    """One archive job; ``changes`` are the check's hooks, as for a set transaction."""

    def __init__(self, job: Job, spec: ExtractSpec, files: BootFiles,
                 done: Callable[[Job], None] | None = None, *, keep: bool = False) -> None:
        self.job = job
        self.spec = spec
        self._files = files
        self._store = files.store
        self._lockset = LockSet(files.locks)
        # keep: a background revalidation hides nothing (no host is waiting for it).
        mode = RefreshMode.KEEP if keep else files.options.refresh_mode
        self.changes = SetChanges(self._store, self._lockset, mode, spec.set_id,
                                  OciManifests(files.checker.oci))
        self._done = done
        # Whether the archive had a published version when the transaction began.
        self.had_version = False

    # ------------------------------------------------------------------- run

    async def run(self) -> FetchResult:
        spec = self.spec
        try:
            async with self._files.locks.set_lock(spec.set_id):
                try:
                    await self._lockset.acquire([f"set:{spec.set_id}", *sorted(spec.names)])
                    return await self._run_locked()
                finally:
                    self._lockset.release()
        finally:
            if self._done is not None:
                self._done(self.job)

    async def _run_locked(self) -> FetchResult:
        job, spec, store = self.job, self.spec, self._store
        # The locks were free: a half-done state of any of these names is a dead process's.
        records = {name: await store.repaired_record(name) for name in spec.names}
        rec = records[spec.destination]
        cur = rec.current if rec is not None else None
        self.had_version = cur is not None
        try:
            for name, record in records.items():
                if record is None or record.current is None:
                    # As for a boot file: a host booting meanwhile waits for the first version.
                    await self.changes.begin_first_fetch(name)
            check = await self._files.checker.check(
                job.name, job.url, cur, job.progress, self.changes,
                preflight=self._files.options.preflight)
            if isinstance(check, Failed):
                await self.changes.restore()
                return job.failed(check.reason, kept=cur is not None)
            if isinstance(check, Unchanged):
                if await self._satisfied(records):
                    was_hidden = self.changes.hidden
                    await self.changes.restore()
                    if was_hidden:
                        await store.mark_checked(job.name, check.version, time.time())
                    return self._result("unchanged", check.version, rec.generation if rec
                                        else None)
                version, staging = check.version, None
                path = str(store.content_path(version.sha256))
            else:
                version = await self._verified(check)
                # An OCI layer already in the store is not staged again: read it in place.
                staging = check.staging
                path = str(staging.path if staging is not None
                           else store.content_path(version.sha256))
            staged = await self._extract(path, version)
            staged[spec.destination] = (version, staging)
            srec = await store.publish(spec.set_id, staged, time.time())
            self.changes.settled()
            return self._result("published", version, srec.current)
        except UpstreamError as exc:
            await self.changes.restore()
            return job.failed(exc.reason, kept=cur is not None)
        except BaseException:
            await self.changes.restore()
            raise
        finally:
            await self.changes.discard_staging()

    def _result(self, status: str, version: Version, generation: int | None) -> FetchResult:
        assert status in ("published", "unchanged")
        return FetchResult(status="published" if status == "published" else "unchanged",
                           name=self.job.name, source=self.job.url, size=version.size,
                           sha256=version.sha256, final_url=version.final_url,
                           set=self.spec.set_id, generation=generation)

    async def _satisfied(self, records: dict[str, Record | None]) -> bool:
        """Whether the published universe is already what the request asks for."""
        spec = self.spec
        archive = records[spec.destination]
        if archive is None or archive.set != spec.set_id:
            return False
        current = [r for r in await self._store.members(spec.set_id)
                   if r.generation == archive.generation]
        by_name = {r.name: r.current for r in current if r.current is not None}
        for name, member in spec.files.items():
            got = by_name.get(name)
            if got is None or got.member != member or got.alias is not None:
                return False
        for link, target in spec.symlinks.items():
            got = by_name.get(link)
            if got is None or got.alias != target:
                return False
        return spec.destination in by_name

    async def _verified(self, check: Changed) -> Version:
        """The new archive checked against the checksums published beside it."""
        cache = ManifestCache(self._files.fetcher, beside=True)
        try:
            how = (await verify(cache, check.version.final_url, check.version.sha256,
                                self._files.options.verify, check.name)).how
        except UpstreamError as exc:
            if self._files.observer is not None:
                self._files.observer.verification_failed(exc.reason)
            raise
        return replace(check.version, verified=how)

    async def _extract(self, path: str, archive: Version,
                       ) -> dict[str, tuple[Version, StagingFile | None]]:
        spec, store = self.spec, self._store
        sinks: dict[str, StagingFile] = {}
        for name, member in spec.files.items():
            sinks[member] = staging = await store.new_staging(name)
            self.changes.track(staging)
        limits = Limits(self._files.options.max_unpacked_size,
                        self._files.fetcher.options.max_file_size)
        label = spec.destination
        got: dict[str, Extracted] = await asyncio.to_thread(
            extract_members, path, spec.kind, sinks, limits, label)
        now = time.time()
        staged: dict[str, tuple[Version, StagingFile | None]] = {}
        for name, member in spec.files.items():
            out = got[member]
            staged[name] = (Version(sha256=out.sha256, size=out.size, source=archive.source,
                                    final_url=archive.final_url, fetched_at=now,
                                    verified=out.verified, member=member), sinks[member])
        for link, target in spec.symlinks.items():
            version = staged[target][0]
            staged[link] = (replace(version, alias=target, member=None,
                                    verified=f"alias of {target}"), None)
        return staged
