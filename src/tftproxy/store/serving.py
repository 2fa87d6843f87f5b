"""The serving face of the store: what TFTP and HTTP-boot readers may open, and how.

A reader gets an open descriptor, which pins the version for the whole transfer even if a
publish follows. Paths are checked on the name asked for and again on what was opened, so
nothing outside the root or in tftproxy's private state is ever served.

With the client's address, a boot set's members are served from the generation that client
started on (see :mod:`tftproxy.store.pins`), so a client never boots a mixed pair.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from dataclasses import dataclass, replace
from pathlib import Path

from tftproxy._paths import is_within
from tftproxy.errors import Refused
from tftproxy.store.layout import Layout
from tftproxy.store.links import Links
from tftproxy.store.names import Names, served_name
from tftproxy.store.pins import Pins
from tftproxy.store.records import RecordFiles


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


class ServedTree:
    """Opens files of one tree for readers; safe to use from any process."""

    def __init__(self, layout: Layout, pin_window: float) -> None:
        self.layout = layout
        self.root = layout.root
        self.pin_window = pin_window
        self.records = RecordFiles(layout)
        self._links = Links(layout, Names(layout))
        self.pins = Pins(layout.pins_dir, pin_window)

    def resolve_served(self, requested: str) -> Path:
        """The real path of a servable file inside the root.

        Raises Refused (outside the root, private) or FileNotFoundError.
        """
        real = os.path.realpath(os.path.join(self.layout.real_root, served_name(requested)))
        self._check_servable(real, requested)
        return Path(real)

    def _check_servable(self, real: str, requested: str) -> None:
        real_root = self.layout.real_root
        if not is_within(real, real_root) or real == real_root:
            raise Refused(f"{requested!r} resolves outside the root")
        if is_within(real, self.layout.real_private):
            raise Refused(f"{requested!r} is tftproxy's private state")

    def open_served(self, requested: str, client: str | None = None) -> ServedFile:
        """Open a file for serving; raises FileNotFoundError, Refused or another OSError.

        With ``client`` (its address), members of a boot set are served from the generation
        that client started on, and its pin is noted.
        """
        if client is None:
            return self._open_current(requested)
        name = served_name(requested)
        rec = self.records.record(name, with_checked=False)
        if rec is None or rec.set is None:
            return self._open_current(requested)
        pinned = self.pins.get(client, rec.set)
        # A pinned client reads its generation's content, also while the name is hidden for
        # a set change (its generation is then still the current one).
        if pinned is not None:
            srec = self.records.set_record(rec.set)
            gen = srec.generation(pinned) if srec else None
            sha = gen.members.get(name) if gen else None
            if sha is not None:
                try:
                    obj = self.layout.object_path(sha).relative_to(self.root)
                    served = self._open_current(str(obj))
                except (FileNotFoundError, Refused):
                    pass
                else:
                    self.pins.note(client, rec.set, pinned)
                    return replace(served, name=name)
        served = self._open_current(requested)
        if rec.current is not None and self._links.matches(name, rec.current):
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
                raise Refused(f"{requested!r} cannot be opened") from None
            raise
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise Refused(f"{requested!r} is not a regular file")
            # Re-check what was actually opened: a swap between realpath() and open() is caught.
            self._check_servable(os.readlink(f"/proc/self/fd/{fd}"), requested)
            os.set_blocking(fd, True)
        except BaseException:
            os.close(fd)
            raise
        return ServedFile(fd=fd, size=st.st_size, mtime=st.st_mtime, name=served_name(requested))

    def is_refreshing(self, requested: str) -> bool:
        """True while a changed version of this name downloads with the name hidden."""
        try:
            name = served_name(requested)
        except Refused:
            return False
        rec = self.records.record(name)
        return rec is not None and rec.state != "published" and rec.hidden
