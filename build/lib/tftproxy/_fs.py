"""Crash-safe file-system primitives, named for what they guarantee.

Every writer of the published tree and of tftproxy's records uses these, so that a crash at
any instant leaves each file either as it was or as it was meant to become, never half of
each. "Durable" means the change survives a power cut once the call returns: the data is
fsynced before the rename, and the directory after it (a rename is only durable once its
directory is). A failed directory fsync raises: a caller told "done" must be able to rely on it.

Temporary files are named ``.<name>.<random>.tmp`` in the directory they are renamed in (or in
a given directory on the same file system), so :func:`remove_temporaries` can clear what a
crash left behind.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import time
from pathlib import Path

TEMP_SUFFIX = ".tmp"


def _temporary(directory: Path, name: str) -> Path:
    return directory / f".{name}.{secrets.token_hex(6)}{TEMP_SUFFIX}"


def fsync_directory(path: Path | str) -> None:
    """Make the entries of ``path`` (renames, creations, removals) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_all(fd: int, data: bytes | memoryview) -> None:
    """``os.write`` until every byte is written (it may write less than asked)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def replace_file_atomically(path: Path, data: bytes, *, mode: int = 0o600,
                            durable: bool = True) -> None:
    """Replace ``path`` with ``data``: a reader sees the old content or the new, whole.

    With ``durable`` (the default) the new content is also on disk when this returns; without
    it the replacement is still atomic but may be lost in a power cut (advisory state).
    The temporary file never outlives a failure.
    """
    tmp = _temporary(path.parent, path.name)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     mode)
        try:
            os.fchmod(fd, mode)  # whatever the umask
            write_all(fd, data)
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if durable:
        fsync_directory(path.parent)


def replace_symlink_atomically(target: str, path: Path, *, scratch: Path | None = None,
                               label: str | None = None) -> None:
    """Point ``path`` at ``target``, durably: a reader sees the old link or the new one.

    The new link is made aside (in ``scratch``, which must be on the same file system, or next
    to ``path``) as ``.<label>.<random>.tmp`` (label: the link's name) and renamed over
    ``path``; it never outlives a failure.
    """
    tmp = _temporary(scratch or path.parent, label or path.name)
    os.symlink(target, tmp)
    try:
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_directory(path.parent)


def remove_durably(path: Path) -> bool:
    """Remove ``path`` (a file or a link) and make the removal durable; False if absent."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    fsync_directory(path.parent)
    return True


def remove_temporaries(directory: Path, *, any_name: bool = False,
                       older_than: float = 0.0) -> int:
    """Remove what an interrupted write left in ``directory``; returns how many.

    Only our own ``.<name>.<random>.tmp`` files, or with ``any_name`` every ``*.tmp`` (in a
    directory only tftproxy writes), and only those last changed ``older_than`` seconds ago
    or more: a write takes milliseconds, so an older temporary's writer is dead, while a
    younger one may belong to another process still at work.
    """
    removed = 0
    cutoff = time.time() - older_than
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(directory):
            ours = any_name or entry.name.startswith(".")
            if not (ours and entry.name.endswith(TEMP_SUFFIX)):
                continue
            with contextlib.suppress(FileNotFoundError):
                if older_than and entry.stat(follow_symlinks=False).st_mtime > cutoff:
                    continue
                os.unlink(entry.path)
                removed += 1
    return removed
