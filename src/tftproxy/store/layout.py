"""Where everything of the store lives under a TFTP root ``R``::

    R/<name>                              relative symlink -> .tftproxy/objects/<aa>/<sha256>
    R/.tftproxy/objects/<aa>/<sha256>     immutable content, mode 0444, stored once per content
    R/.tftproxy/private/                  mode 0700: never served by any TFTP or HTTP server
        staging/<key>-<rand>.part         downloads in progress (same filesystem: rename is atomic)
        meta/<key>.json                   one record per published name
        sets/<key>.json                   one record per boot set: its generations
        pins/<client>.json                which generation each client is on (advisory)
        sync/<key>.json                   each boot set's revalidation schedule (advisory)
        locks/<key>.lock                  flocks shared with other processes
        gc.lock                           clean-up's lock
        quarantine/                       records recovery could not repair, set aside
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

STATE_DIRNAME = ".tftproxy"


@dataclass(frozen=True)
class Layout:
    """The paths of one store; :meth:`create` makes the directories."""

    root: Path
    real_root: str

    @classmethod
    def at(cls, root: Path | str) -> Layout:
        absolute = Path(os.path.abspath(root))
        return cls(absolute, os.path.realpath(absolute))

    @property
    def state_dir(self) -> Path:
        return self.root / STATE_DIRNAME

    @property
    def objects_dir(self) -> Path:
        return self.state_dir / "objects"

    @property
    def private_dir(self) -> Path:
        return self.state_dir / "private"

    @property
    def staging_dir(self) -> Path:
        return self.private_dir / "staging"

    @property
    def meta_dir(self) -> Path:
        return self.private_dir / "meta"

    @property
    def sets_dir(self) -> Path:
        return self.private_dir / "sets"

    @property
    def pins_dir(self) -> Path:
        return self.private_dir / "pins"

    @property
    def sync_dir(self) -> Path:
        return self.private_dir / "sync"

    @property
    def locks_dir(self) -> Path:
        return self.private_dir / "locks"

    def lock_path(self, key: str) -> Path:
        """The lock file of a name's key (``names.name_key``): every process must agree on it."""
        return self.locks_dir / f"{key}.lock"

    @property
    def quarantine_dir(self) -> Path:
        return self.private_dir / "quarantine"

    @property
    def gc_lock_path(self) -> Path:
        return self.private_dir / "gc.lock"

    @property
    def real_state(self) -> str:
        return os.path.join(self.real_root, STATE_DIRNAME)

    @property
    def real_private(self) -> str:
        return os.path.join(self.real_state, "private")

    def object_path(self, sha256: str) -> Path:
        return self.objects_dir / sha256[:2] / sha256

    def exists(self) -> bool:
        """Whether a store was ever made here (its records directory exists)."""
        return self.meta_dir.is_dir()

    def create(self) -> None:
        """Make the directories, the private ones mode 0700 whatever the umask."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.state_dir.mkdir(mode=0o755, exist_ok=True)
        self.objects_dir.mkdir(mode=0o755, exist_ok=True)
        self.private_dir.mkdir(mode=0o700, exist_ok=True)
        os.chmod(self.private_dir, 0o700)
        for d in (self.staging_dir, self.meta_dir, self.locks_dir, self.sets_dir, self.pins_dir,
                  self.sync_dir):
            d.mkdir(mode=0o700, exist_ok=True)
