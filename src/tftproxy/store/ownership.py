"""Who may change the tree: the files a process running as another user cannot replace.

A ``tftproxy fetch`` or ``gc`` run as root on a tree the service owns as another user would
leave root-owned locks, records and directories, and the service would then fail that set
with "permission denied" for good. The commands act as the tree's owner (see
:mod:`tftproxy.cli.owner`); :func:`ownership_problem` finds what is already wrong, so the
service can say so at start-up with the command that fixes it.
"""

from __future__ import annotations

import grp
import os
import pwd
import shlex
from pathlib import Path

from tftproxy.store.layout import Layout

# A tree holds a few thousand entries; a bound keeps the check cheap on any tree.
SCAN_LIMIT = 200_000


def tree_owner(layout: Layout) -> tuple[int, int] | None:
    """(uid, gid) owning the store (its private directory, else the root), or None."""
    for path in (layout.private_dir, layout.root):
        try:
            st = os.stat(path)
        except OSError:
            continue
        return st.st_uid, st.st_gid
    return None


def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _group(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def blocked(layout: Layout, limit: int = SCAN_LIMIT) -> list[Path]:
    """What this process cannot change but must: directories anywhere in the tree it cannot
    write into, and files of the private state it cannot read and write."""
    out: list[Path] = []
    private = str(layout.private_dir)
    seen = 0
    for dirpath, dirnames, filenames in os.walk(layout.root):
        if not os.access(dirpath, os.W_OK | os.X_OK):
            out.append(Path(dirpath))
        if dirpath == private or dirpath.startswith(private + os.sep):
            for f in filenames:
                path = os.path.join(dirpath, f)
                if not os.path.islink(path) and not os.access(path, os.R_OK | os.W_OK):
                    out.append(Path(path))
        seen += len(dirnames) + len(filenames)
        if seen > limit:
            break
    return out


def ownership_problem(layout: Layout) -> str | None:
    """A one-paragraph report of what this process cannot change, with the fix, or None."""
    found = blocked(layout)
    if not found:
        return None
    uid, gid = os.geteuid(), os.getegid()
    owners = sorted({_user(p.lstat().st_uid) for p in found if p.exists()})
    tops = sorted({layout.root / p.relative_to(layout.root).parts[0]
                   if p != layout.root else p for p in found})
    fix = "chown -R {}:{} {}".format(_user(uid), _group(gid),
                                     " ".join(shlex.quote(str(t)) for t in tops))
    examples = ", ".join(str(p) for p in found[:3])
    return (f"{len(found)} file(s) or directories in {layout.root} cannot be changed by "
            f"{_user(uid)}, which tftproxy runs as (owned by {', '.join(owners) or '?'}; "
            f"e.g. {examples}): a fetch or clean-up run as another user made them, and fetches "
            f"touching them will fail. Fix: {fix}")
