"""The boot-file store: the only code that writes the published tree.

Layout inside the TFTP root ``R``::

    R/<name>                              relative symlink -> .tftproxy/objects/<aa>/<sha256>
    R/.tftproxy/objects/<aa>/<sha256>     immutable content, mode 0444, stored once per content
    R/.tftproxy/private/                  mode 0700: never served by any TFTP or HTTP server
        staging/<key>-<rand>.part         downloads in progress (same filesystem: rename is atomic)
        meta/<key>.json                   one record per published name (crash-safe JSON)
        locks/<key>.lock                  flock held by whoever is fetching that name

A reader of ``R/<name>`` sees either nothing or one complete version: content is written and
fsynced aside, renamed into ``objects/`` under its hash, and only then does a new symlink,
made aside in ``staging/``, get renamed over the name. Records carry a ``state`` so that a
crash at any instant is repaired on the next start (:meth:`BootStore.recover`).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import secrets
import stat
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

from tftproxy.pins import Pins

STATE_DIRNAME = ".tftproxy"

T = TypeVar("T")

RecordState = Literal["published", "refreshing"]


class PathRefused(ValueError):
    """A requested destination is not acceptable; the message says why (answered with 400)."""


class AccessDenied(PermissionError):
    """A client asked to read something outside what the tree serves."""


@dataclass(frozen=True)
class Version:
    """One downloaded representation and the validators that came with it."""

    sha256: str
    size: int
    source: str
    final_url: str
    etag: str | None = None
    last_modified: str | None = None
    content_length: int | None = None
    fetched_at: float = 0.0
    # How the content was verified against the distribution's checksums, for `status`.
    verified: str | None = None


@dataclass(frozen=True)
class Record:
    """What the store knows about one published name."""

    name: str
    current: Version | None
    state: RecordState = "published"
    checked_at: float = 0.0
    # While refreshing: the version to put back if the fetch fails or the process dies.
    previous: Version | None = None
    hidden: bool = False
    # The boot set (the request's prefix) and the generation of it this version belongs to.
    set: str | None = None
    generation: int = 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Record:
        def version(v: Any) -> Version | None:
            return Version(**v) if isinstance(v, dict) else None

        return cls(
            name=str(data["name"]),
            current=version(data.get("current")),
            state=data.get("state", "published"),
            checked_at=float(data.get("checked_at", 0.0)),
            previous=version(data.get("previous")),
            hidden=bool(data.get("hidden", False)),
            set=data.get("set"),
            generation=int(data.get("generation", 0)),
        )


@dataclass(frozen=True)
class Generation:
    """One consistent state of a boot set: which content each member name had."""

    number: int
    members: dict[str, str]  # name -> sha256
    published_at: float
    retired_at: float | None = None


@dataclass(frozen=True)
class SetRecord:
    """A boot set: the files published under one prefix, switched together.

    ``generations`` holds the current one and the retired ones still kept for pinned clients
    and the grace period; clean-up drops them. While ``state`` is "switching", ``candidate``
    is the complete new generation being linked, so a crash finishes the switch.
    """

    name: str
    current: int = 0
    generations: tuple[Generation, ...] = ()
    state: Literal["published", "switching"] = "published"
    candidate: dict[str, Version] | None = None

    def generation(self, number: int) -> Generation | None:
        for gen in self.generations:
            if gen.number == number:
                return gen
        return None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SetRecord:
        cand = data.get("candidate")
        return cls(
            name=str(data["name"]),
            current=int(data.get("current", 0)),
            generations=tuple(Generation(**g) for g in data.get("generations", ())),
            state=data.get("state", "published"),
            candidate=None if cand is None else {k: Version(**v) for k, v in cand.items()},
        )


@dataclass(frozen=True)
class ServedFile:
    """A file opened for serving: the descriptor pins the version for the whole transfer."""

    fd: int
    size: int
    mtime: float
    name: str

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)


@dataclass
class RecoveryReport:
    staging_removed: int = 0
    restored: list[str] = field(default_factory=list)
    completed: list[str] = field(default_factory=list)
    relinked: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)


def name_key(name: str) -> str:
    """A fixed-length file-system-safe key for a published name."""
    return hashlib.sha256(name.encode("utf-8", "surrogateescape")).hexdigest()[:40]


def url_basename(url: str) -> str:
    """The file name smart-proxy takes from a URL: the last segment of its path."""
    path = urlsplit(url).path
    return path.rsplit("/", 1)[-1]


def _load_all(directory: Path, parse: Callable[[dict[str, Any]], T]) -> list[T]:
    """Every readable record of a directory; one that does not parse is skipped, not fatal."""
    out = []
    for path in sorted(directory.glob("*.json")) if directory.is_dir() else []:
        try:
            out.append(parse(json.loads(path.read_text(encoding="utf-8"))))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return out


def _write_json(path: Path, data: dict[str, Any]) -> None:
    """Crash-safe replace: a reader (or a restart) sees the old or the new content, whole."""
    tmp = path.with_suffix(f".{secrets.token_hex(4)}.tmp")
    raw = json.dumps(data, indent=1, sort_keys=True).encode()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, raw)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _is_within(path: str, base: str) -> bool:
    return path == base or path.startswith(base.rstrip("/") + "/")


class NameLock:
    """An exclusive flock on one name: held by the fetcher for the whole job, across processes."""

    def __init__(self, path: Path) -> None:
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)

    def acquire(self, blocking: bool = True, shared: bool = False) -> bool:
        flags = (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | (0 if blocking else fcntl.LOCK_NB)
        try:
            fcntl.flock(self._fd, flags)
        except BlockingIOError:
            return False
        return True

    def unlock(self) -> None:
        """Drop the flock but keep the file open for the next acquire (saves an open)."""
        if self._fd >= 0:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # closing drops the flock
            self._fd = -1

    def __enter__(self) -> NameLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class StagingFile:
    """A private file receiving one download; removed unless :meth:`BootStore.commit` takes it."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self.fd = fd

    def write(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view:
            written = os.write(self.fd, view)
            view = view[written:]

    def discard(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


class BootStore:
    """Published boot files under a TFTP root, with their records."""

    def __init__(self, root: Path, *, create: bool = True, pin_window: float = 900.0) -> None:
        self.root = Path(os.path.abspath(root))
        self.pin_window = pin_window
        self.state_dir = self.root / STATE_DIRNAME
        self.objects_dir = self.state_dir / "objects"
        self.private_dir = self.state_dir / "private"
        self.staging_dir = self.private_dir / "staging"
        self.meta_dir = self.private_dir / "meta"
        self.locks_dir = self.private_dir / "locks"
        self.sets_dir = self.private_dir / "sets"
        self.pins_dir = self.private_dir / "pins"
        if create:
            self._create_layout()
        self.pins = Pins(self.pins_dir, pin_window)
        self._json_cache: dict[Path, tuple[tuple[int, int, int], dict[str, Any]]] = {}
        self._real_root = os.path.realpath(self.root)
        self._real_private = os.path.join(self._real_root, STATE_DIRNAME, "private")

    def _create_layout(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.state_dir.mkdir(mode=0o755, exist_ok=True)
        self.objects_dir.mkdir(mode=0o755, exist_ok=True)
        self.private_dir.mkdir(mode=0o700, exist_ok=True)
        os.chmod(self.private_dir, 0o700)
        for d in (self.staging_dir, self.meta_dir, self.locks_dir, self.sets_dir, self.pins_dir):
            d.mkdir(mode=0o700, exist_ok=True)

    # ------------------------------------------------------------------ names

    def destination(self, prefix: str, url: str) -> str:
        """The published name for ``(prefix, url)``, derived as smart-proxy does, or PathRefused.

        ``prefix-basename``, or ``prefix + basename`` when the prefix ends in ``/``; relative to
        the root; an absolute prefix is accepted only when it lies inside the root.
        """
        if "\x00" in prefix or "\x00" in url:
            raise PathRefused("prefix or path contains a NUL byte")
        if not prefix.strip():
            raise PathRefused("prefix is empty")
        base = url_basename(url)
        if not base:
            raise PathRefused(f"path {url!r} does not end in a file name")
        if base in (".", ".."):
            raise PathRefused(f"path {url!r} ends in {base!r}, which is not a file name")
        prefix = self._relative_prefix(prefix)
        name = prefix + base if prefix.endswith("/") else f"{prefix}-{base}"
        return self.check_name(name)

    def _relative_prefix(self, prefix: str) -> str:
        if not prefix.startswith("/"):
            return prefix
        real_prefix = os.path.normpath(prefix)
        root = str(self.root)
        if not _is_within(real_prefix, root) or real_prefix == root:
            raise PathRefused(f"prefix {prefix!r} is an absolute path outside the TFTP root {root}")
        tail = "/" if prefix.endswith("/") else ""
        return os.path.relpath(real_prefix, root) + tail

    def set_id(self, prefix: str) -> str:
        """The boot set a prefix names: the files Foreman publishes under one prefix."""
        prefix = self._relative_prefix(prefix)
        tail = "/" if prefix.endswith("/") else ""
        parts = [p for p in prefix.split("/") if p not in ("", ".")]
        return "/".join(parts) + tail

    def check_name(self, name: str) -> str:
        """Validate a relative published name and return it normalized, or raise PathRefused."""
        if "\x00" in name:
            raise PathRefused("name contains a NUL byte")
        if name.startswith("/"):
            raise PathRefused(f"{name!r} is an absolute path; names are relative to the TFTP root")
        parts = [p for p in name.split("/") if p not in ("", ".")]
        if not parts:
            raise PathRefused(f"{name!r} names no file")
        if ".." in parts:
            raise PathRefused(f"{name!r} contains '..', which could leave the TFTP root")
        if parts[0] == STATE_DIRNAME:
            raise PathRefused(f"{name!r} is inside tftproxy's private directory {STATE_DIRNAME}/")
        # Walk what exists: any symlink on the way must stay inside the root.
        current = self._real_root
        for i, part in enumerate(parts):
            candidate = os.path.join(current, part)
            last = i == len(parts) - 1
            if os.path.islink(candidate):
                target = os.path.realpath(candidate)
                if not _is_within(target, self._real_root):
                    raise PathRefused(
                        f"{'/'.join(parts[: i + 1])!r} is a symlink leading outside the TFTP root"
                    )
                if _is_within(target, os.path.join(self._real_root, STATE_DIRNAME)) and not last:
                    raise PathRefused(
                        f"{'/'.join(parts[: i + 1])!r} leads into tftproxy's private directory"
                    )
                current = target
            elif os.path.exists(candidate):
                if not last and not os.path.isdir(candidate):
                    raise PathRefused(f"{'/'.join(parts[: i + 1])!r} exists and is not a directory")
                if last and os.path.isdir(candidate):
                    raise PathRefused(f"{'/'.join(parts)!r} is an existing directory")
                current = candidate
            else:
                current = candidate
        return "/".join(parts)

    def _final_path(self, name: str) -> Path:
        """The real location of a name's link, creating its parent directories."""
        parent, _, base = name.rpartition("/")
        real_parent = os.path.realpath(os.path.join(self._real_root, parent))
        if not _is_within(real_parent, self._real_root):
            raise PathRefused(f"{name!r} leads outside the TFTP root")
        os.makedirs(real_parent, mode=0o755, exist_ok=True)
        return Path(real_parent) / base

    def object_path(self, sha256: str) -> Path:
        return self.objects_dir / sha256[:2] / sha256

    # ---------------------------------------------------------------- records

    def _read_json(self, path: Path) -> dict[str, Any]:
        """A record file, parsed; unchanged files (same inode, size, mtime) come from memory.

        Every request reads its name's and set's records; records are replaced by rename, so
        a new version always has a new inode and the check cannot miss a change.
        """
        st = os.stat(path)
        key = (st.st_ino, st.st_size, st.st_mtime_ns)
        hit = self._json_cache.get(path)
        if hit is not None and hit[0] == key:
            return hit[1]
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        if len(self._json_cache) >= 4096:
            self._json_cache.clear()
        self._json_cache[path] = (key, data)
        return data

    def _meta_path(self, name: str) -> Path:
        return self.meta_dir / f"{name_key(name)}.json"

    def record(self, name: str, *, with_checked: bool = True) -> Record | None:
        """The record of a name; ``with_checked`` merges the time of the last up-to-date check."""
        try:
            data = self._read_json(self._meta_path(name))
        except FileNotFoundError:
            return None
        rec = Record.from_json(data)
        if not with_checked:
            return rec
        checked = self._read_checked(name)
        return replace(rec, checked_at=checked) if checked > rec.checked_at else rec

    def _checked_path(self, name: str) -> Path:
        return self.meta_dir / f"{name_key(name)}.checked"

    def _read_checked(self, name: str) -> float:
        try:
            return float(self._checked_path(name).read_text(encoding="ascii"))
        except (OSError, ValueError):
            return 0.0

    def touch_checked(self, name: str, checked_at: float) -> None:
        """Note that upstream confirmed the published version: cheap, no fsync, no rename.

        Up-to-date checks are the common request and must stay cheap. The time of the last
        check is informational: a torn or lost write only loses that time (it then fails
        to parse and is ignored); the record, which says what is published, is untouched.
        A fixed-width overwrite in place avoids the rename, which ext4 turns into a flush.
        """
        fd = os.open(self._checked_path(name), os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            os.pwrite(fd, f"{checked_at:24.6f}".encode("ascii"), 0)
        finally:
            os.close(fd)

    def records(self) -> list[Record]:
        return sorted(_load_all(self.meta_dir, Record.from_json), key=lambda r: r.name)

    def _write_record(self, rec: Record) -> None:
        _write_json(self._meta_path(rec.name), rec.to_json())

    # ------------------------------------------------------------------- sets

    def _set_path(self, set_id: str) -> Path:
        return self.sets_dir / f"{name_key(set_id)}.json"

    def set_record(self, set_id: str) -> SetRecord | None:
        try:
            data = self._read_json(self._set_path(set_id))
        except FileNotFoundError:
            return None
        return SetRecord.from_json(data)

    def set_records(self) -> list[SetRecord]:
        return sorted(_load_all(self.sets_dir, SetRecord.from_json), key=lambda s: s.name)

    def write_set_record(self, srec: SetRecord) -> None:
        _write_json(self._set_path(srec.name), srec.to_json())

    def members(self, set_id: str) -> list[Record]:
        """The published members of a set, from their records."""
        srec = self.set_record(set_id)
        if srec is None:
            return []
        gen = srec.generation(srec.current)
        out = []
        for name in sorted(gen.members if gen else ()):
            rec = self.record(name, with_checked=False)
            if rec is not None and rec.set == set_id:
                out.append(rec)
        return out

    def publish_generation(self, set_id: str, versions: dict[str, Version],
                           published_at: float) -> SetRecord:
        """Switch every name of ``versions`` (complete, ingested objects) as one generation.

        The new generation is written as a candidate first; the links then switch one after
        the other (each an atomic rename) and only then does the set record say it is
        current, so a crash in between is finished by :meth:`recover`.
        """
        srec = self.set_record(set_id) or SetRecord(name=set_id)
        for v in versions.values():
            if not self.object_path(v.sha256).exists():
                raise FileNotFoundError(f"object {v.sha256} is not in the store")
        srec = replace(srec, state="switching", candidate=dict(versions))
        self.write_set_record(srec)
        return self._finish_generation(srec, published_at)

    def _finish_generation(self, srec: SetRecord, published_at: float) -> SetRecord:
        assert srec.candidate is not None
        number = srec.current + 1
        for name, version in sorted(srec.candidate.items()):
            if self.linked_sha256(name) != version.sha256:
                self._link(name, version.sha256)
            rec = self.record(name, with_checked=False) or Record(name=name, current=None)
            self._write_record(replace(
                rec, state="published", current=version, previous=None,
                hidden=False, set=srec.name, generation=number,
                checked_at=max(rec.checked_at, version.fetched_at)))
        gens = [g if g.retired_at is not None or g.number != srec.current
                else replace(g, retired_at=published_at) for g in srec.generations]
        gens.append(Generation(number, {n: v.sha256 for n, v in srec.candidate.items()},
                               published_at))
        done = replace(srec, current=number, generations=tuple(gens), state="published",
                       candidate=None)
        self.write_set_record(done)
        return done

    def _drop_record(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._checked_path(name).unlink()
        with contextlib.suppress(FileNotFoundError):
            self._meta_path(name).unlink()
            _fsync_dir(self.meta_dir)

    # ----------------------------------------------------------------- writer

    def lock(self, name: str) -> NameLock:
        return NameLock(self.locks_dir / f"{name_key(name)}.lock")

    def gc_lock(self) -> NameLock:
        """Clean-up holds it exclusively; a fetch holds it shared from ingest to publish, so
        content about to be linked is never taken for garbage."""
        return NameLock(self.private_dir / "gc.lock")

    def new_staging(self, name: str) -> StagingFile:
        path = self.staging_dir / f"{name_key(name)}-{secrets.token_hex(6)}.part"
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        return StagingFile(path, fd)

    def free_bytes(self) -> int:
        st = os.statvfs(self.staging_dir)
        return st.f_bavail * st.f_frsize

    def _link(self, name: str, sha256: str) -> None:
        final = self._final_path(name)
        target = os.path.relpath(os.path.realpath(self.object_path(sha256)), final.parent)
        tmp = self.staging_dir / f"{name_key(name)}-{secrets.token_hex(6)}.link"
        os.symlink(target, tmp)
        try:
            os.rename(tmp, final)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        _fsync_dir(final.parent)

    def _unlink_name(self, name: str) -> None:
        final = self._final_path(name)
        try:
            final.unlink()
        except FileNotFoundError:
            return
        _fsync_dir(final.parent)

    def linked_sha256(self, name: str) -> str | None:
        """The content a name's link points at, or None if it is absent or not one of ours.

        Our links always end in ``.tftproxy/objects/<aa>/<sha256>``; reading that from the
        link text avoids resolving paths on the hot path of up-to-date checks.
        """
        try:
            target = os.readlink(os.path.join(self._real_root, name))
        except OSError:
            return None
        parts = target.rsplit("/", 4)
        if len(parts) < 4 or parts[-4:-2] != [STATE_DIRNAME, "objects"]:
            return None
        sha = parts[-1]
        if len(sha) != 64 or parts[-2] != sha[:2]:
            return None
        return sha

    def begin_refresh(self, name: str, hide: bool) -> Record:
        """Mark a name as being refreshed (and hide it) before a changed version downloads.

        The record is written first, so a crash while hidden puts the previous version back.
        """
        rec = self.record(name) or Record(name=name, current=None)
        rec = replace(rec, state="refreshing", previous=rec.current, hidden=hide)
        self._write_record(rec)
        if hide:
            self._unlink_name(name)
        return rec

    def abort_refresh(self, name: str) -> Record | None:
        """Put the previous version back after a failed fetch."""
        rec = self.record(name)
        if rec is None or rec.state == "published":
            return rec
        prev = rec.previous
        if prev is not None and self.object_path(prev.sha256).exists():
            if self.linked_sha256(name) != prev.sha256:
                self._link(name, prev.sha256)
            rec = replace(rec, state="published", current=prev, previous=None,
                          hidden=False)
            self._write_record(rec)
            return rec
        self._unlink_name(name)
        self._drop_record(name)
        return None

    def ingest(self, staging: StagingFile, sha256: str) -> Path:
        """Move a complete, fsynced staging file into the object store (or drop it as a dup)."""
        obj = self.object_path(sha256)
        obj.parent.mkdir(mode=0o755, exist_ok=True)
        os.fchmod(staging.fd, 0o444)
        os.fsync(staging.fd)
        os.close(staging.fd)
        staging.fd = -1
        if obj.exists():
            staging.discard()  # same content already stored: keep one copy
        else:
            os.rename(staging.path, obj)
            _fsync_dir(obj.parent)
        return obj

    def commit(self, name: str, version: Version, set_id: str | None = None) -> Record:
        """Publish one ingested version: a new generation of its set with this name changed."""
        rec = self.record(name, with_checked=False)
        set_id = set_id or (rec.set if rec and rec.set else name)
        srec = self.set_record(set_id)
        versions: dict[str, Version] = {}
        if srec is not None:
            for member in self.members(set_id):
                if member.current is not None:
                    versions[member.name] = member.current
        versions[name] = version
        self.publish_generation(set_id, versions, version.fetched_at or time.time())
        out = self.record(name)
        assert out is not None
        return out

    def mark_checked(self, name: str, current: Version, checked_at: float) -> Record:
        """Upstream confirmed the published content (304 or same hash): refresh the record only."""
        rec = self.record(name) or Record(name=name, current=current)
        restore = rec.state != "published" or self.linked_sha256(name) != current.sha256
        if restore:
            self._link(name, current.sha256)
        rec = replace(rec, state="published", current=current, previous=None,
                      checked_at=checked_at, hidden=False)
        self._write_record(rec)
        return rec

    # --------------------------------------------------------------- recovery

    def recover(self) -> RecoveryReport:
        """Repair what a crash left: staging leftovers, half-done refreshes, stray links.

        Names whose lock is held by a live process are left to that process.
        """
        report = RecoveryReport()
        for srec in self.set_records():
            if srec.state == "switching" and srec.candidate is not None:
                locks = [self.lock(n) for n in sorted(srec.candidate)]
                try:
                    if all(lk.acquire(blocking=False) for lk in locks):
                        self._finish_generation(srec, time.time())
                        report.completed.extend(sorted(srec.candidate))
                finally:
                    for lk in locks:
                        lk.release()
        for rec in self.records():
            lock = self.lock(rec.name)
            try:
                if not lock.acquire(blocking=False):
                    continue
                self._recover_record(rec, report)
            finally:
                lock.release()
        for entry in self.staging_dir.iterdir():
            key = entry.name.split("-", 1)[0]
            lock = NameLock(self.locks_dir / f"{key}.lock")
            try:
                if lock.acquire(blocking=False):
                    with contextlib.suppress(FileNotFoundError):
                        entry.unlink()
                        report.staging_removed += 1
            finally:
                lock.release()
        for tmp in self.meta_dir.glob("*.tmp"):
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        return report

    def needs_repair(self, name: str, rec: Record | None) -> bool:
        """Cheap check run before each fetch: a half-done state or staging leftovers."""
        if rec is not None and rec.state != "published":
            return True
        if rec is not None and rec.set is not None:
            srec = self.set_record(rec.set)
            if srec is not None and srec.state != "published":
                return True
        key = name_key(name)
        return any(e.startswith(key) for e in os.listdir(self.staging_dir))

    def repair(self, name: str) -> RecoveryReport:
        """Recover one name; the caller holds its lock, so any half-done state is stale."""
        report = RecoveryReport()
        rec = self.record(name)
        if rec is not None and rec.set is not None:
            srec = self.set_record(rec.set)
            if srec is not None and srec.state == "switching" and srec.candidate is not None:
                self._finish_generation(srec, time.time())
                report.completed.extend(sorted(srec.candidate))
                rec = self.record(name)
        if rec is not None:
            self._recover_record(rec, report)
        for entry in self.staging_dir.glob(f"{name_key(name)}-*"):
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()
                report.staging_removed += 1
        return report

    def _recover_record(self, rec: Record, report: RecoveryReport) -> None:
        # A half-done switch is the set's (finished by the caller); a record can only be
        # left refreshing: its previous version comes back.
        if rec.state == "refreshing":
            restored = self.abort_refresh(rec.name)
            if restored is None:
                report.dropped.append(rec.name)
            else:
                report.restored.append(rec.name)
            return
        cur = rec.current
        final = self._final_path(rec.name)
        if cur is None or not self.object_path(cur.sha256).exists():
            if final.is_symlink() and self.linked_sha256(rec.name) is not None:
                self._unlink_name(rec.name)
            self._drop_record(rec.name)
            report.dropped.append(rec.name)
            return
        if final.exists() and not final.is_symlink():
            # Someone replaced our link with a file of their own: the tree wins.
            self._drop_record(rec.name)
            report.dropped.append(rec.name)
            return
        if self.linked_sha256(rec.name) != cur.sha256:
            self._link(rec.name, cur.sha256)
            report.relinked.append(rec.name)

    # ----------------------------------------------------------------- reader

    def served_name(self, requested: str) -> str:
        """Normalize a client's request to a name relative to the root, or raise AccessDenied.

        A leading ``/`` is stripped and ``\\`` read as ``/`` (Windows boot loaders send it).
        """
        if "\x00" in requested:
            raise AccessDenied("file name contains a NUL byte")
        text = requested.replace("\\", "/").lstrip("/")
        parts: list[str] = []
        for part in text.split("/"):
            if part in ("", "."):
                continue
            if part == "..":
                if not parts:
                    raise AccessDenied(f"{requested!r} leaves the root")
                parts.pop()
                continue
            parts.append(part)
        if not parts:
            raise AccessDenied(f"{requested!r} names no file")
        return "/".join(parts)

    def resolve_served(self, requested: str) -> Path:
        """The real path of a servable regular file inside the root.

        Raises AccessDenied (outside the root, private, a directory) or FileNotFoundError.
        """
        name = self.served_name(requested)
        real = os.path.realpath(os.path.join(self._real_root, name))
        self._check_servable(real, requested)
        return Path(real)

    def _check_servable(self, real: str, requested: str) -> None:
        if not _is_within(real, self._real_root) or real == self._real_root:
            raise AccessDenied(f"{requested!r} resolves outside the root")
        if _is_within(real, self._real_private):
            raise AccessDenied(f"{requested!r} is tftproxy's private state")

    def open_served(self, requested: str, client: str | None = None) -> ServedFile:
        """Open a file for serving; the descriptor keeps this version even if a publish follows.

        With ``client`` (its address), members of a boot set are served from the generation
        that client started on (see :mod:`tftproxy.pins`), and its pin is noted.
        """
        if client is None:
            return self._open_current(requested)
        name = self.served_name(requested)
        rec = self.record(name, with_checked=False)
        if rec is None or rec.set is None:
            return self._open_current(requested)
        pinned = self.pins.get(client, rec.set)
        # A pinned client reads its generation's content, also while the name is hidden for
        # a set change (its generation is then still the current one).
        if pinned is not None:
            srec = self.set_record(rec.set)
            gen = srec.generation(pinned) if srec else None
            sha = gen.members.get(name) if gen else None
            if sha is not None:
                try:
                    served = self._open_current(str(self.object_path(sha).relative_to(self.root)))
                except (FileNotFoundError, AccessDenied):
                    pass
                else:
                    self.pins.note(client, rec.set, pinned)
                    return replace(served, name=name)
        served = self._open_current(requested)
        if self.linked_sha256(name) == (rec.current.sha256 if rec.current else None):
            self.pins.note(client, rec.set, rec.generation)
        return served

    def _open_current(self, requested: str) -> ServedFile:
        path = self.resolve_served(requested)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                raise FileNotFoundError(requested) from None
            if exc.errno in (errno.ELOOP, errno.EACCES, errno.EPERM):
                raise AccessDenied(f"{requested!r} cannot be opened") from None
            raise
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise AccessDenied(f"{requested!r} is not a regular file")
            # Re-check what was actually opened: a swap between realpath() and open() is caught.
            self._check_servable(os.readlink(f"/proc/self/fd/{fd}"), requested)
            os.set_blocking(fd, True)
        except BaseException:
            os.close(fd)
            raise
        return ServedFile(fd=fd, size=st.st_size, mtime=st.st_mtime,
                          name=self.served_name(requested))

    def is_refreshing(self, requested: str) -> bool:
        """True while a changed version of this name downloads with the name hidden."""
        try:
            name = self.served_name(requested)
        except AccessDenied:
            return False
        rec = self.record(name)
        return rec is not None and rec.state != "published" and rec.hidden


def now() -> float:
    return time.time()
