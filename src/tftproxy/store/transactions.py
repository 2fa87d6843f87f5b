"""The store's transactions: every change of what a name or a boot set publishes.

Each step is written to the records before the tree changes, so a crash at any instant
leaves a state that :mod:`tftproxy.store.recovery` completes or rolls back:

* a refresh marks the name "refreshing" (keeping the previous version) before hiding it;
* a new generation of a set is recorded as the set's "switching" candidate, then each link
  switches (an atomic rename), then each member's record, and only then the set's record
  says the generation is current. A member may be an alias (a relative symlink to another
  member of the same generation): it is recorded in the candidate like any member and
  switched after the names it points at.

The caller holds the locks of the names involved (see :mod:`tftproxy.jobs.locking`).
"""

from __future__ import annotations

import time
from dataclasses import replace

from tftproxy.store.links import Links
from tftproxy.store.objects import Objects
from tftproxy.store.records import Generation, Record, RecordFiles, SetRecord, Version


class Transactions:
    """Publishing, hiding and restoring names of one tree."""

    def __init__(self, records: RecordFiles, links: Links, objects: Objects) -> None:
        self.records = records
        self.links = links
        self.objects = objects

    def begin_refresh(self, name: str, hide: bool) -> Record:
        """Mark a name as being refreshed (and hide it) before a changed version downloads.

        The record is written first, so a crash while hidden puts the previous version back.
        """
        rec = self.records.record(name) or Record(name=name, current=None)
        rec = replace(rec, state="refreshing", previous=rec.current, hidden=hide)
        self.records.write_record(rec)
        if hide:
            self.links.unlink(name)
        return rec

    def abort_refresh(self, name: str) -> Record | None:
        """Put the previous version back after a failed fetch."""
        rec = self.records.record(name)
        if rec is None or rec.state == "published":
            return rec
        prev = rec.previous
        if prev is not None and self.objects.exists(prev.sha256):
            self.links.ensure(name, prev)
            rec = replace(rec, state="published", current=prev, previous=None, hidden=False)
            self.records.write_record(rec)
            return rec
        self.links.unlink(name)
        self.records.drop_record(name)
        return None

    def mark_checked(self, name: str, current: Version, checked_at: float) -> Record:
        """Upstream confirmed the published content (304 or same hash): refresh the record only."""
        rec = self.records.record(name) or Record(name=name, current=current)
        if rec.state != "published" or not self.links.matches(name, current):
            self.links.link_version(name, current)
        rec = replace(rec, state="published", current=current, previous=None,
                      checked_at=checked_at, hidden=False)
        self.records.write_record(rec)
        return rec

    def commit(self, name: str, version: Version, set_id: str | None = None) -> Record:
        """Publish one ingested version: a new generation of its set with this name changed."""
        rec = self.records.record(name, with_checked=False)
        set_id = set_id or (rec.set if rec and rec.set else name)
        versions: dict[str, Version] = {}
        if self.records.set_record(set_id) is not None:
            for member in self.records.members(set_id):
                if member.current is not None:
                    versions[member.name] = member.current
        versions[name] = version
        self.publish_generation(set_id, versions, version.fetched_at or time.time())
        out = self.records.record(name)
        assert out is not None
        return out

    def publish_generation(self, set_id: str, versions: dict[str, Version],
                           published_at: float) -> SetRecord:
        """Switch every name of ``versions`` (complete, ingested objects) as one generation.

        The new generation is written as a candidate first; the links then switch one after
        the other (each an atomic rename) and only then does the set record say it is
        current, so a crash in between is finished by recovery.
        """
        srec = self.records.set_record(set_id) or SetRecord(name=set_id)
        for name, v in versions.items():
            if not self.objects.exists(v.sha256):
                raise FileNotFoundError(f"object {v.sha256} is not in the store")
            target = versions.get(v.alias) if v.alias is not None else None
            if v.alias is not None and (target is None or target.alias is not None
                                        or target.sha256 != v.sha256):
                # An alias is part of its generation: it may only name a real member of it.
                raise ValueError(f"{name} is an alias of {v.alias}, which is not a member of "
                                 f"the same generation with the same content")
        srec = replace(srec, state="switching", candidate=dict(versions))
        self.records.write_set_record(srec)
        return self.finish_generation(srec, published_at)

    def finish_generation(self, srec: SetRecord, published_at: float) -> SetRecord:
        """Link every member of a recorded candidate and make it the current generation."""
        assert srec.candidate is not None
        number = srec.current + 1
        # Aliases last: the names they point at are then already switched.
        for name, version in sorted(srec.candidate.items(),
                                    key=lambda item: (item[1].alias is not None, item[0])):
            self.links.ensure(name, version)
            rec = self.records.record(name, with_checked=False) or Record(name=name,
                                                                          current=None)
            self.records.write_record(replace(
                rec, state="published", current=version, previous=None,
                hidden=False, set=srec.name, generation=number,
                checked_at=max(rec.checked_at, version.fetched_at)))
        gens = [g if g.retired_at is not None or g.number != srec.current
                else replace(g, retired_at=published_at) for g in srec.generations]
        gens.append(Generation(number, {n: v.sha256 for n, v in srec.candidate.items()},
                               published_at))
        done = replace(srec, current=number, generations=tuple(gens), state="published",
                       candidate=None)
        self.records.write_set_record(done)
        return done
