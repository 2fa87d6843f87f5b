"""Installed as an admin installs it: the systemd unit verified by systemd-analyze, its
ExecStart run as the service user with only CAP_NET_BIND_SERVICE on port 69 in a network
namespace, `tftproxy setup` on Foreman's installer layout, and the start-up check."""

from __future__ import annotations

import atexit
import grp
import hashlib
import os
import pwd
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.nginx import Nginx
from tests.tftp.clients import publish
from tftproxy.cli.admin import render_unit
from tftproxy.store import BootStore

CAP_NET_BIND_SERVICE = 1 << 10


_LAUNCHER: list[Path] = []


def launcher() -> Path:
    """A `tftproxy` command the service user can run.

    The test venv's interpreter may live where only root can go (pyenv under /root), as an
    admin's would not; this one is the system's Python of the same version, with the venv's
    packages and the source on its path (PYTHONPATH, so that TFTP workers find them too).
    """
    if _LAUNCHER:
        return _LAUNCHER[0]
    major, minor = sys.version_info[:2]
    system = Path(f"/usr/bin/python{major}.{minor}")
    if not system.exists():
        pytest.fail(f"{system} is missing: the service user needs a Python {major}.{minor} it "
                    "can run (Debian package python3)")
    import tftproxy

    paths = [str(Path(tftproxy.__file__).parent.parent),
             *(p for p in sys.path if p.endswith("site-packages"))]
    base = Path(tempfile.mkdtemp(prefix="tftproxy-bin-", dir="/var/tmp"))
    atexit.register(shutil.rmtree, base, True)
    os.chmod(base, 0o755)
    script = base / "tftproxy"
    script.write_text(f"#!{system}\nimport os, sys\npaths = {paths!r}\n"
                      "os.environ['PYTHONPATH'] = ':'.join(paths)\nsys.path[:0] = paths\n"
                      "from tftproxy.cli import main\nsys.exit(main())\n")
    os.chmod(script, 0o755)
    _LAUNCHER.append(script)
    return script


def tftproxy(*args: str, user: str | None = None) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "tftproxy", *args]
    if user is not None:
        cmd = ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups",
               "--inh-caps=-all", "--bounding-set=-all", "--", str(launcher()), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "TFTPROXY_MIN_FREE_SPACE": "0"})


@pytest.fixture(scope="session")
def service_user() -> Iterator[str]:
    """A real system user, as the foreman-proxy package creates one."""
    if os.geteuid() != 0:
        pytest.fail("the installation tests run as root (they create a user)")
    name = f"tftpx{secrets.token_hex(3)}"
    subprocess.run(["useradd", "--system", "--user-group", "--no-create-home", "--shell",
                    "/usr/sbin/nologin", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["userdel", name], check=False)


@pytest.fixture
def foreman_layout(service_user: str) -> Iterator[Path]:
    """The tree foreman-installer leaves: the root root-owned 0755, the directories
    smart-proxy writes owned by foreman-proxy (here: the test's user), boot loaders root's."""
    # Outside pytest's 0700 temporary directory: the service user must reach it.
    base = Path(tempfile.mkdtemp(prefix="tftproxy-layout-", dir="/var/tmp"))
    os.chmod(base, 0o755)
    root = base / "tftpboot"
    root.mkdir(mode=0o755)
    pw = pwd.getpwnam(service_user)
    for d in ("boot", "pxelinux.cfg", "grub", "grub2", "ztp.cfg", "poap.cfg"):
        (root / d).mkdir(mode=0o755)
        os.chown(root / d, pw.pw_uid, 0)
    (root / "pxelinux.0").write_bytes(os.urandom(1000))
    (root / "grub2" / "grubx64.efi").write_bytes(os.urandom(2000))
    try:
        yield root
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_setup_prepares_the_installer_layout_without_changing_it(
        foreman_layout: Path, service_user: str, nginx: Nginx) -> None:
    root = foreman_layout
    before = {p: (p.stat().st_uid, p.stat().st_mode) for p in [root, *root.iterdir()]}
    # Before setup the service user cannot start: the check names the fix.
    done = tftproxy("serve", "--root", str(root), "--listen", "127.0.0.1:1", user=service_user)
    assert done.returncode == 1
    # The start-up line (version told to Foreman) comes first; the refusal ends the output.
    assert done.stderr.strip().splitlines()[-1] == (
        f"tftproxy: user {service_user} cannot create {root}/.tftproxy: {root} is owned by "
        f"root (mode 0755), as Foreman's installer leaves it: run `sudo tftproxy setup "
        f"--root {root} --user {service_user}` once")
    done = tftproxy("setup", "--root", str(root), "--user", service_user)
    assert done.returncode == 0, done.stderr
    assert f"gave {root}/.tftproxy to {service_user}" in done.stdout
    assert f"created {root}/host-config" in done.stdout
    assert f"kept {root}/boot as it is" in done.stdout
    after = {p: (p.stat().st_uid, p.stat().st_mode) for p in before}
    assert after == before  # nothing the installer made changed hands or modes
    uid = pwd.getpwnam(service_user).pw_uid
    for p in (root / ".tftproxy").rglob("*"):
        assert p.lstat().st_uid == uid, p
    assert (root / "host-config").stat().st_uid == uid
    # Now the service user publishes into the installer's boot/ directory.
    data = os.urandom(10_000)
    nginx.put("os/vmlinuz", data)
    done = tftproxy("fetch", "--root", str(root), "boot/c", nginx.url("os/vmlinuz"),
                    user=service_user)
    assert done.returncode == 0, done.stderr
    assert (root / "boot" / "c-vmlinuz").read_bytes() == data
    assert (root / "boot").stat().st_uid == uid and root.stat().st_uid == 0


def test_a_state_directory_the_user_cannot_write_is_named_with_its_fix(
        foreman_layout: Path, service_user: str) -> None:
    root = foreman_layout
    BootStore(root)  # made by root, e.g. a `tftproxy fetch` run with sudo
    done = tftproxy("serve", "--root", str(root), "--listen", "127.0.0.1:1", user=service_user)
    assert done.returncode == 1
    # After serve's start-up line: the refusal, naming its fix.
    refusal = done.stderr.splitlines()[-1]
    assert refusal.startswith(f"tftproxy: user {service_user} cannot write {root}/.tftproxy "
                              f"(owned by root): run `sudo tftproxy setup --root {root} "
                              f"--user {service_user}` once")


def test_the_unit_passes_systemd_analyze_verify(tmp_path: Path, service_user: str) -> None:
    unit = tmp_path / "tftproxy.service"
    unit.write_text(render_unit(user=service_user, root=Path("/var/lib/tftpboot"),
                                settings_dir=None, config=Path("/etc/tftproxy/tftproxy.yml")))
    done = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0 and done.stdout + done.stderr == "", done.stderr
    # The check can fail: a unit whose command does not exist is refused.
    broken = tmp_path / "broken.service"
    broken.write_text(unit.read_text().replace("ExecStart=", "ExecStart=/nonexistent/x "))
    assert subprocess.run(["systemd-analyze", "verify", str(broken)], capture_output=True,
                          timeout=60).returncode != 0


def _unit_values(text: str, key: str) -> list[str]:
    return [line.split("=", 1)[1] for line in text.splitlines() if line.startswith(key + "=")]


def _caps(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key.startswith("Cap"):
            out[key] = int(value.strip(), 16)
        elif key == "Uid":
            out["Uid"] = int(value.split()[1])  # effective
    return out


def test_the_units_command_serves_port_69_as_the_user_with_one_capability(
        foreman_layout: Path, service_user: str, tmp_path: Path) -> None:
    root = foreman_layout
    data = os.urandom(123_457)
    publish(BootStore(root), "boot/kernel", data)
    assert tftproxy("setup", "--root", str(root), "--user", service_user).returncode == 0
    config = root.parent / "tftproxy.yml"
    config.write_text(f"tftproot: {root}\nlisten: 127.0.0.1:8000\n"
                      f"tftp_listen: ['0.0.0.0:69']\nlog_file: STDERR\n")
    unit = render_unit(user=service_user, root=root, settings_dir=None, config=config,
                       command=[str(launcher())])
    [exec_start] = _unit_values(unit, "ExecStart")
    assert _unit_values(unit, "AmbientCapabilities") == ["CAP_NET_BIND_SERVICE"]
    assert _unit_values(unit, "CapabilityBoundingSet") == ["CAP_NET_BIND_SERVICE"]
    assert _unit_values(unit, "User") == [service_user]
    assert f"ReadWritePaths={root}" in unit and "NoNewPrivileges=yes" in unit
    group = grp.getgrgid(pwd.getpwnam(service_user).pw_gid).gr_name
    ns = f"tftproxy-{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        # The unit's user, group, capability sets and no_new_privs, by setpriv.
        with open(tmp_path / "log", "wb") as err:
            proc = subprocess.Popen(
                ["ip", "netns", "exec", ns, "setpriv", f"--reuid={service_user}",
                 f"--regid={group}", "--init-groups", "--inh-caps=-all,+net_bind_service",
                 "--ambient-caps=-all,+net_bind_service",
                 "--bounding-set=-all,+net_bind_service", "--no-new-privs", "--",
                 *shlex.split(exec_start)], stdout=subprocess.DEVNULL, stderr=err)
        try:
            out = tmp_path / "got"
            for _ in range(100):
                got = subprocess.run(["ip", "netns", "exec", ns, "curl", "-sS", "--max-time",
                                      "2", "-o", str(out),
                                      "tftp://127.0.0.1:69/boot/kernel"], capture_output=True,
                                     timeout=30)
                if got.returncode == 0 or proc.poll() is not None:
                    break
                time.sleep(0.1)
            log = (tmp_path / "log").read_text()
            assert got.returncode == 0, log
            assert hashlib.sha256(out.read_bytes()).digest() == hashlib.sha256(data).digest()
            caps = _caps(proc.pid)
            assert caps["Uid"] == pwd.getpwnam(service_user).pw_uid
            assert caps["CapEff"] == caps["CapPrm"] == caps["CapAmb"] == CAP_NET_BIND_SERVICE
            assert caps["CapBnd"] == CAP_NET_BIND_SERVICE
            assert "TFTP on 0.0.0.0:69" in log
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
        assert proc.returncode == 0
    finally:
        subprocess.run(["ip", "netns", "delete", ns], check=False)
