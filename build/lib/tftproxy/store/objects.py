"""Content: staging files receiving downloads, and the immutable objects they become.

A download is written into a private staging file on the root's file system, fsynced, then
renamed into ``objects/<aa>/<sha256>`` (mode 0444): one copy per content, whatever names
link to it. Nothing is ever continued from a broken transfer: each attempt gets a new file.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

from tftproxy._fs import fsync_directory, write_all
from tftproxy.store.layout import Layout
from tftproxy.store.names import name_key


class StagingFile:
    """A private file receiving one download; removed unless :meth:`Objects.ingest` takes it."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self.fd = fd

    def write(self, data: bytes | memoryview) -> None:
        write_all(self.fd, data)

    def size(self) -> int:
        return os.fstat(self.fd).st_size

    def discard(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


class Objects:
    """The content store of one tree."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout

    def path(self, sha256: str) -> Path:
        return self.layout.object_path(sha256)

    def exists(self, sha256: str) -> bool:
        return self.path(sha256).exists()

    def new_staging(self, name: str) -> StagingFile:
        """A new, empty staging file for a download of ``name``."""
        path = self.layout.staging_dir / f"{name_key(name)}-{secrets.token_hex(6)}.part"
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        return StagingFile(path, fd)

    def free_bytes(self) -> int:
        st = os.statvfs(self.layout.staging_dir)
        return st.f_bavail * st.f_frsize

    def ingest(self, staging: StagingFile, sha256: str) -> Path:
        """Move a complete staging file into the object store durably (or drop it as a dup)."""
        obj = self.path(sha256)
        obj.parent.mkdir(mode=0o755, exist_ok=True)
        os.fchmod(staging.fd, 0o444)
        os.fsync(staging.fd)
        os.close(staging.fd)
        staging.fd = -1
        if obj.exists():
            staging.discard()  # same content already stored: keep one copy
        else:
            os.rename(staging.path, obj)
            fsync_directory(obj.parent)
        return obj
