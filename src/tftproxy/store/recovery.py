"""Recovery: finishing or rolling back what a crash left half done.

Run at start-up over the whole tree (:meth:`Recovery.recover`) and before each fetch for its
name (:meth:`Recovery.repair`). Whatever is locked by a live process is that process's and is
left alone. The rules:

* a set "switching" with a complete candidate is finished (its content is all stored);
* a name "refreshing" gets its previous version back (or disappears if it had none);
* a record whose content is gone is dropped; a link that disagrees with its record is
  relinked; a plain file someone put over our link wins over the record;
* staging files and half-written records nobody holds are removed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import dataclass, field

from tftproxy._fs import remove_temporaries
from tftproxy.errors import NameRefused
from tftproxy.store.layout import Layout
from tftproxy.store.links import Links
from tftproxy.store.locks import NameLock
from tftproxy.store.names import name_key
from tftproxy.store.objects import Objects
from tftproxy.store.records import Record, RecordFiles
from tftproxy.store.transactions import Transactions

log = logging.getLogger(__name__)

TEMPORARY_AGE = 30.0


@dataclass
class RecoveryReport:
    staging_removed: int = 0
    restored: list[str] = field(default_factory=list)
    completed: list[str] = field(default_factory=list)
    relinked: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.staging_removed or self.restored or self.completed or self.relinked
                    or self.dropped)


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
        return NameLock(self.layout.locks_dir / f"{key}.lock")

    def recover(self) -> RecoveryReport:
        """Repair the whole tree; names whose lock a live process holds are left to it."""
        report = RecoveryReport()
        for srec in self.records.set_records():
            if srec.state == "switching" and srec.candidate is not None:
                locks = [self._lock(name_key(n)) for n in sorted(srec.candidate)]
                try:
                    if all(lk.acquire(blocking=False) for lk in locks):
                        self.transactions.finish_generation(srec, time.time())
                        report.completed.extend(sorted(srec.candidate))
                finally:
                    for lk in locks:
                        lk.release()
        for rec in self.records.records():
            lock = self._lock(name_key(rec.name))
            try:
                if lock.acquire(blocking=False):
                    self._recover_record(rec, report)
            except NameRefused as exc:
                # The tree changed under the name (a symlink planted on its way): left alone,
                # rather than followed; the others are still repaired.
                log.warning("recovery left %s alone: %s", rec.name, exc)
            finally:
                lock.release()
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
                self.transactions.finish_generation(srec, time.time())
                report.completed.extend(sorted(srec.candidate))
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
        # left refreshing: its previous version comes back.
        if rec.state == "refreshing":
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
