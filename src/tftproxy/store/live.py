"""Records kept current in memory, so an up-to-date check reads no file on the event loop.

Every fetch request reads its name's and its set's records and asks whether a dead process
left staging files behind. From disk that is a hop to a store thread per request, which costs
more than the rest of an up-to-date check; so :class:`LiveRecords` keeps what was read in
memory, and an inotify watch on the record and staging directories forgets an entry the
moment any process (this one, a TFTP worker, ``tftproxy fetch``) replaces or removes its file.
Reading the inotify queue is a non-blocking read of a kernel queue, never disk I/O.

Why what it returns is exact, not merely recent: a writer changes a record (a rename) while
holding the name's lock and releases it afterwards, and inotify queues the event inside the
rename. So once a reader holds the lock, every change made before is in its queue and
:meth:`LiveRecords.drain` makes the view current. A fill (a record read from disk on a store
thread) is kept only if no event for its file arrived since the read began, so a fill never
resurrects a replaced record. On a queue overflow, or if a watch goes away, everything is
forgotten and reads go to disk again.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

from inotify_simple import INotify, flags

from tftproxy.store.layout import Layout
from tftproxy.store.names import name_key
from tftproxy.store.records import Record, SetRecord
from tftproxy.store.recovery import staging_owner

log = logging.getLogger(__name__)

_CHANGES = flags.CREATE | flags.DELETE | flags.MOVED_TO | flags.MOVED_FROM | flags.CLOSE_WRITE
_GONE = flags.IGNORED | flags.DELETE_SELF | flags.MOVE_SELF | flags.UNMOUNT
_LIMIT = 8192  # entries per cache; records are small, names are boot files


@dataclass(frozen=True)
class Mark:
    """Where the event sequence stood when a read from disk began."""

    seq: int


@dataclass
class _View:
    records: dict[str, Record | None] = field(default_factory=dict)
    sets: dict[str, SetRecord | None] = field(default_factory=dict)
    seq: int = 0
    last: dict[str, int] = field(default_factory=dict)  # record file key -> seq of its last event
    staging: dict[str, set[str]] = field(default_factory=dict)  # name key -> staging entries


class LiveRecords:
    """The records this process has read, kept exact by inotify (see the module docstring).

    :meth:`open` runs on a store thread (it adds watches and lists staging); everything else
    runs on the event loop and touches no file.
    """

    def __init__(self) -> None:
        self._notify: INotify | None = None
        self._dirs: dict[int, str] = {}
        self._view = _View()

    def open(self, layout: Layout) -> None:
        notify = INotify(nonblocking=True)
        try:
            for kind, path in (("meta", layout.meta_dir), ("sets", layout.sets_dir),
                               ("staging", layout.staging_dir)):
                self._dirs[notify.add_watch(path, _CHANGES | _GONE)] = kind
            # Watched first, listed second: an entry made in between is seen twice, never lost.
            view = _View()
            for entry in os.listdir(layout.staging_dir):
                view.staging.setdefault(staging_owner(entry), set()).add(entry)
        except BaseException:
            notify.close()
            raise
        self._view = view
        self._notify = notify

    def close(self) -> None:
        if self._notify is not None:
            self._notify.close()
            self._notify = None

    @property
    def active(self) -> bool:
        return self._notify is not None

    def drain(self) -> None:
        """Apply every change queued so far; call it once the locks of the name are held."""
        notify = self._notify
        if notify is None:
            return
        try:
            events = notify.read(timeout=0)
        except OSError as exc:
            log.warning("record watch failed, reading records from disk from now on: %s", exc)
            self._forget_all()
            return
        view = self._view
        for event in events:
            if event.mask & (flags.Q_OVERFLOW | _GONE):
                self._forget_all()
                return
            kind = self._dirs.get(event.wd)
            if kind == "staging":
                entries = view.staging.setdefault(staging_owner(event.name), set())
                if event.mask & (flags.CREATE | flags.MOVED_TO):
                    entries.add(event.name)
                elif event.mask & (flags.DELETE | flags.MOVED_FROM):
                    entries.discard(event.name)
                continue
            key = event.name.split(".", 1)[0]
            view.seq += 1
            view.last[key] = view.seq
            (view.records if kind == "meta" else view.sets).pop(key, None)

    def _forget_all(self) -> None:
        self.close()
        self._view = _View()

    # ------------------------------------------------------------------ reads

    def clean_record(self, name: str) -> tuple[bool, Record | None]:
        """(True, record) when the view knows the name's record and nothing about it needs
        repair (published, its set published, no staging left); (False, None) otherwise."""
        if self._notify is None:
            return False, None
        view = self._view
        key = name_key(name)
        if key not in view.records or view.staging.get(key):
            return False, None
        rec = view.records[key]
        if rec is None:
            return True, None
        if rec.state != "published":
            return False, None
        if rec.set is not None:
            set_key = name_key(rec.set)
            if set_key not in view.sets:
                return False, None
            srec = view.sets[set_key]
            if srec is not None and srec.state != "published":
                return False, None
        return True, rec

    def mark(self) -> Mark:
        return Mark(self._view.seq)

    def fill(self, mark: Mark, name: str, rec: Record | None, srec: SetRecord | None) -> None:
        """Keep what a store thread read, unless its files changed since ``mark``."""
        if self._notify is None:
            return
        view = self._view
        key = name_key(name)
        if view.last.get(key, 0) > mark.seq:
            return
        if len(view.records) >= _LIMIT or len(view.sets) >= _LIMIT:
            view.records.clear()
            view.sets.clear()
        view.records[key] = rec
        if rec is not None and rec.set is not None:
            set_key = name_key(rec.set)
            if view.last.get(set_key, 0) <= mark.seq:
                view.sets[set_key] = srec
