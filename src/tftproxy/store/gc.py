"""Clean-up: old generations and unreferenced content, never anything in use.

Content goes only when no published name links to it, no kept generation names it, no client
is pinned to a generation that names it, no fetch is about to publish it, and it has been
unreferenced for the grace period. ``tftproxy gc``, the periodic clean-up of ``serve`` and
``POST /tftp/prune`` all run :func:`collect`.

It holds the store's clean-up lock exclusively, which publishers take shared from the moment
they store new content until their links are switched; each set's lock is taken (without
waiting) before its record is trimmed, so a set being fetched is simply left for next time.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import tftproxy._human as human
from tftproxy.store import STATE_DIRNAME, BootStore

log = logging.getLogger(__name__)


@dataclass
class GcReport:
    dry_run: bool
    grace: float
    deleted: list[str] = field(default_factory=list)
    freed_bytes: int = 0
    kept_objects: int = 0
    kept_bytes: int = 0
    dropped_generations: list[str] = field(default_factory=list)
    busy_sets: list[str] = field(default_factory=list)
    disk_total: int = 0
    disk_free: int = 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        free, drop = ("would free", "would drop") if self.dry_run else ("freed", "dropped")
        return (f"{free} {human.size(self.freed_bytes)} in {len(self.deleted)} object(s), "
                f"{drop} {len(self.dropped_generations)} old generation(s); kept "
                f"{self.kept_objects} object(s), {human.size(self.kept_bytes)}; disk "
                f"{human.size(self.disk_free)} free of {human.size(self.disk_total)}")


def _linked_from_tree(store: BootStore) -> set[str]:
    """Every object some symlink in the tree points at, ours or made by hand."""
    found: set[str] = set()
    objects = os.path.realpath(store.layout.objects_dir)
    for dirpath, dirnames, filenames in os.walk(store.root):
        if dirpath == str(store.root):
            dirnames[:] = [d for d in dirnames if d != STATE_DIRNAME]
        for entry in (*filenames, *dirnames):
            path = os.path.join(dirpath, entry)
            if os.path.islink(path):
                real = os.path.realpath(path)
                if real.startswith(objects + os.sep):
                    found.add(os.path.basename(real))
    return found


def _referenced(store: BootStore, grace: float, now: float, dry_run: bool,
                report: GcReport | None) -> set[str]:
    """What must be kept; with a report, also trims old generations from set records."""
    keep: set[str] = set()
    for rec in store.records.records():
        for v in (rec.current, rec.previous):
            if v is not None:
                keep.add(v.sha256)
    pinned = store.pins.active(now, prune=not dry_run)
    for srec in store.records.set_records():
        lock = store.lock(f"set:{srec.name}", create=not dry_run)
        try:
            free = lock.acquire(blocking=False)
            kept = []
            for gen in srec.generations:
                stays = (
                    not free
                    or srec.state != "published"
                    or gen.number == srec.current
                    or gen.retired_at is None
                    or now - gen.retired_at < grace
                    or gen.number in pinned.get(srec.name, ())
                )
                if stays:
                    kept.append(gen)
                    keep.update(gen.members.values())
                elif report is not None:
                    report.dropped_generations.append(f"{srec.name}#{gen.number}")
            if srec.candidate:
                keep.update(v.sha256 for v in srec.candidate.values())
            if not free and report is not None:
                report.busy_sets.append(srec.name)
            if free and report is not None and not dry_run and len(kept) < len(srec.generations):
                store.records.write_set_record(replace(srec, generations=tuple(kept)))
        finally:
            lock.release()
    keep |= _linked_from_tree(store)
    return keep


def collect(store: BootStore, grace: float, *, dry_run: bool = False,
            now: float | None = None) -> GcReport:
    """Delete (or, with ``dry_run``, list) what nothing uses any more.

    A dry run writes nothing at all, not even a lock file; a root that holds no store is
    reported as having nothing to clean, and is not created.
    """
    now = time.time() if now is None else now
    report = GcReport(dry_run=dry_run, grace=grace)
    if not store.layout.exists():
        return report
    lock = store.gc_lock(create=not dry_run)
    try:
        lock.acquire(blocking=True)
        keep = _referenced(store, grace, now, dry_run, report)
        candidates = []
        for obj in sorted(store.layout.objects_dir.glob("*/*")):
            try:
                st = obj.stat()
            except FileNotFoundError:
                continue
            if obj.name in keep or now - st.st_mtime < grace:
                report.kept_objects += 1
                report.kept_bytes += st.st_size
            else:
                candidates.append((obj, st.st_size))
        if candidates:
            # Checked again right before deleting: references are read afresh.
            keep = _referenced(store, grace, now, True, None)
        for obj, size in candidates:
            if obj.name in keep:
                report.kept_objects += 1
                report.kept_bytes += size
                continue
            if not dry_run:
                try:
                    obj.unlink()
                except FileNotFoundError:
                    continue
                with contextlib.suppress(OSError):
                    obj.parent.rmdir()  # only when empty
            report.deleted.append(obj.name)
            report.freed_bytes += size
    finally:
        lock.release()
    vfs = os.statvfs(store.root)
    report.disk_total = vfs.f_blocks * vfs.f_frsize
    report.disk_free = vfs.f_bavail * vfs.f_frsize
    # A dry run changes nothing: the status page asks for one every minute.
    log.log(logging.DEBUG if dry_run else logging.INFO, "clean-up%s: %s",
            " (dry run)" if dry_run else "", report.summary())
    return report
