"""Links: published names are relative symlinks into the object store, switched atomically.

A link is made aside in ``staging/`` and renamed over the name, so a reader of the name sees
the old content or the new one, whole. Links are relative and stay inside the root, so any
server (in.tftpd ``-s``, dnsmasq, nginx) can serve the tree. An alias (``boot.efi`` of a
bootloader universe) is a relative symlink to another published name instead.
"""

from __future__ import annotations

import os
from pathlib import Path

from tftproxy._fs import remove_durably, replace_symlink_atomically
from tftproxy._paths import is_within
from tftproxy.errors import NameRefused
from tftproxy.store.layout import STATE_DIRNAME, Layout
from tftproxy.store.names import Names, name_key
from tftproxy.store.records import Version


class Links:
    """The published names of one tree."""

    def __init__(self, layout: Layout, names: Names) -> None:
        self.layout = layout
        self._names = names

    def final_path(self, name: str) -> Path:
        """The real location of a name's link, creating its parent directories.

        The path is checked again here, right before the tree changes: a symlink planted on
        the way since the name was requested must not redirect a link.
        """
        self._names.check_path(name)
        parent, _, base = name.rpartition("/")
        real_root = self.layout.real_root
        real_parent = os.path.realpath(os.path.join(real_root, parent))
        if not is_within(real_parent, real_root):
            raise NameRefused(f"{name!r} leads outside the TFTP root")
        os.makedirs(real_parent, mode=0o755, exist_ok=True)
        return Path(real_parent) / base

    def link(self, name: str, sha256: str) -> None:
        """Point ``name`` at the stored content ``sha256``, durably."""
        final = self.final_path(name)
        target = os.path.relpath(os.path.realpath(self.layout.object_path(sha256)), final.parent)
        # Named by the name's key, as staging files are: recovery then knows whose it is.
        replace_symlink_atomically(target, final, scratch=self.layout.staging_dir,
                                   label=name_key(name))

    def alias_target(self, name: str, alias: str) -> str:
        """The text of the link from ``name`` to the published name ``alias``: relative."""
        return os.path.relpath(alias, os.path.dirname(name) or ".")

    def link_version(self, name: str, version: Version) -> None:
        """Point ``name`` at what ``version`` says: its object, or the name it is an alias of."""
        if version.alias is None:
            self.link(name, version.sha256)
            return
        final = self.final_path(name)
        self._names.check_path(version.alias)
        replace_symlink_atomically(self.alias_target(name, version.alias), final,
                                   scratch=self.layout.staging_dir, label=name_key(name))

    def matches(self, name: str, version: Version) -> bool:
        """Whether ``name``'s link is already the one ``version`` needs."""
        if version.alias is None:
            return self.linked_sha256(name) == version.sha256
        try:
            text = os.readlink(os.path.join(self.layout.real_root, name))
        except OSError:
            return False
        return text == self.alias_target(name, version.alias)

    def ensure(self, name: str, version: Version) -> None:
        if not self.matches(name, version):
            self.link_version(name, version)

    def unlink(self, name: str) -> None:
        remove_durably(self.final_path(name))

    def linked_sha256(self, name: str) -> str | None:
        """The content a name's link points at, or None if it is absent or not one of ours.

        Our links always end in ``.tftproxy/objects/<aa>/<sha256>``; reading that from the
        link text avoids resolving paths on the hot path of up-to-date checks.
        """
        try:
            target = os.readlink(os.path.join(self.layout.real_root, name))
        except OSError:
            return None
        parts = target.rsplit("/", 4)
        if len(parts) < 4 or parts[-4:-2] != [STATE_DIRNAME, "objects"]:
            return None
        sha = parts[-1]
        if len(sha) != 64 or parts[-2] != sha[:2]:
            return None
        return sha
