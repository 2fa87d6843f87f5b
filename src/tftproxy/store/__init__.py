"""The boot-file store: the only code that writes the published tree.

A reader of ``R/<name>`` sees either nothing or one complete version: content is written and
fsynced aside, renamed into ``objects/`` under its hash, and only then does a new symlink,
made aside, get renamed over the name. Records are written before the tree changes, so a crash
at any instant is repaired on the next start. The parts, one idea each:

* :mod:`.layout` where things live; :mod:`.names` which names may be published or read;
* :mod:`.records` the crash-safe records; :mod:`.objects` staging and content;
  :mod:`.links` the published symlinks; :mod:`.locks` locks shared between processes;
* :mod:`.transactions` every change of what is published; :mod:`.recovery` crash repair;
* :mod:`.serving` what readers (TFTP, HTTP boot) may open; :mod:`.pins` which generation a
  client is on; :mod:`.gc` clean-up; :mod:`.configs` the PXE configs; :mod:`.syncstate`
  each set's revalidation schedule (advisory);
* :mod:`.adoption` plain files smart-proxy downloaded, brought under management;
  :mod:`.setup` who may write the tree; :mod:`.usage` what it holds;
* :mod:`.aio` the one door for code on an event loop: every call runs on the store's threads.
"""

from __future__ import annotations

from pathlib import Path

from tftproxy.store.adoption import Adoption
from tftproxy.store.configs import PxeConfigs
from tftproxy.store.layout import STATE_DIRNAME, Layout
from tftproxy.store.links import Links
from tftproxy.store.locks import NameLock
from tftproxy.store.names import Names, name_key, url_basename
from tftproxy.store.objects import Objects, StagingFile
from tftproxy.store.records import Generation, Record, RecordFiles, SetRecord, Version
from tftproxy.store.recovery import Recovery, RecoveryReport
from tftproxy.store.serving import ServedFile, ServedTree
from tftproxy.store.syncstate import SyncStates
from tftproxy.store.transactions import Transactions


class BootStore:
    """One TFTP root's store: its parts, wired together."""

    def __init__(self, root: Path | str, *, create: bool = True,
                 pin_window: float = 900.0) -> None:
        self.layout = Layout.at(root)
        if create:
            self.layout.create()
        self.root = self.layout.root
        self.names = Names(self.layout)
        self.records = RecordFiles(self.layout)
        self.objects = Objects(self.layout)
        self.links = Links(self.layout, self.names)
        self.transactions = Transactions(self.records, self.links, self.objects)
        self.recovery = Recovery(self.layout, self.records, self.links, self.objects,
                                 self.transactions)
        self.serving = ServedTree(self.layout, pin_window)
        self.pins = self.serving.pins
        self.configs = PxeConfigs(self.root, self.serving)
        self.adoption = Adoption(self.layout, self.names, self.records, self.links,
                                 self.objects, self.transactions)
        self.sync_states = SyncStates(self.layout.sync_dir)

    def lock(self, name: str, *, create: bool = True) -> NameLock:
        """The lock of a name (or of ``set:<id>``), shared with every other process;
        ``create=False`` for a reader that must not write (its file is not made)."""
        return NameLock(self.layout.lock_path(name_key(name)), create=create)

    def gc_lock(self, *, create: bool = True) -> NameLock:
        """Clean-up holds it exclusively; a fetch holds it shared from ingest to publish, so
        content about to be linked is never taken for garbage."""
        return NameLock(self.layout.gc_lock_path, create=create)

    def recover(self) -> RecoveryReport:
        return self.recovery.recover()


__all__ = [
    "STATE_DIRNAME",
    "BootStore",
    "Generation",
    "Layout",
    "NameLock",
    "Record",
    "RecoveryReport",
    "ServedFile",
    "ServedTree",
    "SetRecord",
    "StagingFile",
    "Version",
    "url_basename",
]
