"""What a set's transaction hides and stages while it runs, and how it puts things back.

Both kinds of transaction (:mod:`.transaction` for boot files, :mod:`.archive` for archives)
are the check's hooks (:class:`~tftproxy.jobs.check.SetChangeHooks`): in hide mode the first
sign of a change takes every member of the set out of the tree, once, and a transaction that
does not switch puts each one's previous version back.
"""

from __future__ import annotations

from tftproxy.fetch.oci import OciManifests
from tftproxy.jobs.locking import LockSet
from tftproxy.jobs.options import RefreshMode
from tftproxy.store.aio import AsyncStore
from tftproxy.store.objects import StagingFile


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
            await self._store.begin_refresh(member.name, True)
            self._hidden_names.append(member.name)

    def settled(self) -> None:
        """The new generation is published: nothing is to be put back."""
        self._settled = True

    async def restore(self) -> None:
        """Put the previous versions back (after a failure, or when nothing changed)."""
        if self._settled:
            return
        self._settled = True
        for name in self._hidden_names:
            await self._store.abort_refresh(name)

    async def discard_staging(self) -> None:
        for staging in self._staging:
            await self._store.discard(staging)
