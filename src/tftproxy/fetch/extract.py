"""Extracting chosen members of a downloaded archive into sinks, hashed as they stream.

Blocking (run it on a thread): nothing is loaded whole into memory, and only the members
asked for are written. Two formats:

* ``tgz`` (any tar that :mod:`tarfile` streams: gzip, xz, bzip2): read once, front to back, in
  stream mode (constant memory), stopping when every member is found. A tar has no index, so
  everything before the last wanted member is inflated; that is capped by ``max_unpacked``,
  which also stops a decompression bomb.
* ``iso``: ISO 9660 read in place (:mod:`tftproxy.fetch.iso9660`); each member is copied from
  its extent (``copy_file_range``: the kernel copies, and on a reflink file system it shares).

Members are named exactly (``./`` prefixes of tar names aside). A wanted member that is not a
plain file (symlink, hard link, device, directory, fifo) or whose stored name is absolute or
climbs with ``..`` is refused, naming it; so is a member larger than ``max_file_size``.

An ISO's own checksum manifests (``.treeinfo``/``treeinfo`` sha256, ``SHA256SUMS`` or
``sha256sum.txt``, ``md5sum.txt``) are read from its root first, and every member they list is
checked: a mismatch is a :class:`~tftproxy.errors.VerificationError` naming the member, the
expected and the actual checksum.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import os
import tarfile
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import IO, Literal

from tftproxy._paths import plain_segments
from tftproxy.errors import ManifestError, UpstreamError, VerificationError
from tftproxy.fetch.iso9660 import IsoImage
from tftproxy.fetch.results import Sink
from tftproxy.fetch.verify import (
    MANIFEST_LIMIT,
    Manifest,
    parse_md5sums,
    parse_sha256sums,
    parse_treeinfo,
)

ArchiveKind = Literal["tgz", "iso"]
KINDS: tuple[ArchiveKind, ...] = ("tgz", "iso")
CHUNK = 1024 * 1024
# Where distributions put checksums of their media, at the image's root, best first.
ISO_MANIFESTS = (".treeinfo", "treeinfo", "SHA256SUMS", "sha256sum.txt", "md5sum.txt")


@dataclass(frozen=True)
class Limits:
    max_unpacked: int  # bytes inflated (tgz) or extracted (iso) per archive
    max_file_size: int  # bytes per member


@dataclass(frozen=True)
class Extracted:
    member: str
    sha256: str
    size: int
    verified: str


@dataclass
class _Digests:
    sha256: hashlib._Hash = field(default_factory=hashlib.sha256)
    md5: hashlib._Hash | None = None

    def update(self, data: bytes) -> None:
        self.sha256.update(data)
        if self.md5 is not None:
            self.md5.update(data)


class ExtractError(UpstreamError):
    """A member cannot be extracted (missing, not a plain file, too large, a broken archive)."""


def member_name(name: str) -> str | None:
    """A requested member's path, normalised (``./a//b`` is ``a/b``); None when it is absolute,
    climbs with ``..`` or names nothing."""
    if name.startswith("/") or "\x00" in name:
        return None
    parts = plain_segments(name)
    if not parts or ".." in parts:
        return None
    return "/".join(parts)


def extract_members(path: str, kind: ArchiveKind, sinks: Mapping[str, Sink], limits: Limits,
                    label: str) -> dict[str, Extracted]:
    """Write each wanted member (``sinks``: member -> sink) and return what was written."""
    with open(path, "rb") as archive:
        if kind == "iso":
            return _from_iso(archive.fileno(), sinks, limits, label)
        return _from_tar(archive, sinks, limits, label)


# ------------------------------------------------------------------------- copying


class _Copier:
    """Writes chunks to a sink while a second thread hashes the previous one (both release
    the GIL), so hashing costs no wall time beside the copy."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tftproxy-hash")

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    def copy(self, chunks: Iterator[bytes], sink: Sink, digests: _Digests) -> int:
        pending: Future[None] | None = None
        size = 0
        for chunk in chunks:
            sink.write(chunk)
            size += len(chunk)
            if pending is not None:
                pending.result()
            pending = self._pool.submit(digests.update, chunk)
        if pending is not None:
            pending.result()
        return size

    def copy_range(self, fd: int, offset: int, size: int, sink: Sink,
                   digests: _Digests) -> None:
        """``size`` bytes at ``offset`` of ``fd``: the kernel copies, this thread hashes."""
        copying = self._pool.submit(_copy_file_range, fd, offset, size, sink)
        try:
            at, end = offset, offset + size
            while at < end:
                data = os.pread(fd, min(CHUNK * 4, end - at), at)
                if not data:
                    raise ExtractError(f"short read at byte {at}")
                digests.update(data)
                at += len(data)
        finally:
            copying.result()


def _copy_file_range(fd: int, offset: int, size: int, sink: Sink) -> None:
    out = 0
    try:
        while out < size:
            n = os.copy_file_range(fd, sink.fd, size - out, offset + out, out)
            if n == 0:
                raise ExtractError(f"the archive ended {size - out} bytes early")
            out += n
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
            raise
        while out < size:  # a file system without in-kernel copies: plain reads and writes
            data = os.pread(fd, min(CHUNK, size - out), offset + out)
            if not data:
                raise ExtractError(f"the archive ended {size - out} bytes early") from None
            os.pwrite(sink.fd, data, out)
            out += len(data)


def _too_large(member: str, size: int, limits: Limits) -> None:
    if size > limits.max_file_size:
        raise ExtractError(f"member {member} is {size} bytes, more than max_file_size "
                           f"({limits.max_file_size})")


# ---------------------------------------------------------------------------- tar


def _refusal(info: tarfile.TarInfo) -> str | None:
    if info.issym():
        return f"is a symbolic link (to {info.linkname})"
    if info.islnk():
        return f"is a hard link (to {info.linkname})"
    if info.ischr() or info.isblk():
        return "is a device"
    if info.isdir():
        return "is a directory"
    if not info.isreg():
        return "is not a regular file"
    return None


def _from_tar(archive: IO[bytes], sinks: Mapping[str, Sink], limits: Limits,
              label: str) -> dict[str, Extracted]:
    out: dict[str, Extracted] = {}
    copier = _Copier()
    try:
        with tarfile.open(fileobj=archive, mode="r|*") as tar:
            for info in tar:
                if tar.offset > limits.max_unpacked:
                    raise ExtractError(
                        f"{label}: more than max_unpacked_size ({limits.max_unpacked} bytes) "
                        f"unpacked before finding {', '.join(sorted(set(sinks) - set(out)))}")
                stored = info.name
                name = "/".join(plain_segments(stored))
                if name not in sinks or name in out:
                    continue
                if stored.startswith("/") or ".." in plain_segments(stored):
                    raise ExtractError(f"member {name} is stored as {stored!r}, which leaves "
                                       "the archive's root")
                why = _refusal(info)
                if why is not None:
                    raise ExtractError(f"member {name} {why}; only regular files are "
                                       "extracted")
                _too_large(name, info.size, limits)
                source = tar.extractfile(info)
                assert source is not None  # a regular file
                digests = _Digests()
                size = copier.copy(iter(functools.partial(source.read, CHUNK), b""),
                                   sinks[name], digests)
                if size != info.size:
                    raise ExtractError(f"member {name}: {size} of {info.size} bytes")
                out[name] = Extracted(name, digests.sha256.hexdigest(), size,
                                      "no checksums in a tar; the archive's own was checked")
                if len(out) == len(sinks):
                    break
    except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
        # zlib.error is not an OSError; gzip's BadGzipFile is. Either: not a readable archive.
        raise ExtractError(f"{label} cannot be read as a tar archive: {exc}") from None
    finally:
        copier.close()
    missing = sorted(set(sinks) - set(out))
    if missing:
        raise ExtractError(f"{label}: archive members not found: {', '.join(missing)}")
    return out


# ---------------------------------------------------------------------------- iso


def _iso_manifests(image: IsoImage) -> list[Manifest]:
    parsers: dict[str, Callable[[str, str], Manifest]] = {
        ".treeinfo": parse_treeinfo, "treeinfo": parse_treeinfo,
        "SHA256SUMS": parse_sha256sums, "sha256sum.txt": parse_sha256sums,
        "md5sum.txt": parse_md5sums,
    }
    found = []
    for name in ISO_MANIFESTS:
        try:
            entry = image.lookup(name)
        except UpstreamError:
            continue
        if entry.is_dir or entry.refusal or entry.size > MANIFEST_LIMIT:
            continue
        text = image.pread(entry.size, entry.extent * 2048).decode("utf-8-sig", "replace")
        try:
            found.append(parsers[name](text, f"{image.label}!/{name}"))
        except ManifestError:
            continue  # a file of that name that is not a manifest says nothing
    return found


def _expected(manifests: list[Manifest], member: str) -> tuple[Manifest, str, str] | None:
    """(manifest, algorithm, digest) of the first manifest listing ``member``."""
    for manifest in manifests:
        digest = manifest.entries.get(member)
        if digest is not None:
            return manifest, manifest.algorithm, digest
    return None


def _from_iso(fd: int, sinks: Mapping[str, Sink], limits: Limits,
              label: str) -> dict[str, Extracted]:
    image = IsoImage(fd, label)
    manifests = _iso_manifests(image)
    entries = {}
    for member in sinks:
        entry = image.lookup(member)
        why = "is a directory" if entry.is_dir else entry.refusal
        if why is not None:
            raise ExtractError(f"member {member} {why}; only regular files are extracted")
        _too_large(member, entry.size, limits)
        if entry.extent * 2048 + entry.size > image.size:
            raise ExtractError(f"member {member} extends past the end of {label}")
        entries[member] = entry
    total = sum(e.size for e in entries.values())
    if total > limits.max_unpacked:
        raise ExtractError(f"{label}: the members hold {total} bytes, more than "
                           f"max_unpacked_size ({limits.max_unpacked})")
    out = {}
    copier = _Copier()
    try:
        for member, entry in entries.items():
            expected = _expected(manifests, member)
            digests = _Digests(md5=hashlib.md5() if expected and expected[1] == "md5" else None)
            copier.copy_range(fd, entry.extent * 2048, entry.size, sinks[member], digests)
            out[member] = Extracted(member, digests.sha256.hexdigest(), entry.size,
                                    _judge(member, expected, digests, manifests, label))
    finally:
        copier.close()
    return out


def _judge(member: str, expected: tuple[Manifest, str, str] | None, digests: _Digests,
           manifests: list[Manifest], label: str) -> str:
    if expected is None:
        if not manifests:
            return f"no checksum manifest in {label}"
        return f"not listed in {', '.join(m.label for m in manifests)} of {label}"
    manifest, algorithm, digest = expected
    hasher = digests.md5 if algorithm == "md5" else digests.sha256
    assert hasher is not None
    actual = hasher.hexdigest()
    if actual != digest:
        raise VerificationError(
            f"member {member} of {label}: checksum mismatch: {manifest.label} says "
            f"{algorithm} {digest}, the extracted member has {actual}")
    return f"{algorithm} matches {manifest.label} in {label}"
