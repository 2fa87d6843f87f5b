"""Adopting a tree smart-proxy filled: its in-place downloads brought under management.

smart-proxy downloads with ``curl --output`` straight into ``boot/<prefix>-<file>``: plain
files, with nothing recorded about them. :func:`unmanaged` lists them (``tftproxy status``);
:meth:`Adoption.adopt` copies each into the content store (hashing the copy), then replaces the
plain file by a link to the same bytes, as one generation per boot set, so a reader sees the
same content before and after. A file that changes while it is copied is left alone.

A file's boot set is the request prefix Foreman used: from a known source URL it is the name
less ``-<basename of the URL>``; without one, the name up to its last ``-`` (Foreman names
files ``<prefix>-vmlinuz``, ``<prefix>-initrd.img``), or its directory.

:func:`unreferenced` lists the boot files no PXE config names (for ``gc --unreferenced``):
after a build Foreman deletes the host's config, so such files are only needed by the next
build, which fetches them again.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path

from tftproxy._fs import write_all
from tftproxy.store.layout import Layout
from tftproxy.store.links import Links
from tftproxy.store.locks import NameLock
from tftproxy.store.names import Names, name_key, url_basename
from tftproxy.store.objects import Objects
from tftproxy.store.records import RecordFiles, Version
from tftproxy.store.transactions import Transactions

BOOT_DIR = "boot"
# Where PXE configs live (tftproxy.pxe's variants, and Foreman's per-host directories).
CONFIG_DIRS = ("pxelinux.cfg", "grub", "grub2", "ztp.cfg", "poap.cfg", "host-config")
_CHUNK = 1024 * 1024
UNKNOWN_SOURCE = ""


@dataclass(frozen=True)
class Unmanaged:
    """A plain file under ``boot/``: not a link into the content store."""

    name: str
    size: int
    mtime: float


@dataclass(frozen=True)
class Adopted:
    name: str
    set_id: str
    version: Version | None
    skipped: str | None = None  # why it was left alone


def unmanaged(layout: Layout) -> list[Unmanaged]:
    """Every regular file under ``boot/`` (symlinks are ours, or someone's on purpose)."""
    out = []
    top = layout.root / BOOT_DIR
    for dirpath, _dirnames, filenames in os.walk(top):
        for entry in filenames:
            path = os.path.join(dirpath, entry)
            with contextlib.suppress(FileNotFoundError):
                st = os.lstat(path)
                if os.path.islink(path) or not os.path.isfile(path):
                    continue
                name = os.path.relpath(path, layout.root)
                out.append(Unmanaged(name, st.st_size, st.st_mtime))
    return sorted(out, key=lambda u: u.name)


def guess_set(name: str, source: str | None) -> str:
    """The boot set (request prefix) a file was published under."""
    parent, _, base = name.rpartition("/")
    if source:
        suffix = url_basename(source)
        if base == suffix:
            return f"{parent}/" if parent else name
        if base.endswith("-" + suffix):
            return name[: -len(suffix) - 1]
    if "-" in base:
        return name[: name.rindex("-")]
    return f"{parent}/" if parent else name


def config_texts(layout: Layout) -> str:
    """Every PXE config of the tree, concatenated (they are small text files)."""
    parts = []
    for top in CONFIG_DIRS:
        for dirpath, _dirs, files in os.walk(layout.root / top):
            for entry in files:
                with contextlib.suppress(OSError, UnicodeDecodeError):
                    parts.append(Path(dirpath, entry).read_text(encoding="utf-8",
                                                                errors="replace"))
    return "\n".join(parts)


def unreferenced(layout: Layout, records: RecordFiles, grace: float,
                 now: float | None = None) -> list[str]:
    """Boot files under ``boot/`` that no PXE config names and that nobody fetched,
    checked or changed for ``grace`` seconds."""
    now = time.time() if now is None else now
    texts = config_texts(layout)
    out = []
    for u in unmanaged(layout):
        if u.name not in texts and now - u.mtime >= grace:
            out.append(u.name)
    for rec in records.records():
        if not rec.name.startswith(BOOT_DIR + "/") or rec.state != "published":
            continue
        used = max(rec.checked_at, rec.current.fetched_at if rec.current else 0.0)
        if rec.name not in texts and now - used >= grace:
            out.append(rec.name)
    return sorted(out)


class Adoption:
    """Adopting and retiring names of one tree."""

    def __init__(self, layout: Layout, names: Names, records: RecordFiles, links: Links,
                 objects: Objects, transactions: Transactions) -> None:
        self.layout = layout
        self.names = names
        self.records = records
        self.links = links
        self.objects = objects
        self.transactions = transactions

    def _lock(self, name: str) -> NameLock:
        return NameLock(self.layout.lock_path(name_key(name)))

    def _ingest_copy(self, name: str) -> tuple[Version, os.stat_result] | str:
        """Copy a plain file into the content store; the version, or why not."""
        path = self.layout.root / name
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as exc:
            return f"cannot open it: {exc.strerror}"
        staging = self.objects.new_staging(name)
        try:
            with os.fdopen(fd, "rb") as f:
                before = os.fstat(f.fileno())
                if before.st_size > self.objects.free_bytes():
                    return "not enough free space for a copy"
                digest = hashlib.sha256()
                while chunk := f.read(_CHUNK):
                    digest.update(chunk)
                    write_all(staging.fd, chunk)
            sha = digest.hexdigest()
            self.objects.ingest(staging, sha)
        finally:
            staging.discard()
        version = Version(sha256=sha, size=before.st_size, source=UNKNOWN_SOURCE,
                          final_url=UNKNOWN_SOURCE, fetched_at=before.st_mtime,
                          verified="adopted, not verified")
        return version, before

    def adopt(self, names: list[str], sources: dict[str, str],
              now: float | None = None) -> list[Adopted]:
        """Bring plain files under management, one generation per boot set."""
        now = time.time() if now is None else now
        by_set: dict[str, list[str]] = {}
        for name in names:
            by_set.setdefault(guess_set(name, sources.get(name)), []).append(name)
        out: list[Adopted] = []
        for set_id, members in sorted(by_set.items()):
            out += self._adopt_set(set_id, sorted(members), sources, now)
        return out

    def _adopt_set(self, set_id: str, members: list[str], sources: dict[str, str],
                   now: float) -> list[Adopted]:
        locks = [self._lock(f"set:{set_id}"), *(self._lock(n) for n in members)]
        out: list[Adopted] = []
        try:
            for lock in locks:
                lock.acquire()
            versions: dict[str, Version] = {}
            seen: dict[str, os.stat_result] = {}
            for name in members:
                got = self._ingest_copy(name)
                if isinstance(got, str):
                    out.append(Adopted(name, set_id, None, got))
                    continue
                version, st = got
                source = sources.get(name)
                if source:
                    version = replace(version, source=source, final_url=source)
                versions[name], seen[name] = version, st
            for name, st in list(seen.items()):
                now_st = os.lstat(self.layout.root / name)
                if (now_st.st_ino, now_st.st_size, now_st.st_mtime_ns) != (
                        st.st_ino, st.st_size, st.st_mtime_ns):
                    del versions[name]
                    out.append(Adopted(name, set_id, None, "it changed while being copied"))
            if versions:
                for rec in self.records.members(set_id):
                    if rec.current is not None and rec.name not in versions:
                        versions[rec.name] = rec.current
                self.transactions.publish_generation(set_id, versions, now)
                out += [Adopted(n, set_id, v) for n, v in versions.items() if n in seen]
        finally:
            for lock in locks:
                lock.release()
        return out

    def retire(self, names: list[str], now: float | None = None) -> list[str]:
        """Remove published names and plain files (``gc --unreferenced``); returns them.

        A boot set first gets a generation without its removed members, so a crash leaves
        each name present (and complete) or gone; their content goes by the usual clean-up.
        """
        now = time.time() if now is None else now
        removed = []
        for name in names:
            lock = self._lock(name)
            try:
                lock.acquire()
                rec = self.records.record(name, with_checked=False)
                if rec is not None and rec.set is not None:
                    keep = {m.name: m.current for m in self.records.members(rec.set)
                            if m.name != name and m.current is not None}
                    # Even empty: the old generation retires and clean-up frees it later.
                    self.transactions.publish_generation(rec.set, keep, now)
                final = self.links.final_path(name)
                if final.is_symlink() or final.is_file():
                    self.links.unlink(name)
                if rec is not None:
                    self.records.drop_record(name)
                removed.append(name)
            finally:
                lock.release()
        return removed
