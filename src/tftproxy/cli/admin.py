"""The installer's commands: ``setup``, ``install-unit`` and ``adopt``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import pwd
import shutil
import stat
import subprocess
import sys
from importlib import resources
from pathlib import Path

from tftproxy.cli.commands import settings_from
from tftproxy.cli.output import human
from tftproxy.cli.owner import act_as_tree_owner
from tftproxy.errors import InputError
from tftproxy.store.layout import Layout
from tftproxy.store.setup import DEFAULT_USER, prepare

__all__ = ["DEFAULT_USER", "cmd_adopt", "cmd_install_unit", "cmd_setup"]

SETTINGS_DIR = Path("/etc/foreman-proxy")
CONFIG = Path("/etc/tftproxy/tftproxy.yml")


def data_file(name: str) -> str:
    """A file shipped in the package (the unit, the example configuration)."""
    return resources.files("tftproxy").joinpath("data", name).read_text(encoding="utf-8")


def cmd_setup(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    report = prepare(settings.tftproot, args.user)
    for path in report.created:
        print(f"created {path}")
    for path in report.given:
        print(f"gave {path} to {report.user}")
    for path in report.kept:
        print(f"kept {path} as it is ({report.user} can write it)")
    for problem in report.problems:
        print(f"warning: {problem}", file=sys.stderr)
    print(f"{settings.tftproot} is ready for user {report.user}")
    return 1 if report.problems else 0


def _executable() -> list[str]:
    """How systemd should start this installation's tftproxy."""
    script = Path(sys.executable).parent / "tftproxy"
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    found = shutil.which("tftproxy")
    return [found] if found else [sys.executable, "-m", "tftproxy"]


def render_unit(*, user: str, root: Path, settings_dir: Path | None, config: Path,
                command: list[str] | None = None) -> str:
    """The shipped unit with this installation's command, user and TFTP root."""
    argv = [*(command or _executable()), "serve"]
    if settings_dir is not None:
        argv += ["--settings-dir", str(settings_dir)]
    argv += ["--config", str(config)]
    lines = []
    for line in data_file("tftproxy.service").splitlines():
        if line.startswith("ExecStart="):
            line = "ExecStart=" + " ".join(argv)
        elif line.startswith(("User=", "Group=")):
            line = line.split("=", 1)[0] + "=" + user
        elif line == "ReadWritePaths=/var/lib/tftpboot":
            line = f"ReadWritePaths={root}"
        lines.append(line)
    return "\n".join(lines) + "\n"


def unreachable(path: str, user: str) -> str | None:
    """The first directory on the way to ``path`` that ``user`` cannot search, if any."""
    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        return None
    gids = set(os.getgrouplist(user, pw.pw_gid))
    real = Path(os.path.realpath(path))
    for d in [*reversed(real.parents), real]:
        st = d.stat()
        bit = (stat.S_IXUSR if st.st_uid == pw.pw_uid else
               stat.S_IXGRP if st.st_gid in gids else stat.S_IXOTH)
        if not st.st_mode & bit:
            return str(d)
    return None


def cmd_install_unit(args: argparse.Namespace) -> int:
    settings_dir = args.settings_dir
    if settings_dir is None and (SETTINGS_DIR / "settings.yml").is_file():
        settings_dir = SETTINGS_DIR
    config = args.config or CONFIG
    settings = settings_from(args)
    unit = render_unit(user=args.user, root=Path(os.path.abspath(settings.tftproot)),
                       settings_dir=settings_dir, config=config)
    if args.print_only:
        sys.stdout.write(unit)
        return 0
    args.unit_dir.mkdir(parents=True, exist_ok=True)
    target = args.unit_dir / "tftproxy.service"
    target.write_text(unit, encoding="utf-8")
    print(f"wrote {target}")
    if not config.exists():
        config.parent.mkdir(parents=True, exist_ok=True)
        config.write_text(data_file("tftproxy.yml"), encoding="utf-8")
        print(f"wrote {config} (the annotated example: read it, then start)")
    if Path("/run/systemd/system").is_dir():
        with contextlib.suppress(OSError):
            subprocess.run(["systemctl", "daemon-reload"], check=False)
    for path in {sys.executable, _executable()[0]}:
        blocked = unreachable(path, args.user)
        if blocked is not None:
            print(f"warning: user {args.user} cannot reach {blocked}, so cannot run {path}: "
                  f"install tftproxy where it can (e.g. `PIPX_HOME=/opt/pipx "
                  f"PIPX_BIN_DIR=/usr/local/bin pipx install tftproxy`)", file=sys.stderr)
    print(f"next: sudo tftproxy setup --root {settings.tftproot} --user {args.user}; "
          f"sudo systemctl enable --now tftproxy")
    return 0


def _sources(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        name, sep, url = pair.partition("=")
        if not sep or not name or not url:
            raise InputError(f"--source {pair!r}: expected NAME=URL")
        out[name.strip("/")] = url
    return out


def cmd_adopt(args: argparse.Namespace) -> int:
    from tftproxy import assemble
    from tftproxy.jobs.adopt import adopt
    from tftproxy.store.adoption import unmanaged

    settings = settings_from(args)
    # Run as root on a tree the service owns, it acts as that owner (see cli.owner).
    act_as_tree_owner(Layout.at(settings.tftproot))
    sources = _sources(args.source)
    if args.dry_run:
        store = assemble.store(settings, create=False)
        wanted = set(args.names)
        for u in unmanaged(store.layout):
            if not wanted or u.name in wanted:
                print(f"would adopt {u.name} ({human(u.size)})")
        return 0

    async def go() -> int:
        files = assemble.boot_files(settings)
        try:
            await files.recover()
            outcomes = await adopt(files, args.names, sources)
        finally:
            await files.close()
        for o in outcomes:
            print(f"{o.status}: {o.name}: {o.detail}")
        if not outcomes:
            print(f"nothing to adopt under {settings.tftproot}/boot")
        return 1 if any(o.status == "failed" for o in outcomes) else 0

    return asyncio.run(go())
