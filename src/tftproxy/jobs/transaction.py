"""A boot set's transaction: check, hide, verify and switch its members as one generation.

When one member changed (or is new), every other member of the set is revalidated in the
same transaction; all switch together, as one new generation, once every member is complete
and verified. If any fails, nothing switches and every hidden member gets its previous
version back. Requests for the other members meanwhile join this transaction's member jobs.

Members taken from one OCI artifact share one resolution of its reference in a transaction
(``self.oci``), so they switch together by construction: when the reference moved, even to a
manifest whose layer for the requested member is the same, every member is revalidated
against that one manifest and the set records it whole, or not at all.

A failure of this machine (a full disk, a name the tree cannot take, files another user owns)
ends the transaction like an upstream failure: a one-line reason, every staging file freed
first (so the restore has the space it needs), then every hidden member restored, each on its
own (one that cannot be put back does not keep the others hidden).

A background revalidation (:mod:`tftproxy.jobs.revalidate`) runs the same transaction with
``whole_set``: every member is checked at once, and a set found up to date publishes nothing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import replace

from tftproxy.errors import NameRefused, UpstreamError
from tftproxy.fetch.oci import OciManifests
from tftproxy.fetch.verify import ManifestCache, TextSource, verify
from tftproxy.jobs.check import Changed, Check, Checker, Failed, Unchanged
from tftproxy.jobs.hiding import SetChanges, describe_os_error
from tftproxy.jobs.locking import LockCache, LockSet
from tftproxy.jobs.observer import JobObserver
from tftproxy.jobs.options import JobOptions
from tftproxy.jobs.registry import Job, JobRegistry
from tftproxy.jobs.results import FetchResult
from tftproxy.store.aio import AsyncStore
from tftproxy.store.records import Record, Version

log = logging.getLogger(__name__)


class SetTransaction:
    """One job's transaction over its boot set; ``changes`` are the check's hooks."""

    def __init__(self, job: Job, *, store: AsyncStore, checker: Checker, registry: JobRegistry,
                 locks: LockCache, options: JobOptions, manifests: TextSource,
                 observer: JobObserver | None = None, whole_set: bool = False,
                 member_jobs: dict[str, Job] | None = None) -> None:
        self.job = job
        self._observer = observer
        # Whether the name had a published version when the transaction began.
        self.had_version = False
        self._store = store
        self._checker = checker
        self._registry = registry
        self._locks = locks
        self._options = options
        self._manifests = manifests
        self._lockset = LockSet(locks)
        self.changes = SetChanges(store, self._lockset, options.refresh_mode, job.set_id,
                                  OciManifests(checker.oci))
        # Every job made for another member (to end the ones the transaction never reached).
        self._member_jobs: list[Job] = []
        self._whole_set = whole_set
        # Jobs made by the caller for the other members, so requests could join them early.
        self._given_jobs = member_jobs or {}
        # The set's generation when the locks were taken (what a revalidation reports).
        self.generation_before: int | None = None

    # ------------------------------------------------------------------- run

    async def run(self) -> FetchResult:
        job = self.job
        try:
            async with self._locks.set_lock(job.set_id):
                try:
                    await self._lockset.acquire([f"set:{job.set_id}", job.name])
                    result = await self._run_locked()
                finally:
                    self._lockset.release()
        except OSError as exc:
            log.error("fetch of %s for %s: %s", job.url, job.name, describe_os_error(exc))
            result = self._failed(f"cannot change the TFTP tree: {describe_os_error(exc)}")
        for mj in self._member_jobs:
            if not mj.done:  # the transaction ended before their part was decided
                mj.finish(mj.failed(f"boot set not switched: {result.message}", kept=True))
                self._registry.retire(mj)
        return result

    def _failed(self, reason: str) -> FetchResult:
        """The job's failure; says so when a previous version could not be put back."""
        unrestored = self.changes.unrestored
        if unrestored:
            reason += f"; could not put back {', '.join(unrestored)}"
        return self.job.failed(reason, kept=self.had_version and not unrestored)

    async def _run_locked(self) -> FetchResult:
        job, store = self.job, self._store
        # The locks were free, so a half-done state is a dead process's: repaired first.
        rec = await store.repaired_record(job.name)
        cur = rec.current if rec is not None else None
        self.had_version = cur is not None
        self.generation_before = rec.generation if rec is not None else None
        if self._whole_set and (cur is None or cur.source != job.url or rec is None
                                or rec.set != job.set_id):
            # A request changed the set while the revalidation waited for its locks: never
            # refetch a source the set no longer has; the next round looks at it afresh.
            return job.failed(f"boot set {job.set_id} changed while waiting to be checked; "
                              f"checked again next round", kept=cur is not None)
        try:
            if self._whole_set:
                return await self._revalidate(cur)
            if cur is None:
                # A host may boot during the first fetch (after a 202): our servers hold its
                # requests until the file is published, whatever the refresh mode.
                await self.changes.begin_first_fetch(job.name)
            first = await self._checker.check(job.name, job.url, cur, job.progress,
                                              self.changes)
            if isinstance(first, Failed):
                await self.changes.restore()
                return self._failed(first.reason)
            if isinstance(first, Unchanged) and not first.moved:
                was_hidden = self.changes.hidden
                await self.changes.restore()
                if was_hidden:
                    # New validators, same bytes: remember them, or every check re-downloads.
                    await store.mark_checked(job.name, first.version, time.time())
                return FetchResult(status="unchanged", name=job.name, source=job.url,
                                   size=first.version.size, sha256=first.version.sha256,
                                   final_url=first.final_url, set=job.set_id,
                                   generation=rec.generation if rec else None)
            members = await store.members(job.set_id)
            await self._lockset.acquire(sorted(m.name for m in members))
            return await self._switch(first, [m for m in members if m.name != job.name])
        except BaseException:
            await self.changes.restore()
            raise
        finally:
            self.changes.oci.close()
            await self.changes.discard_staging()

    async def _revalidate(self, cur: Version | None) -> FetchResult:
        """Whole-set mode: every member checked at once; the set switches if any changed."""
        job = self.job
        members = await self._store.members(job.set_id)
        await self._lockset.acquire(sorted(m.name for m in members))
        others = [m for m in members if m.name != job.name]
        member_jobs = [self._member_job(m) for m in others]
        checks = await asyncio.gather(
            self._checker.check(job.name, job.url, cur, job.progress, self.changes),
            *(self._checker.check(mj.name, mj.url, m.current, mj.progress, self.changes)
              for mj, m in zip(member_jobs, others, strict=True)))
        if not any(isinstance(c, Changed) or (isinstance(c, Unchanged) and c.moved)
                   or isinstance(c, Failed) for c in checks):
            # Every member up to date: nothing to verify, record or switch.
            return await self._all_unchanged(list(checks), member_jobs, record=False)
        return await self._settle(list(checks), member_jobs)

    async def _switch(self, first: Changed | Unchanged, others: list[Record]) -> FetchResult:
        member_jobs = [self._member_job(m) for m in others]
        if isinstance(first, Changed):
            await self.changes.hide()
        checks: list[Check] = [first]
        checks += await asyncio.gather(*(
            self._checker.check(mj.name, mj.url, m.current, mj.progress, self.changes)
            for mj, m in zip(member_jobs, others, strict=True)))
        return await self._settle(checks, member_jobs)

    async def _settle(self, checks: list[Check], member_jobs: list[Job]) -> FetchResult:
        """Verify and switch the checked members as one generation, or switch nothing."""
        job = self.job
        if not any(isinstance(c, Failed) for c in checks):
            checks = await self._verify(checks)
        failures = [c for c in checks if isinstance(c, Failed)]
        if not failures and not any(isinstance(c, Changed) for c in checks):
            return await self._all_unchanged(checks, member_jobs)
        srec = None
        if not failures:
            staged = {c.name: (c.version, c.staging if isinstance(c, Changed) else None)
                      for c in checks if not isinstance(c, Failed)}
            try:
                srec = await self._store.publish(job.set_id, staged, time.time())
            except FileNotFoundError as exc:
                # Content found in the store (an OCI layer, not downloaded again) was cleaned
                # up before the switch: nothing switched.
                failures = [Failed(job.name, job.url, f"{exc}: clean-up removed it meanwhile; "
                                                      f"try again")]
            except (NameRefused, OSError) as exc:
                reason = str(exc) if isinstance(exc, NameRefused) else describe_os_error(exc)
                failures = [Failed(job.name, job.url, f"cannot publish: {reason}")]
        if srec is None:
            await self.changes.restore()
            detail = "; ".join(f"{c.name}: {c.reason}" for c in failures)
            failed = {c.name: c for c in failures}
            for mj in member_jobs:
                own = failed.get(mj.name)
                reason = own.reason if own else f"boot set not switched: {detail}"
                mj.finish(mj.failed(reason, kept=True))
                self._registry.retire(mj)
            return self._failed(f"boot set {job.set_id} not switched: {detail}")
        self.changes.settled()
        results = []
        for c in checks:
            assert not isinstance(c, Failed)
            results.append(FetchResult(
                status="published" if isinstance(c, Changed) else "unchanged", name=c.name,
                source=c.url, size=c.version.size, sha256=c.version.sha256,
                final_url=c.final_url, set=job.set_id, generation=srec.current))
        for mj, result in zip(member_jobs, results[1:], strict=True):
            mj.finish(result)
            self._registry.retire(mj)
        return results[0]

    async def _all_unchanged(self, checks: list[Check], member_jobs: list[Job], *,
                             record: bool = True) -> FetchResult:
        """A moved OCI reference whose manifest holds the same bytes for every member: no new
        generation, only the new manifest recorded for each. Without ``record`` (a whole-set
        check that found every member up to date) nothing is written."""
        await self.changes.restore()
        now = time.time()
        results = []
        for c in checks:
            assert isinstance(c, Unchanged)
            generation = self.generation_before
            if record:
                generation = (await self._store.mark_checked(c.name, c.version, now)).generation
            results.append(FetchResult(
                status="unchanged", name=c.name, source=c.url, size=c.version.size,
                sha256=c.version.sha256, final_url=c.final_url, set=self.job.set_id,
                generation=generation))
        for mj, result in zip(member_jobs, results[1:], strict=True):
            mj.finish(result)
            self._registry.retire(mj)
        return results[0]

    def _member_job(self, rec: Record) -> Job:
        """A job for a member revalidated on behalf of another: requests for it join it."""
        assert rec.current is not None
        made = self._given_jobs.get(rec.name)
        if made is not None and made.url == rec.current.source and not made.done:
            self._member_jobs.append(made)
            return made
        job = self._registry.new(rec.name, rec.current.source, rec.set or rec.name)
        self._registry.start_unless_running(job)
        self._member_jobs.append(job)
        return job

    async def _verify(self, checks: list[Check]) -> list[Check]:
        """Check the new generation against the distribution's checksums.

        Every member, kept ones too, is checked against the same manifest: a kept kernel that
        the mirror's new manifest no longer lists as is means the mirror is mid-sync.
        """
        cache = ManifestCache(self._manifests)
        out: list[Check] = []
        for c in checks:
            if isinstance(c, Failed) or c.version.manifest_digest is not None:
                # An OCI layer is verified by construction: its bytes match its digest.
                out.append(c)
                continue
            try:
                how = (await verify(cache, c.version.final_url, c.version.sha256,
                                    self._options.verify, c.name)).how
            except UpstreamError as exc:
                out.append(Failed(c.name, c.url, exc.reason.removeprefix(f"{c.name}: ")))
                if self._observer is not None:
                    self._observer.verification_failed(exc.reason)
                continue
            out.append(replace(c, version=replace(c.version, verified=how)))
        return out
