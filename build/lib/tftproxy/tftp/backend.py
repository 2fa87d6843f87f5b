"""What the TFTP server needs from whatever holds the files: two calls.

The server never decides a path; the backend does (tftproxy's is the store's serving face,
:class:`tftproxy.store.serving.ServedTree`; tests may pass anything with these calls).
"""

from __future__ import annotations

from typing import Protocol


class OpenFile(Protocol):
    """A file opened for one transfer; the descriptor pins its version until closed."""

    @property
    def fd(self) -> int: ...

    @property
    def size(self) -> int: ...

    @property
    def name(self) -> str: ...

    def close(self) -> None: ...


class Backend(Protocol):
    def open_served(self, requested: str, client: str | None = None) -> OpenFile:
        """Open ``requested`` for ``client`` (its address).

        Raises FileNotFoundError (not there), :class:`tftproxy.errors.Refused` (not served)
        or another OSError.
        """
        ...

    def is_refreshing(self, requested: str) -> bool:
        """Whether the name is hidden while its new version downloads (worth holding for)."""
        ...
