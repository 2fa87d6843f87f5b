"""Members of an ISO 9660 image, found by path and read in place.

Only the directories on a member's path are read, so a DVD with 20 000 files costs what a
boot.iso does, and nothing of the image is loaded into memory beyond one directory at a time
(capped). Names are taken, in this order of preference, from Rock Ridge (``NM``, what
``xorriso -R`` and every Linux distribution's media carry: exact, case-sensitive), from Joliet
(UCS-2), or from plain ISO 9660 (compared without case, ``;1`` dropped).

A member must be a plain file: Rock Ridge symlinks (``SL``, or a PX mode saying so), devices
(``PN``), fifos and sockets, zisofs-compressed (``ZF``), interleaved and multi-extent (over
4 GiB) files are refused, naming the member. Every length and offset read from the image is
checked against the image and the record holding it: a damaged or hostile image is an
:class:`IsoError`, never an over-read or a loop.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass

from tftproxy.errors import UpstreamError

SECTOR = 2048
_FIRST_DESCRIPTOR = 16
_MAX_DESCRIPTORS = 64
# A directory's extent is read whole; real ones are a few sectors (Debian's pool/main/l: ~40).
MAX_DIRECTORY = 16 * 1024 * 1024
_MAX_CONTINUATIONS = 32
_JOLIET_ESCAPES = (b"%/@", b"%/C", b"%/E")
_MULTI_EXTENT = 0x80
_DIRECTORY = 0x02


class IsoError(UpstreamError):
    """The image cannot be read as ISO 9660, or a member cannot be extracted from it."""


@dataclass(frozen=True)
class IsoEntry:
    """One directory record: where its data is, and what kind of file it is."""

    name: str
    extent: int
    size: int
    is_dir: bool
    refusal: str | None = None  # why it cannot be extracted as a file, if it cannot


def _both_endian32(data: bytes, at: int) -> int:
    return int.from_bytes(data[at:at + 4], "little")


@dataclass
class _Susp:
    name: str | None = None
    refusal: str | None = None
    relocated: bool = False
    child_extent: int | None = None


class IsoImage:
    """An open ISO 9660 image (a descriptor, read with pread; safe to share across threads)."""

    def __init__(self, fd: int, label: str = "the image") -> None:
        self.fd = fd
        self.label = label
        self.size = os.fstat(fd).st_size
        self._rock_ridge_skip: int | None = None
        primary, joliet = self._descriptors()
        root = self._record(primary, 156, len(primary))
        if root is None or not root[0].is_dir:
            raise IsoError(f"{label}: the primary volume descriptor has no root directory")
        self._root = root[0]
        first = self._read_directory_raw(self._root)
        # Rock Ridge announces itself in the root's "." record ("SP", then "RR"/"NM"...).
        self._rock_ridge_skip = self._sp_skip(first)
        self._joliet_root: IsoEntry | None = None
        if self._rock_ridge_skip is None and joliet is not None:
            jroot = self._record(joliet, 156, len(joliet))
            if jroot is not None and jroot[0].is_dir:
                self._joliet_root = jroot[0]

    @property
    def names(self) -> str:
        """Which names the image is read by: "rock ridge", "joliet" or "iso9660"."""
        if self._rock_ridge_skip is not None:
            return "rock ridge"
        return "joliet" if self._joliet_root is not None else "iso9660"

    # ------------------------------------------------------------------ reading

    def pread(self, length: int, offset: int) -> bytes:
        if offset < 0 or length < 0 or offset + length > self.size:
            raise IsoError(f"{self.label}: a record points past the end of the image "
                           f"({offset + length} > {self.size} bytes): truncated or damaged")
        data = os.pread(self.fd, length, offset)
        if len(data) != length:
            raise IsoError(f"{self.label}: short read at byte {offset}")
        return data

    def _descriptors(self) -> tuple[bytes, bytes | None]:
        primary = joliet = None
        for n in range(_FIRST_DESCRIPTOR, _FIRST_DESCRIPTOR + _MAX_DESCRIPTORS):
            if (n + 1) * SECTOR > self.size:
                break
            desc = self.pread(SECTOR, n * SECTOR)
            if desc[1:6] != b"CD001":
                break
            kind = desc[0]
            if kind == 255:
                break
            if kind == 1 and primary is None:
                if int.from_bytes(desc[128:130], "little") != SECTOR:
                    raise IsoError(f"{self.label}: logical blocks of "
                                   f"{int.from_bytes(desc[128:130], 'little')} bytes are not "
                                   f"supported (only {SECTOR})")
                primary = desc
            elif kind == 2 and joliet is None and desc[88:91] in _JOLIET_ESCAPES:
                joliet = desc
        if primary is None:
            raise IsoError(f"{self.label} is not an ISO 9660 image (no primary volume "
                           "descriptor at sector 16)")
        return primary, joliet

    def _record(self, data: bytes, at: int, end: int) -> tuple[IsoEntry, bytes] | None:
        """The directory record at ``data[at:]`` and its system use area; None for padding."""
        length = data[at]
        if length == 0:
            return None
        if length < 34 or at + length > end:
            raise IsoError(f"{self.label}: a directory record of {length} bytes does not fit "
                           "its directory: damaged image")
        rec = data[at:at + length]
        name_len = rec[32]
        if 33 + name_len > length:
            raise IsoError(f"{self.label}: a directory record's name overruns the record")
        flags = rec[25]
        refusal = None
        if flags & _MULTI_EXTENT:
            refusal = "is stored in several extents (over 4 GiB), which is not supported"
        elif rec[26] or rec[27]:
            refusal = "is interleaved, which is not supported"
        extent = _both_endian32(rec, 2)
        size = _both_endian32(rec, 10)
        raw_name = rec[33:33 + name_len]
        entry = IsoEntry(raw_name.decode("latin-1"), extent, size, bool(flags & _DIRECTORY),
                         refusal)
        return entry, rec[33 + name_len + (1 - name_len % 2):]

    def _read_directory_raw(self, directory: IsoEntry) -> list[tuple[IsoEntry, bytes, bytes]]:
        """(entry, raw name, system use) of every record of ``directory``, "." and ".." too."""
        if directory.size > MAX_DIRECTORY:
            raise IsoError(f"{self.label}: a directory of {directory.size} bytes is larger "
                           f"than {MAX_DIRECTORY}")
        data = self.pread(directory.size, directory.extent * SECTOR)
        out = []
        at = 0
        while at < len(data):
            sector_end = min(len(data), (at // SECTOR + 1) * SECTOR)
            found = self._record(data, at, sector_end)
            if found is None:
                at = sector_end  # the rest of this sector is padding
                continue
            entry, system_use = found
            raw = data[at + 33:at + 33 + data[at + 32]]
            out.append((entry, raw, system_use))
            at += data[at]
        return out

    # --------------------------------------------------------------- Rock Ridge

    def _sp_skip(self, records: list[tuple[IsoEntry, bytes, bytes]]) -> int | None:
        if not records:
            return None
        system_use = records[0][2]
        if system_use[:2] == b"SP" and len(system_use) >= 7 and system_use[4:6] == b"\xbe\xef":
            return system_use[6]
        return None

    def _susp(self, system_use: bytes) -> _Susp:
        assert self._rock_ridge_skip is not None
        found = _Susp()
        name_parts: list[bytes] = []
        area = system_use[self._rock_ridge_skip:]
        continuations = 0
        while True:
            at, next_area = 0, None
            while at + 4 <= len(area):
                sig, length = area[at:at + 2], area[at + 2]
                if length < 4 or at + length > len(area):
                    break
                body = area[at + 4:at + length]
                if sig == b"NM" and body:
                    if not body[0] & 0x06:  # not "." or ".."
                        name_parts.append(body[1:])
                elif sig == b"PX" and len(body) >= 4:
                    mode = int.from_bytes(body[0:4], "little")
                    if stat.S_ISLNK(mode):
                        found.refusal = "is a symbolic link"
                    elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
                        found.refusal = "is a device"
                    elif stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
                        found.refusal = "is a fifo or socket"
                elif sig == b"SL":
                    found.refusal = "is a symbolic link"
                elif sig == b"PN":
                    found.refusal = found.refusal or "is a device"
                elif sig == b"ZF":
                    found.refusal = "is zisofs-compressed, which is not supported"
                elif sig == b"RE":
                    found.relocated = True
                elif sig == b"CL" and len(body) >= 4:
                    found.child_extent = int.from_bytes(body[0:4], "little")
                elif sig == b"CE" and len(body) >= 24:
                    next_area = (int.from_bytes(body[0:4], "little") * SECTOR
                                 + int.from_bytes(body[8:12], "little"),
                                 int.from_bytes(body[16:20], "little"))
                elif sig == b"ST":
                    break
                at += length
            if next_area is None:
                break
            continuations += 1
            if continuations > _MAX_CONTINUATIONS or next_area[1] > 64 * 1024:
                raise IsoError(f"{self.label}: a Rock Ridge continuation chain is too long")
            area = self.pread(next_area[1], next_area[0])
        if name_parts:
            found.name = b"".join(name_parts).decode("utf-8", "surrogateescape")
        return found

    # ------------------------------------------------------------------ listing

    def entries(self, directory: IsoEntry, *, joliet: bool = False) -> list[IsoEntry]:
        """The entries of ``directory`` (without "." and ".."), named as the image names them."""
        out = []
        for entry, raw, system_use in self._read_directory_raw(directory)[2:]:
            if self._rock_ridge_skip is not None and not joliet:
                susp = self._susp(system_use)
                if susp.relocated:
                    continue  # shown where it belongs, through the parent's "CL" entry
                name = susp.name or _plain_name(raw)
                extent, size, is_dir = entry.extent, entry.size, entry.is_dir
                if susp.child_extent is not None:
                    extent, is_dir = susp.child_extent, True
                    dot = self.pread(SECTOR, extent * SECTOR)
                    size = _both_endian32(dot, 10)
                out.append(IsoEntry(name, extent, size, is_dir,
                                    entry.refusal or (None if is_dir else susp.refusal)))
            elif joliet:
                name = raw.decode("utf-16-be", "replace").split(";", 1)[0]
                out.append(IsoEntry(name, entry.extent, entry.size, entry.is_dir, entry.refusal))
            else:
                out.append(IsoEntry(_plain_name(raw), entry.extent, entry.size, entry.is_dir,
                                    entry.refusal))
        return out

    def lookup(self, path: str) -> IsoEntry:
        """The entry at ``path`` (segments separated by ``/``); IsoError when absent."""
        joliet = self._joliet_root is not None
        current = self._joliet_root if joliet and self._joliet_root else self._root
        plain = self._rock_ridge_skip is None and not joliet
        parts = [p for p in path.split("/") if p]
        for depth, part in enumerate(parts):
            if not current.is_dir:
                raise IsoError(f"{'/'.join(parts[:depth])} is not a directory in {self.label}")
            match = None
            for entry in self.entries(current, joliet=joliet):
                if entry.name == part or (plain and entry.name.upper() == part.upper()):
                    match = entry
                    break
            if match is None:
                raise IsoError(f"{'/'.join(parts[:depth + 1])} is not in {self.label}")
            current = match
        return current


def _plain_name(raw: bytes) -> str:
    name = raw.decode("latin-1").split(";", 1)[0]
    return name[:-1] if name.endswith(".") else name
