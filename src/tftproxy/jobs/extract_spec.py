"""What an archive request asks for (smart-proxy PR #958's ``extract``), checked as text.

``{"source", "destination", "type": "tgz"|"iso", "files": {name: member},
"symlinks": {link: target}}``: the archive from ``source`` is published as ``destination``,
each member as its name, each link as an alias of a name of ``files``. All of them form one
boot set, so they must lie in ``destination``'s directory (the bootloader universe); members
are taken by exact, relative name; a link may only point at a file of the same request.
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tftproxy.errors import InputError, printable
from tftproxy.fetch.extract import KINDS, ArchiveKind, member_name

PREFIX = "Cannot extract boot file"


def _name(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"{PREFIX}, {what} must be a non-empty string")
    if value.endswith("/"):
        raise InputError(f"{PREFIX}, TFTP destination must be a file path: {printable(value)}")
    # smart-proxy's words; the store's rules are applied to every name after these.
    if value.startswith("/"):
        raise InputError(f"{PREFIX}, TFTP path must be relative: {printable(value)}")
    if ".." in value.split("/"):
        raise InputError(f"{PREFIX}, TFTP path outside of tftproot: {printable(value)}")
    return value


def _map(value: Any, what: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InputError(f"{PREFIX}, {what} must be a map")
    out = {}
    for key, val in value.items():
        if not isinstance(key, str) or not isinstance(val, str):
            raise InputError(f"{PREFIX}, {what} must map strings to strings")
        out[key] = val
    return out


@dataclass(frozen=True)
class ExtractSpec:
    source: str
    destination: str
    kind: ArchiveKind
    files: dict[str, str]  # published name -> archive member
    symlinks: dict[str, str]  # published name -> published name (a key of files)

    @property
    def set_id(self) -> str:
        """The boot set of an archive: itself and what was extracted from it."""
        return self.destination

    @property
    def names(self) -> list[str]:
        return [self.destination, *self.files, *self.symlinks]

    @property
    def signature(self) -> str:
        """Two requests with the same signature ask for the same thing (and join)."""
        return json.dumps([self.source, self.destination, self.kind, self.files, self.symlinks],
                          sort_keys=True)

    def with_names(self, checked: list[str]) -> ExtractSpec:
        """The spec with every name replaced by its normalised form (as the store checked)."""
        n_files = len(self.files)
        dest, files, links = checked[0], checked[1:1 + n_files], checked[1 + n_files:]
        by_name = dict(zip(self.files, files, strict=True))
        spec = ExtractSpec(self.source, dest, self.kind,
                           dict(zip(files, self.files.values(), strict=True)),
                           {link: by_name.get(target, target) for link, target in
                            zip(links, self.symlinks.values(), strict=True)})
        spec.check_layout()
        return spec

    def check_layout(self) -> None:
        """Every name in the archive's directory, none twice, none inside another, links to
        files of this request only."""
        directory = posixpath.dirname(self.destination)
        inside = directory + "/" if directory else ""
        names = self.names
        if len(set(names)) != len(names):
            raise InputError(f"{PREFIX}, a name is given twice among destination, files and "
                             "symlinks")
        for name in names[1:]:
            if not name.startswith(inside):
                raise InputError(f"{PREFIX}, {printable(name)} is outside {directory or '/'}: "
                                 "files and symlinks of an archive lie in its directory")
        as_dirs = {n + "/" for n in names}
        for name in names:
            if any(name.startswith(d) for d in as_dirs):
                raise InputError(f"{PREFIX}, {printable(name)} lies inside another file of "
                                 "the request")
        for link, target in self.symlinks.items():
            if target not in self.files:
                raise InputError(f"{PREFIX}, symlink {printable(link)} points at "
                                 f"{printable(target)}, which is not one of the files "
                                 "extracted by this request")


def parse_extract(data: Any) -> ExtractSpec:
    """The ``extract`` object of a request; InputError (400) naming what is wrong."""
    if not isinstance(data, Mapping):
        raise InputError(f"{PREFIX}, extract must be a map")
    source = data.get("source")
    if not isinstance(source, str) or not source.strip():
        raise InputError(f"{PREFIX}, missing source")
    kind = data.get("type")
    if kind not in KINDS:
        raise InputError(f"{PREFIX}, unknown archive type: {printable(str(kind))}")
    destination = _name(data.get("destination"), "destination")
    files = {_name(k, "a files destination"): v for k, v in _map(data.get("files"),
                                                                  "files").items()}
    if not files:
        raise InputError(f"{PREFIX}, files is empty: name the members to extract")
    members = {}
    for name, member in files.items():
        clean = member_name(member)
        if clean is None:
            raise InputError(f"{PREFIX}, archive member {printable(member)!r} must be a "
                             "relative path without '..'")
        members[name] = clean
    links = {_name(k, "a symlink"): _name(v, "a symlink target")
             for k, v in _map(data.get("symlinks"), "symlinks").items()}
    spec = ExtractSpec(source.strip(), destination, kind, members, links)
    spec.check_layout()
    return spec
