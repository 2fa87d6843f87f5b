"""Who may write the tree: ``tftproxy setup`` (run once as root) and the start-up check.

Foreman's installer lays the TFTP root out root-owned (0755), with the directories smart-proxy
writes (``boot/``, ``pxelinux.cfg/``, ``grub2/``...) owned by ``foreman-proxy``. tftproxy runs
as that user too, so :func:`prepare` changes nothing the installer owns: it creates
``.tftproxy/`` (and gives it, whole, to the service user: it is tftproxy's own) and only the
published directories that are missing; one that exists but that the user cannot write is
reported with the command that fixes it, not changed.

:func:`check_writable` runs when ``serve`` starts, as the service user: if the state cannot
be written it raises :class:`~tftproxy.errors.NotWritable` naming the path, its owner and
the exact fix, instead of failing later on the first fetch; what else another user made is
:mod:`tftproxy.store.ownership`'s report.
"""

from __future__ import annotations

import os
import pwd
import stat
from dataclasses import dataclass, field
from pathlib import Path

from tftproxy.errors import InputError, NotWritable
from tftproxy.store.layout import Layout

# What tftproxy writes besides its state: boot files (Foreman's prefixes are under boot/),
# the PXE configs of every variant (tftproxy.pxe) and Foreman's per-host directories.
PUBLISHED_DIRS = ("boot", "pxelinux.cfg", "grub", "grub2", "ztp.cfg", "poap.cfg",
                  "host-config")
DEFAULT_USER = "foreman-proxy"


def _owner(path: Path) -> str:
    try:
        uid = path.stat().st_uid
    except OSError:
        return "?"
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _me() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())


def _fix(root: Path) -> str:
    return f"run `sudo tftproxy setup --root {root} --user {_me()}` once"


def _usable(path: Path) -> bool:
    return os.access(path, os.W_OK | os.X_OK, effective_ids=os.access in os.supports_effective_ids)


def check_writable(root: Path | str) -> None:
    """Raise NotWritable (naming the fix) unless this user can keep the store under ``root``.

    Only what makes every fetch fail is fatal: the root or tftproxy's state directories.
    Single files or published directories another user made are reported, with their fix,
    by :func:`tftproxy.store.ownership.ownership_problem` (the service serves the rest).
    """
    layout = Layout.at(root)
    r = layout.root
    if not r.exists():
        parent = r.parent
        if not _usable(parent):
            raise NotWritable(f"TFTP root {r} does not exist and user {_me()} cannot create it "
                              f"in {parent} (owned by {_owner(parent)}): {_fix(r)}")
        return
    if not layout.state_dir.exists():
        if not _usable(r):
            raise NotWritable(
                f"user {_me()} cannot create {layout.state_dir}: {r} is owned by {_owner(r)} "
                f"(mode {stat.S_IMODE(r.stat().st_mode):04o}), as Foreman's installer "
                f"leaves it: {_fix(r)}")
        return
    dirs = [layout.state_dir, layout.objects_dir, layout.private_dir, layout.staging_dir,
            layout.meta_dir, layout.sets_dir, layout.pins_dir, layout.locks_dir]
    for d in dirs:
        if d.exists() and not _usable(d):
            raise NotWritable(f"user {_me()} cannot write {d} (owned by {_owner(d)}): "
                              f"{_fix(r)}, or `sudo chown -R {_me()}: {layout.state_dir}`")


@dataclass
class SetupReport:
    user: str
    created: list[str] = field(default_factory=list)
    given: list[str] = field(default_factory=list)   # tftproxy's state, chowned to the user
    kept: list[str] = field(default_factory=list)    # existing, writable by the user: untouched
    problems: list[str] = field(default_factory=list)


def _writable_by(st: os.stat_result, uid: int, gids: set[int]) -> bool:
    mode = st.st_mode
    if st.st_uid == uid:
        return bool(mode & stat.S_IWUSR and mode & stat.S_IXUSR)
    if st.st_gid in gids:
        return bool(mode & stat.S_IWGRP and mode & stat.S_IXGRP)
    return bool(mode & stat.S_IWOTH and mode & stat.S_IXOTH)


def _chown_tree(top: Path, uid: int, gid: int) -> None:
    os.chown(top, uid, gid, follow_symlinks=False)
    for dirpath, dirnames, filenames in os.walk(top):
        for entry in (*dirnames, *filenames):
            os.chown(os.path.join(dirpath, entry), uid, gid, follow_symlinks=False)


def prepare(root: Path | str, user: str = DEFAULT_USER) -> SetupReport:
    """Make ``root`` ready for ``user`` to serve and publish (run as root)."""
    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        raise InputError(f"there is no user {user!r}: create it (`useradd --system --shell "
                         f"/usr/sbin/nologin --home-dir {root} {user}`) or name another "
                         f"with --user") from None
    uid, gid = pw.pw_uid, pw.pw_gid
    gids = {gid, *(g for g in os.getgrouplist(user, gid))}
    layout = Layout.at(root)
    report = SetupReport(user)
    r = layout.root
    if not r.exists():
        r.mkdir(mode=0o755, parents=True)
        os.chmod(r, 0o755)
        report.created.append(str(r))
    layout.create()
    _chown_tree(layout.state_dir, uid, gid)
    report.given.append(str(layout.state_dir))
    for name in PUBLISHED_DIRS:
        d = r / name
        if not d.exists():
            d.mkdir(mode=0o755)
            os.chmod(d, 0o755)
            os.chown(d, uid, gid)
            report.created.append(str(d))
        elif _writable_by(d.stat(), uid, gids):
            report.kept.append(str(d))
        else:
            report.problems.append(f"{d} is owned by {_owner(d)} and {user} cannot write it: "
                                   f"files under it cannot be published; left as it is "
                                   f"(`chown {user} {d}` fixes it)")
    return report
