"""Commands run as root on a tree another user owns act as that user (class 12).

The tree belongs to ``nobody`` here, as it belongs to ``foreman-proxy`` on a smart proxy.
Root's ``tftproxy fetch`` and ``gc`` leave only nobody's files; the service, run as nobody,
reports a tree an older tftproxy spoiled with the exact command that fixes it, and names the
file in a fetch that cannot proceed; ``serve`` run as root on nobody's tree refuses with the
fix instead of spoiling it.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.upstream import Upstream, static

NOBODY = pwd.getpwnam("nobody")
AS_NOBODY = ["setpriv", f"--reuid={NOBODY.pw_uid}", f"--regid={NOBODY.pw_gid}",
             "--clear-groups", "--"]
V1, V2 = b"kernel v1 " * 5000, b"kernel v2 " * 5000


@pytest.fixture
def owned_root() -> Iterator[Path]:
    """A TFTP root owned by nobody, where nobody can reach it (pytest's tmp is root's 0700)."""
    base = Path(tempfile.mkdtemp(prefix="tftproxy-owned-", dir="/tmp"))
    base.chmod(0o755)
    root = base / "tftpboot"
    root.mkdir()
    os.chown(root, NOBODY.pw_uid, NOBODY.pw_gid)
    yield root
    shutil.rmtree(base)


def _run(*args: str, user: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TFTPROXY_MIN_FREE_SPACE": "0"}
    return subprocess.run([*(user or []), sys.executable, "-m", "tftproxy", *args],
                          capture_output=True, text=True, timeout=60, env=env)


def _not_nobodys(root: Path) -> list[str]:
    out = []
    for dirpath, dirs, files in os.walk(root):
        for entry in (*dirs, *files):
            path = os.path.join(dirpath, entry)
            if os.lstat(path).st_uid != NOBODY.pw_uid:
                out.append(path)
    return out


def test_fetch_and_gc_as_root_act_as_the_trees_owner(owned_root: Path,
                                                     upstream: Upstream) -> None:
    upstream.routes["/vmlinuz"] = static(V1, etag='"1"')
    done = _run("fetch", "--root", str(owned_root), "boot/p", upstream.url("/vmlinuz"))
    assert done.returncode == 0, done.stderr
    done = _run("gc", "--root", str(owned_root), "--grace", "0")
    assert done.returncode == 0, done.stderr
    assert _not_nobodys(owned_root) == []
    # The service's own user can still change everything root's commands touched.
    upstream.routes["/vmlinuz"] = static(V2, etag='"2"')
    done = _run("fetch", "--root", str(owned_root), "boot/p", upstream.url("/vmlinuz"),
                user=AS_NOBODY)
    assert done.returncode == 0, done.stderr
    assert (owned_root / "boot/p-vmlinuz").read_bytes() == V2


def test_the_service_reports_a_spoiled_tree_with_the_fix(owned_root: Path, upstream: Upstream,
                                                         serve) -> None:
    upstream.routes["/vmlinuz"] = static(V1, etag='"1"')
    done = _run("fetch", "--root", str(owned_root), "boot/p", upstream.url("/vmlinuz"),
                user=AS_NOBODY)
    assert done.returncode == 0, done.stderr
    # What an older tftproxy run as root left behind: its locks, records and directories.
    for path in [*(owned_root / ".tftproxy/private/locks").iterdir(),
                 *(owned_root / ".tftproxy/private/meta").iterdir(), owned_root / "boot"]:
        os.chown(path, 0, 0)
    served = serve(owned_root, wrapper=AS_NOBODY)
    log = served.log_text()
    assert "cannot be changed by nobody, which tftproxy runs as (owned by root" in log, log
    assert f"Fix: chown -R nobody:nogroup {owned_root}/.tftproxy {owned_root}/boot" in log, log
    upstream.routes["/vmlinuz"] = static(V2, etag='"2"')
    data = urllib.parse.urlencode({"prefix": "boot/p", "path": upstream.url("/vmlinuz")})
    req = urllib.request.Request(f"{served.url}/tftp/fetch_boot_file", data=data.encode())
    with pytest.raises(urllib.error.HTTPError) as failed:
        urllib.request.urlopen(req, timeout=30)
    body = failed.value.read().decode()
    assert failed.value.code == 502, body
    assert "Permission denied" in body and "internal error" not in body, body
    assert (owned_root / "boot/p-vmlinuz").read_bytes() == V1


def test_serve_as_root_on_another_users_tree_refuses_with_the_fix(owned_root: Path) -> None:
    done = _run("serve", "--root", str(owned_root), "--listen", "127.0.0.1:0")
    assert done.returncode == 2
    assert f"the TFTP root {owned_root} belongs to nobody" in done.stderr
    assert "sudo -u nobody tftproxy serve --root" in done.stderr
    assert not (owned_root / ".tftproxy").exists()
