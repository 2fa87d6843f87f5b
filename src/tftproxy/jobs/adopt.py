"""``tftproxy adopt``: smart-proxy's in-place downloads brought under management, checked.

The store adopts the files as they are (:mod:`tftproxy.store.adoption`). A file whose source
is known is then judged by its distribution's checksums; one that they confirm stays as it
is, any other (truncated, changed upstream, or without a manifest to check it by) is fetched
again through the usual transaction, which replaces it only by a complete, verified download.
"""

from __future__ import annotations

from dataclasses import dataclass

from tftproxy.errors import UpstreamError
from tftproxy.fetch.verify import ManifestCache, verify
from tftproxy.jobs.bootfiles import BootFiles
from tftproxy.store import BootStore
from tftproxy.store.adoption import unmanaged


@dataclass(frozen=True)
class AdoptOutcome:
    name: str
    status: str  # adopted | verified | refetched | unchanged | failed | skipped
    detail: str


async def adopt(files: BootFiles, names: list[str] | None,
                sources: dict[str, str]) -> list[AdoptOutcome]:
    """Adopt ``names`` (default: every unmanaged file under boot/), then check those with a
    known source."""

    def run(store: BootStore) -> list[tuple[str, str, str | None, str | None]]:
        wanted = names if names else [u.name for u in unmanaged(store.layout)]
        plain = {u.name for u in unmanaged(store.layout)}
        out: list[tuple[str, str, str | None, str | None]] = [
            (n, "skipped", None, "not a plain file under boot/") for n in wanted
            if n not in plain]
        for a in store.adoption.adopt([n for n in wanted if n in plain], sources):
            if a.version is None:
                out.append((a.name, "skipped", None, a.skipped))
            else:
                out.append((a.name, "adopted", a.version.sha256, a.set_id))
        return out

    outcomes = []
    for name, status, sha, detail in await files.store.call(run):
        source = sources.get(name)
        if status != "adopted" or not source or sha is None:
            text = detail or ""
            if status == "adopted":
                text = f"set {detail}, sha256 {sha}; source unknown: not checked"
            outcomes.append(AdoptOutcome(name, status, text))
            continue
        outcomes.append(await _check(files, name, source, sha, detail or ""))
    return outcomes


async def _check(files: BootFiles, name: str, source: str, sha: str,
                 set_id: str) -> AdoptOutcome:
    try:
        judged = await verify(ManifestCache(files.fetcher), source, sha, "auto", name)
    except UpstreamError as exc:
        why = exc.reason
    else:
        if judged.status == "verified":
            await files.store.call(lambda s: s.transactions.mark_verified(name, judged.how))
            return AdoptOutcome(name, "verified", judged.how)
        why = judged.how
    # Truncated, changed, or nothing to check it by: fetched again, published only if whole.
    prefix = set_id
    job = await files.request(prefix, source)
    result = await job.outcome()
    if not result.ok:
        return AdoptOutcome(name, "failed", f"{why}; refetch failed: {result.message}")
    status = "refetched" if result.status == "published" else "unchanged"
    return AdoptOutcome(name, status, f"{why}; {result.status}: sha256 {result.sha256}")
