"""What a TFTP root holds for its readers: every file and link, tftproxy's own state aside."""

from __future__ import annotations

import os
from pathlib import Path


def files_under(root: Path) -> set[str]:
    """Every file and link under ``root`` (relative paths), except tftproxy's own state."""
    found = set()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d != ".tftproxy"]
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            found.add(os.path.relpath(os.path.join(dirpath, name), root))
    return found
