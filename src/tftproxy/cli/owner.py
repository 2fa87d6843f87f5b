"""Commands run as root act as the owner of the tree they change.

Otherwise ``sudo tftproxy fetch`` on a tree the service owns would leave root-owned locks,
records and directories behind, and the service (another user) could never change them.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shlex
import shutil
import sys

from tftproxy.store.layout import Layout
from tftproxy.store.ownership import tree_owner


def act_as_tree_owner(layout: Layout) -> None:
    """Run as root: become the tree's owner (uid, gid, groups) before touching the store.

    Run as the ``tftproxy`` command, the command starts again as that user through
    util-linux's ``setpriv`` (as ``sudo -u`` would), so nothing of root's stays: no open file,
    no interpreter path or module that only root can read (a lazy import would otherwise fail
    half-way through the work). Elsewhere (or without setpriv) the process itself drops to the
    owner's ids.
    """
    if os.geteuid() != 0:
        return
    owner = tree_owner(layout)
    if owner is None or owner[0] == 0:
        return
    uid, gid = owner
    try:
        user: str | None = pwd.getpwuid(uid).pw_name
    except KeyError:
        user = None  # a uid without a passwd entry: its group only
    setpriv = shutil.which("setpriv")
    if setpriv and os.path.basename(sys.argv[0]) in ("tftproxy", "__main__.py"):
        sys.stdout.flush()
        sys.stderr.flush()
        groups = "--init-groups" if user else "--clear-groups"
        os.execv(setpriv, [setpriv, f"--reuid={uid}", f"--regid={gid}", groups, "--",
                           sys.executable, *sys.orig_argv[1:]])
    if user:
        os.initgroups(user, gid)
    else:
        os.setgroups([gid])
    os.setgid(gid)
    os.setuid(uid)


def foreign_owner(layout: Layout) -> str | None:
    """The owner's name when root runs a daemon on another user's tree (else None)."""
    if os.geteuid() != 0:
        return None
    owner = tree_owner(layout)
    if owner is None or owner[0] == 0:
        return None
    with contextlib.suppress(KeyError):
        return pwd.getpwuid(owner[0]).pw_name
    return str(owner[0])


def refuse_foreign_tree(layout: Layout, command: str) -> int | None:
    """Exit status 2 with the fix when root would serve another user's tree, else None.

    A service run as root would create root-owned files the real service user cannot change;
    binding port 69 needs root, so the right fix is the user's service, not a privilege drop.
    """
    owner = foreign_owner(layout)
    if owner is None:
        return None
    args = " ".join(shlex.quote(a) for a in sys.argv[1:]) or command
    print(f"tftproxy {command}: the TFTP root {layout.root} belongs to {owner}; run tftproxy "
          f"as that user so that what it writes stays theirs: sudo -u {owner} tftproxy {args} "
          f"(for port 69, give it CAP_NET_BIND_SERVICE, e.g. AmbientCapabilities= in its "
          f"systemd unit), or make root the owner: chown -R root: {layout.root}",
          file=sys.stderr)
    return 2
