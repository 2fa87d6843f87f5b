"""Revalidating one whole boot set now: the background sync's and ``tftproxy sync``'s unit.

It is the request path's transaction (:class:`~tftproxy.jobs.transaction.SetTransaction`)
run over every member, in keep mode (no host is waiting, so nothing is hidden): conditional
requests, one new generation when anything changed, verified, published in one batch; a
failure keeps the last good generation. It joins work already running for the set (a
request-driven job) instead of starting a second, and registers a job per member first, so
requests that arrive meanwhile join it. A set extracted from an archive (a bootloader
universe) is revalidated as ``fetch_and_process`` would redo it: the archive checked, its
members extracted again only if it changed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tftproxy.errors import NotFound, TftproxyError
from tftproxy.fetch.extract import ArchiveKind
from tftproxy.fetch.schemes import file_name
from tftproxy.jobs.extract_spec import ExtractSpec
from tftproxy.jobs.options import PrefetchSet
from tftproxy.jobs.registry import Job
from tftproxy.jobs.results import FetchResult, iso_time
from tftproxy.store.records import Record
from tftproxy.store.syncstate import SyncOutcome

if TYPE_CHECKING:
    from tftproxy.jobs.bootfiles import BootFiles

# Where an ISO 9660 image has its signature (the first volume descriptor's "CD001").
ISO_MAGIC_AT = 32769
# Running jobs of a set joined before the revalidation goes ahead under the set's lock anyway.
JOIN_ROUNDS = 3


@dataclass(frozen=True)
class SetOutcome:
    """How one set's revalidation ended."""

    set: str
    status: SyncOutcome
    from_generation: int | None
    generation: int | None
    checked_at: float
    message: str | None = None
    files: tuple[FetchResult, ...] = ()

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"set": self.set, "status": self.status,
                                "checked": iso_time(self.checked_at)}
        if self.status == "updated":
            data["from_generation"] = self.from_generation
        data["generation"] = self.generation
        if self.message is not None:
            data["error"] = self.message
        data["files"] = [f.to_json() for f in self.files]
        return data

    def line(self) -> str:
        """One line for the command line and the logs."""
        if self.status == "updated":
            return (f"updated: {self.set} generation {self.from_generation} -> "
                    f"{self.generation}")
        if self.status == "unchanged":
            return f"unchanged: {self.set} generation {self.generation}"
        return f"failed: {self.set}: {self.message}"


def outcome_of(set_id: str, before: int | None, results: list[FetchResult]) -> SetOutcome:
    """A set's outcome from its members' results and its generation before."""
    now = time.time()
    failed = [r for r in results if not r.ok]
    after = max((r.generation for r in results if r.ok and r.generation is not None),
                default=before)
    if failed:
        message = "; ".join(r.message or "failed" for r in failed)
        return SetOutcome(set_id, "failed", before, after, now, message, tuple(results))
    status: SyncOutcome = "updated" if after != before else "unchanged"
    return SetOutcome(set_id, status, before, after, now, None, tuple(results))


def failed_outcome(set_id: str, message: str, before: int | None = None) -> SetOutcome:
    return SetOutcome(set_id, "failed", before, before, time.time(), message)


async def revalidate_set(files: BootFiles, set_id: str) -> SetOutcome:
    """Check every member of ``set_id`` upstream; publish one new generation if any changed."""
    registry = files.registry
    for _ in range(JOIN_ROUNDS):
        members = [m for m in await files.store.members(set_id) if m.current is not None]
        if not members:
            raise NotFound(f"no boot set {set_id} is published")
        before = members[0].generation
        running = [job for m in members if (job := registry.running(m.name)) is not None]
        if not running:
            break
        # Work already under way for the set: join it rather than check a second time.
        joined = [await job.outcome() for job in running]
        if any(r.status == "published" for r in joined):
            # A published member means its transaction checked the whole set.
            return outcome_of(set_id, before, joined)
    if any(m.current is not None and (m.current.member or m.current.alias) for m in members):
        return await _revalidate_archive(files, set_id, members, before)
    # No await from here until the jobs are registered: requests from now on join them.
    jobs: dict[str, Job] = {}
    for m in members:
        assert m.current is not None
        job = registry.new(m.name, m.current.source, set_id)
        registry.start(job)
        jobs[m.name] = job
    first, *others = jobs.values()
    transaction = files.transaction(first, keep=True, whole_set=True,
                                    member_jobs={j.name: j for j in others})
    try:
        result = await files.run_job(first, transaction)
    finally:
        for job in others:
            if not job.done:
                # The first member failed (or the set changed): this one was not checked.
                why = first.result.message if first.result is not None else "cancelled"
                job.finish(FetchResult(status="failed", name=job.name, source=job.url,
                                       message=why))
                registry.retire(job)
    before = transaction.generation_before if transaction.generation_before is not None \
        else before
    results = [result] + [job.result for job in others if job.result is not None]
    if not result.ok:
        # The set's failure names every member that failed; the members' own say less.
        return SetOutcome(set_id, "failed", before, before, time.time(), result.message,
                          tuple(results))
    return outcome_of(set_id, before, results)


def _archive_kind(path: str) -> ArchiveKind:
    """An ISO 9660 image says so at byte 32769; every other archive extracted is a tar."""
    with open(path, "rb") as f:
        f.seek(ISO_MAGIC_AT)
        return "iso" if f.read(5) == b"CD001" else "tgz"


async def _revalidate_archive(files: BootFiles, set_id: str, members: list[Record],
                              before: int | None) -> SetOutcome:
    """The archive checked conditionally; if it changed, the same members extracted again."""
    from tftproxy.jobs.archive import ArchiveTransaction  # it imports BootFiles

    extracted = {m.name: m.current for m in members if m.current is not None}
    sources = {v.source for v in extracted.values() if v.member}
    archive = [n for n, v in extracted.items() if not v.member and not v.alias
               and v.source in sources]
    if len(sources) != 1 or len(archive) != 1:
        return failed_outcome(set_id, f"boot set {set_id} mixes archives and files: "
                              "revalidated only by fetch_and_process", before)
    destination, version = archive[0], extracted[archive[0]]
    path = str(files.store.content_path(version.sha256))
    kind = await files.store.call(lambda _: _archive_kind(path))
    spec = ExtractSpec(version.source, destination, kind,
                       {n: v.member for n, v in extracted.items() if v.member},
                       {n: v.alias for n, v in extracted.items() if v.alias})
    job = files.registry.new(destination, version.source, set_id)
    files.registry.start(job)
    result = await files.run_job(job, ArchiveTransaction(job, spec, files, keep=True))
    return outcome_of(set_id, before, [result])


async def prefetch_set(files: BootFiles, entry: PrefetchSet) -> SetOutcome:
    """Request each configured member as Foreman would (in keep mode), one after the other."""
    set_id = entry.prefix
    results: list[FetchResult] = []
    before: int | None = None
    for i, url in enumerate(entry.urls):
        try:
            if i == 0:
                _, set_id = await files.store.target(entry.prefix, url, file_name(url))
                members = await files.store.members(set_id)
                before = members[0].generation if members else None
            job = await files.request(entry.prefix, url, keep=True)
        except TftproxyError as exc:
            results.append(FetchResult(status="failed", name=entry.prefix, source=url,
                                       message=str(exc)))
            continue
        results.append(await job.outcome())
    return outcome_of(set_id, before, results)
