"""Locks shared with other processes: one flock file per name, set, and clean-up."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


class NameLock:
    """An flock on one lock file, exclusive or shared, across processes.

    The file stays open between :meth:`unlock` and the next :meth:`acquire` (a cached lock
    costs no open); :meth:`release` closes it, which also drops the flock.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)

    def acquire(self, blocking: bool = True, shared: bool = False) -> bool:
        """Take the lock; without ``blocking``, False when someone else holds it."""
        flags = (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | (0 if blocking else fcntl.LOCK_NB)
        try:
            fcntl.flock(self._fd, flags)
        except BlockingIOError:
            return False
        return True

    def unlock(self) -> None:
        """Drop the flock but keep the file open for the next acquire."""
        if self._fd >= 0:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> NameLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
