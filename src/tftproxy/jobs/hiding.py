"""What a set's transaction hides and stages while it runs, and how it puts things back.

Both kinds of transaction (:mod:`.transaction` for boot files, :mod:`.archive` for archives)
are the check's hooks (:class:`~tftproxy.jobs.check.SetChangeHooks`): in hide mode the first
sign of a change takes every member of the set out of the tree, once, and a transaction that
does not switch puts each one's previous version back.

A failure of this machine (a full disk, files another user owns) does not stop the putting
back: every staging file is freed first (on a full disk, a failed download holds the space the
restore needs), then each hidden member is restored on its own (one that cannot be put back
does not keep the others hidden; it is named in :attr:`SetChanges.unrestored`).
"""

from __future__ import annotations

import logging

from tftproxy.fetch.oci import OciManifests
from tftproxy.jobs.locking import LockSet
from tftproxy.jobs.options import RefreshMode
from tftproxy.store.aio import AsyncStore
from tftproxy.store.objects import StagingFile

log = logging.getLogger(__name__)


def describe_os_error(exc: OSError) -> str:
    """A one-line reason for a failure of this machine, naming the file."""
    where = f": {exc.filename}" if exc.filename else ""
    reason = f"{exc.strerror or exc}{where}"
    if isinstance(exc, PermissionError):
        reason += " (the files under .tftproxy/private must belong to the user tftproxy runs as)"
    return reason


class SetChanges:
    """The hidden names and staging files of one transaction over the set ``set_id``."""

    def __init__(self, store: AsyncStore, lockset: LockSet, refresh_mode: RefreshMode,
                 set_id: str, oci: OciManifests) -> None:
        self._store = store
        self._oci = oci
        self._lockset = lockset
        self._refresh_mode = refresh_mode
        self._set_id = set_id
        self._hidden_names: list[str] = []
        self._staging: list[StagingFile] = []
        self.unrestored: list[str] = []
        self._settled = False
        self._hidden = False

    @property
    def hidden(self) -> bool:
        return self._hidden

    def track(self, staging: StagingFile) -> None:
        self._staging.append(staging)

    @property
    def oci(self) -> OciManifests:
        """The OCI references this transaction resolved: each is resolved once."""
        return self._oci

    async def hide(self) -> None:
        """In hide mode, take every member out of the tree (once) until the switch."""
        if self._hidden or self._refresh_mode is not RefreshMode.HIDE:
            return
        self._hidden = True
        members = await self._store.members(self._set_id)
        # Their locks first: a recovering process must not take our hiding for a crash's.
        await self._lockset.acquire(sorted(m.name for m in members))
        for member in members:
            # Noted first: a hide that fails half-way is still undone.
            self._hidden_names.append(member.name)
            await self._store.begin_refresh(member.name, True)

    async def begin_first_fetch(self, name: str) -> None:
        """Mark ``name``, which has no version yet, as fetching its first: readers of our
        servers wait for it until the switch; :meth:`restore` drops the mark."""
        await self._store.begin_first_fetch(name)
        self._hidden_names.append(name)

    def settled(self) -> None:
        """The new generation is published: nothing is to be put back."""
        self._settled = True

    async def restore(self) -> None:
        """Put the previous versions back (after a failure, or when nothing changed); a
        first fetch's mark goes. The staging files go first; each member is restored on its
        own, whatever happens to the others."""
        if self._settled:
            return
        self._settled = True
        await self.discard_staging()
        for name in self._hidden_names:
            try:
                await self._store.abort_refresh(name)
            except OSError as exc:
                self.unrestored.append(name)
                log.error("cannot put back the previous version of %s: %s; it stays hidden "
                          "until its next fetch or tftproxy's next start", name,
                          describe_os_error(exc))

    async def discard_staging(self) -> None:
        """Free every staging file (each once; one that cannot be removed is logged)."""
        while self._staging:
            staging = self._staging.pop()
            try:
                await self._store.discard(staging)
            except OSError as exc:
                log.error("cannot remove the staging file %s: %s", staging.path, exc)
