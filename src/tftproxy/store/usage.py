"""What the store holds and how much room is left: for metrics and readiness."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

from tftproxy.store.layout import Layout


@dataclass(frozen=True)
class Usage:
    objects: int
    object_bytes: int
    names: int
    disk_total: int
    disk_free: int


def usage(layout: Layout) -> Usage:
    """Counts and sizes from directory listings alone: no record is read."""
    objects = size = 0
    with contextlib.suppress(FileNotFoundError):
        for bucket in os.scandir(layout.objects_dir):
            if not bucket.is_dir(follow_symlinks=False):
                continue
            for entry in os.scandir(bucket.path):
                with contextlib.suppress(FileNotFoundError):
                    size += entry.stat(follow_symlinks=False).st_size
                    objects += 1
    names = 0
    with contextlib.suppress(FileNotFoundError):
        names = sum(1 for e in os.scandir(layout.meta_dir) if e.name.endswith(".json"))
    vfs = os.statvfs(layout.root)
    return Usage(objects, size, names, vfs.f_blocks * vfs.f_frsize, vfs.f_bavail * vfs.f_frsize)
