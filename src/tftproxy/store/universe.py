"""Whether a published bootloader universe is complete and came from the source a caller names.

A universe is what one archive extraction published under
``bootloader-universe/pxegrub2/<os>/<release>/<arch>/``: the archive, the files extracted from
it and the aliases ``boot.efi -> grubx64.efi``, ``boot-sb.efi -> shimx64.efi``, all one boot
set (whose id is the archive's name). Foreman sends, with a host's config, the archive, kernel
and initrd it expects and the sha256 of the archive's URL; smart-proxy compares that with a
marker file, tftproxy with the archive's record, which cannot disagree with what is linked.
"""

from __future__ import annotations

import hashlib
import os

from tftproxy.pxe import UniverseParams
from tftproxy.store.layout import Layout
from tftproxy.store.records import Record, RecordFiles

GRUB = "grubx64.efi"
SHIM = "shimx64.efi"
ALIASES = {"boot.efi": GRUB, "boot-sb.efi": SHIM}


def source_digest(url: str) -> str:
    """What Foreman sends as ``universe_source_digest``: the sha256 of the archive's URL."""
    return hashlib.sha256(url.encode("utf-8")).hexdigest()


def _published(records: RecordFiles, name: str) -> Record | None:
    rec = records.record(name, with_checked=False)
    if rec is None or rec.current is None or rec.state != "published":
        return None
    return rec


def check_universe(layout: Layout, records: RecordFiles, wanted: UniverseParams) -> None:
    """Raise Conflict (naming the first problem) unless the universe matches ``wanted``."""
    archive = _published(records, wanted.archive)
    if archive is None or archive.current is None:
        raise wanted.conflict(f"{wanted.archive} is not published")
    if source_digest(archive.current.source) != wanted.digest:
        raise wanted.conflict(f"{wanted.archive} was fetched from another source "
                              f"({archive.current.source})")
    base = wanted.directory
    for name in (wanted.kernel, wanted.initrd, f"{base}/{GRUB}", f"{base}/{SHIM}"):
        rec = _published(records, name)
        if rec is None:
            raise wanted.conflict(f"{name} is not published")
        if rec.set != archive.set:
            raise wanted.conflict(f"{name} was not extracted from {wanted.archive}")
    root = layout.real_root
    for alias, target in ALIASES.items():
        link = os.path.join(root, base, alias)
        if not os.path.islink(link) or (os.path.realpath(link) != os.path.realpath(
                os.path.join(root, base, target))):
            raise wanted.conflict(f"{base}/{alias} is not a link to {target}")
