"""Recovery: finishing or rolling back what a crash left half done.

Run at start-up over the whole tree (:meth:`Recovery.recover`) and before each fetch for its
name (:meth:`Recovery.repair`). Whatever is locked by a live process is that process's and is
left alone. The rules:

* a set "switching" with a complete candidate is finished (its content is all stored);
* a name "refreshing" gets its previous version back (or disappears if it had none); a
  name "fetching" (its first version) loses its record, and the tree is left as it was;
* a record whose content is gone is dropped; a link that disagrees with its record is
  relinked; a plain file someone put over our link wins over the record;
* staging files and half-written records nobody holds are removed;
* a record that cannot be read or repaired (damaged, or naming what the tree cannot hold) is
  moved to ``private/quarantine/`` and logged with what to do: one bad record never stops
  the start, and every other name is served.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from tftproxy._fs import fsync_directory, remove_temporaries
from tftproxy.errors import NameRefused, RecordUnreadable
from tftproxy.store.layout import Layout
from tftproxy.store.links import Links
from tftproxy.store.locks import NameLock
from tftproxy.store.names import name_key
from tftproxy.store.objects import Objects
from tftproxy.store.records import Record, RecordFiles, SetRecord, scan
from tftproxy.store.transactions import Transactions

log = logging.getLogger(__name__)

TEMPORARY_AGE = 30.0
T = TypeVar("T", Record, SetRecord)


@dataclass
class RecoveryReport:
    staging_removed: int = 0
    restored: list[str] = field(default_factory=list)
    completed: list[str] = field(default_factory=list)
    relinked: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    # Record files moved to quarantine/, and those left alone (newer format, permissions).
    quarantined: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.staging_removed or self.restored or self.completed or self.relinked
                    or self.dropped or self.quarantined)


def staging_owner(entry: str) -> str:
    """The name key a staging entry belongs to (``<key>-<rand>.part``, ``.<key>.<rand>.tmp``)."""
    return entry.lstrip(".").split("-", 1)[0].split(".", 1)[0]


class Recovery:
    """Crash repair of one tree."""

    def __init__(self, layout: Layout, records: RecordFiles, links: Links, objects: Objects,
                 transactions: Transactions) -> None:
        self.layout = layout
        self.records = records
        self.links = links
        self.objects = objects
        self.transactions = transactions

    def _lock(self, key: str) -> NameLock:
        return NameLock(self.layout.lock_path(key))

    def recover(self) -> RecoveryReport:
        """Repair the whole tree; names whose lock a live process holds are left to it.

        Never raises for one record: what cannot be repaired is quarantined (or, when only a
        newer tftproxy or another user could touch it, left alone) and logged.
        """
        report = RecoveryReport()
        for path, srec in scan(self.layout.sets_dir, SetRecord.from_json):
            self._guarded(path, srec, report, self._recover_set)
        for path, rec in scan(self.layout.meta_dir, Record.from_json):
            self._guarded(path, rec, report, self._recover_name)
        for entry in os.listdir(self.layout.staging_dir):
            lock = self._lock(staging_owner(entry))
            try:
                if lock.acquire(blocking=False):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(self.layout.staging_dir / entry)
                        report.staging_removed += 1
            finally:
                lock.release()
        # Half-written records of dead writers (an older tftproxy named them <key>.<rand>.tmp);
        # a young one may be another live process's write in flight.
        for directory in (self.layout.meta_dir, self.layout.sets_dir, self.layout.pins_dir,
                          self.layout.sync_dir):
            remove_temporaries(directory, any_name=True, older_than=TEMPORARY_AGE)
        return report

    def _recover_set(self, srec: SetRecord, report: RecoveryReport) -> None:
        if srec.state != "switching" or srec.candidate is None:
            return
        locks = [self._lock(name_key(n)) for n in sorted(srec.candidate)]
        try:
            if all(lk.acquire(blocking=False) for lk in locks):
                self._finish(srec, report)
        finally:
            for lk in locks:
                lk.release()

    def _finish(self, srec: SetRecord, report: RecoveryReport) -> None:
        self.transactions.finish_generation(srec, time.time())
        report.completed.extend(sorted(srec.candidate or ()))

    def _recover_name(self, rec: Record, report: RecoveryReport) -> None:
        lock = self._lock(name_key(rec.name))
        try:
            if lock.acquire(blocking=False):
                self._recover_record(rec, report)
        finally:
            lock.release()

    def _guarded(self, path: Path, parsed: T | Exception, report: RecoveryReport,
                 repair: Callable[[T, RecoveryReport], None]) -> None:
        """Run one record's repair; quarantine the record if it cannot be read or repaired."""
        what = "boot set" if path.parent == self.layout.sets_dir else "name"
        label = getattr(parsed, "name", path.name)
        try:
            if isinstance(parsed, Exception):
                raise parsed
            repair(parsed, report)
        except PermissionError as exc:
            report.skipped.append(str(path))
            log.error("cannot repair the record of %s %r: %s: %s; the files under %s must "
                      "belong to the user tftproxy runs as (chown -R that user: %s)", what,
                      label, exc.strerror, exc.filename, self.layout.private_dir,
                      self.layout.state_dir)
        except RecordUnreadable as exc:
            report.skipped.append(str(path))
            log.error("left the record %s alone: %s", path, exc)
        except NameRefused as exc:
            # The tree changed under the name (a symlink planted on its way): left alone,
            # rather than followed; the others are still repaired.
            report.skipped.append(str(path))
            log.warning("recovery left %s alone: %s", label, exc)
        except Exception as exc:  # one bad record must never stop the start
            moved = self._quarantine(path)
            report.quarantined.append(str(moved or path))
            log.error("quarantined the record of %s %r: it cannot be repaired (%s); it was "
                      "moved to %s. The tree keeps what it links to now; fetch the %s again "
                      "to republish it, then delete that file", what, label,
                      _describe(exc), moved or "(could not be moved)", what)

    def _quarantine(self, path: Path) -> Path | None:
        qdir = self.layout.quarantine_dir
        try:
            qdir.mkdir(mode=0o700, exist_ok=True)
            target = qdir / f"{path.parent.name}-{path.name}.{int(time.time())}"
            os.rename(path, target)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path.with_suffix(".checked"))
            fsync_directory(path.parent)
            fsync_directory(qdir)
        except OSError as exc:
            log.error("cannot move %s to %s: %s", path, qdir, exc)
            return None
        return target

    def needs_repair(self, name: str, rec: Record | None) -> bool:
        """Cheap check run before each fetch: a half-done state or staging leftovers."""
        if rec is not None and rec.state != "published":
            return True
        if rec is not None and rec.set is not None:
            srec = self.records.set_record(rec.set)
            if srec is not None and srec.state != "published":
                return True
        key = name_key(name)
        return any(staging_owner(e) == key for e in os.listdir(self.layout.staging_dir))

    def repair(self, name: str) -> RecoveryReport:
        """Recover one name; the caller holds its lock, so any half-done state is stale."""
        report = RecoveryReport()
        rec = self.records.record(name)
        if rec is not None and rec.set is not None:
            srec = self.records.set_record(rec.set)
            if srec is not None and srec.state == "switching" and srec.candidate is not None:
                self._guarded(self.records.set_path(rec.set), srec, report, self._finish)
                rec = self.records.record(name)
        if rec is not None:
            self._recover_record(rec, report)
        key = name_key(name)
        for entry in os.listdir(self.layout.staging_dir):
            if staging_owner(entry) == key:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.layout.staging_dir / entry)
                    report.staging_removed += 1
        return report

    def _recover_record(self, rec: Record, report: RecoveryReport) -> None:
        # A half-done switch is the set's (finished by the caller); a record can only be
        # left refreshing (its previous version comes back) or fetching (it goes).
        if rec.state in ("refreshing", "fetching"):
            restored = self.transactions.abort_refresh(rec.name)
            (report.dropped if restored is None else report.restored).append(rec.name)
            return
        cur = rec.current
        final = self.links.final_path(rec.name)
        if cur is None or not self.objects.exists(cur.sha256):
            if final.is_symlink() and (self.links.linked_sha256(rec.name) is not None
                                       or (cur is not None and self.links.matches(rec.name,
                                                                                  cur))):
                self.links.unlink(rec.name)
            self.records.drop_record(rec.name)
            report.dropped.append(rec.name)
            return
        if final.exists() and not final.is_symlink():
            # Someone replaced our link with a file of their own: the tree wins.
            self.records.drop_record(rec.name)
            report.dropped.append(rec.name)
            return
        if not self.links.matches(rec.name, cur):
            self.links.link_version(rec.name, cur)
            report.relinked.append(rec.name)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    return f"{type(exc).__name__}: {exc}"
