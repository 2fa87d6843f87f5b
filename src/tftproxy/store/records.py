"""Records: what the store knows about each published name and each boot set.

One crash-safe JSON file per name (``meta/``) and per set (``sets/``), replaced atomically and
durably. Each carries ``format``: a tftproxy reads every format up to its own (a tree written
by an older release needs no migration) and refuses a newer one rather than misread it.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal, TypeVar

from tftproxy._fs import fsync_directory, replace_file_atomically
from tftproxy.errors import RecordUnreadable
from tftproxy.store.layout import Layout
from tftproxy.store.names import name_key

# 0: records of tftproxy 0.1 (no "format" key); 1: the same fields, with the key;
# 2: a version may name the archive member it was extracted from, be an alias, or carry the
# OCI manifest digest it was taken from (older releases would not know these fields, so they
# must refuse the record rather than misread it).
RECORD_FORMAT = 2

T = TypeVar("T")
RecordState = Literal["published", "refreshing"]
_CACHE_SIZE = 4096


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
    # Extracted from an archive (``source``): the member's path inside it.
    member: str | None = None
    # A relative symlink to this other published name of the same generation (whose content
    # ``sha256`` is), instead of a link into the object store.
    alias: str | None = None
    # An OCI layer: the digest its reference resolved to (the artifact's manifest, or its
    # index). It is the validator: the same digest means the same file. The layer's own
    # digest is ``sha256:`` + ``sha256``, the content's name in the store.
    manifest_digest: str | None = None


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
        return {"format": RECORD_FORMAT, **asdict(self)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Record:
        _check_format(data)

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
        return {"format": RECORD_FORMAT, **asdict(self)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SetRecord:
        _check_format(data)
        cand = data.get("candidate")
        return cls(
            name=str(data["name"]),
            current=int(data.get("current", 0)),
            generations=tuple(Generation(**g) for g in data.get("generations", ())),
            state=data.get("state", "published"),
            candidate=None if cand is None else {k: Version(**v) for k, v in cand.items()},
        )


def _check_format(data: dict[str, Any]) -> None:
    found = data.get("format", 0)
    if not isinstance(found, int) or found > RECORD_FORMAT:
        raise RecordUnreadable(f"record format {found!r} is newer than this tftproxy reads "
                               f"({RECORD_FORMAT}): was the tree written by a newer release?")


def _load_all(directory: Path, parse: Callable[[dict[str, Any]], T]) -> list[T]:
    """Every readable record of a directory; one that does not parse is skipped, not fatal."""
    out = []
    for path in sorted(directory.glob("*.json")) if directory.is_dir() else []:
        try:
            out.append(parse(json.loads(path.read_text(encoding="utf-8"))))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return out


def _encode(data: dict[str, Any]) -> bytes:
    return json.dumps(data, indent=1, sort_keys=True).encode()


class RecordFiles:
    """The record files of one store, with a cache of what was read.

    Every request reads its name's and its set's records; records are replaced by rename, so
    a new version always has a new inode and a cache keyed by (inode, size, mtime) cannot
    miss a change.
    """

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self._cache: dict[Path, tuple[tuple[int, int, int], dict[str, Any]]] = {}

    def _read_json(self, path: Path) -> dict[str, Any]:
        st = os.stat(path)
        key = (st.st_ino, st.st_size, st.st_mtime_ns)
        hit = self._cache.get(path)
        if hit is not None and hit[0] == key:
            return hit[1]
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        if len(self._cache) >= _CACHE_SIZE:
            self._cache.clear()
        self._cache[path] = (key, data)
        return data

    # ------------------------------------------------------------------ names

    def _meta_path(self, name: str) -> Path:
        return self.layout.meta_dir / f"{name_key(name)}.json"

    def _checked_path(self, name: str) -> Path:
        return self.layout.meta_dir / f"{name_key(name)}.checked"

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
        return sorted(_load_all(self.layout.meta_dir, Record.from_json), key=lambda r: r.name)

    def write_record(self, rec: Record) -> None:
        replace_file_atomically(self._meta_path(rec.name), _encode(rec.to_json()))

    def drop_record(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._checked_path(name).unlink()
        with contextlib.suppress(FileNotFoundError):
            self._meta_path(name).unlink()
            fsync_directory(self.layout.meta_dir)

    # ------------------------------------------------------------------- sets

    def _set_path(self, set_id: str) -> Path:
        return self.layout.sets_dir / f"{name_key(set_id)}.json"

    def set_record(self, set_id: str) -> SetRecord | None:
        try:
            data = self._read_json(self._set_path(set_id))
        except FileNotFoundError:
            return None
        return SetRecord.from_json(data)

    def set_records(self) -> list[SetRecord]:
        return sorted(_load_all(self.layout.sets_dir, SetRecord.from_json),
                      key=lambda s: s.name)

    def write_set_record(self, srec: SetRecord) -> None:
        replace_file_atomically(self._set_path(srec.name), _encode(srec.to_json()))

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
