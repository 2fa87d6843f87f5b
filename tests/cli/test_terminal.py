"""What a person sees in a terminal, and what a script reads from a pipe.

A real ``tftproxy fetch`` against nginx (its ``limit_rate`` makes the download last a few
seconds) runs on a pseudo-terminal of a chosen width: the bar shows rate and time left, fits
the width, and leaves the line to the result; Ctrl-C typed on the terminal ends it on a line
of its own. The same commands on pipes print plain lines only. ``tftproxy status`` shows the
downloads of a running ``serve``, or says why it cannot.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path

from tests.cli.test_cli import lines, tftproxy
from tests.helpers.nginx import Nginx
from tests.helpers.service import Serve
from tests.helpers.upstream import Reply, Upstream
from tests.tftp.clients import wait_for

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
MiB = 1024 * 1024


class Terminal:
    """A command on a pseudo-terminal ``columns`` wide, as its controlling terminal."""

    def __init__(self, args: list[str], columns: int, env: dict[str, str]) -> None:
        self.master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tftproxy", *args], stdin=slave, stdout=slave, stderr=slave,
            env=env, start_new_session=True,
            preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0))
        os.close(slave)
        self.output = b""

    def read_until(self, predicate: object, limit: float) -> bool:
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            if callable(predicate) and predicate(self.text()):
                return True
            ready, _, _ = select.select([self.master], [], [], 0.1)
            if ready:
                try:
                    chunk = os.read(self.master, 65536)
                except OSError:  # EIO: the other side is closed, the command has ended
                    return callable(predicate) and bool(predicate(self.text()))
                self.output += chunk
        return False

    def finish(self, limit: float = 60) -> int:
        self.read_until(lambda _: False, 0) if self.proc.poll() is None else None
        deadline = time.monotonic() + limit
        while self.proc.poll() is None and time.monotonic() < deadline:
            self.read_until(lambda _: self.proc.poll() is not None, 0.5)
        self.read_until(lambda _: False, 0.3)  # what is left in the buffer
        os.close(self.master)
        return self.proc.wait(5)

    def text(self) -> str:
        return self.output.decode("utf-8", "replace")

    def screens(self) -> list[str]:
        """Each state of the line: what was drawn between carriage returns and newlines."""
        return [ANSI.sub("", s) for s in re.split(r"[\r\n]+", self.text()) if s.strip()]


def _env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "TFTPROXY_MIN_FREE_SPACE": "0", "TFTPROXY_LISTEN": "127.0.0.1:9",
           **extra}
    env.pop("COLUMNS", None)
    env.pop("LINES", None)
    return env


def test_the_progress_bar_has_rate_and_eta_fits_the_width_and_leaves_the_result(
        tmp_path: Path, root: Path) -> None:
    nginx = Nginx(tmp_path / "slow", extra="limit_rate 3m;")
    try:
        data = os.urandom(8 * MiB)
        nginx.put("os/initrd.img", data)
        term = Terminal(["fetch", "--root", str(root), "boot/tty", nginx.url("os/initrd.img")],
                        columns=72, env=_env())
        assert term.finish() == 0, term.text()
    finally:
        nginx.stop()
    screens = term.screens()
    bars = [s for s in screens if "MiB/s" in s]
    assert len(bars) >= 3, screens  # redrawn as the bytes arrive
    # Name, percentage, bar, done/total, elapsed<left, rate: tqdm's line, in binary units.
    assert all(re.fullmatch(r"boot/tty-initrd\.img: +\d+%\|.*\| [\d.]+[kM]?/8\.00M "
                            r"\[\d\d:\d\d<\d\d:\d\d, +[\d.]+MiB/s\]", b) for b in bars), bars
    assert all(len(s) <= 72 for s in bars), [s for s in bars if len(s) > 72]
    sha = hashlib.sha256(data).hexdigest()
    assert screens[-1] == f"published: boot/tty-initrd.img 8.0 MiB (8388608 bytes) sha256 {sha}"
    # The bar's line was cleared before the result was written over it.
    tail = term.text()[term.text().rindex("MiB/s"):]
    assert re.search(r"\r(\x1b\[[0-9;]*[KA])*\r?\s*\r?(\x1b\[[0-9;]*[KA])*published:", tail) \
        or "\x1b[K" in tail or "\x1b[A" in tail, repr(tail[:300])
    # On a narrow terminal the bar shrinks instead of wrapping onto a second line.
    nginx = Nginx(tmp_path / "slow2", extra="limit_rate 3m;")
    try:
        nginx.put("os/initrd.img", os.urandom(4 * MiB))
        term = Terminal(["fetch", "--root", str(root), "boot/narrow",
                         nginx.url("os/initrd.img")], columns=40, env=_env())
        assert term.finish() == 0, term.text()
    finally:
        nginx.stop()
    narrow = [s for s in term.screens() if "MiB/s" in s]
    assert narrow and all(len(s) <= 40 for s in narrow), term.screens()


def test_ctrl_c_ends_the_line_and_publishes_nothing(tmp_path: Path, root: Path) -> None:
    nginx = Nginx(tmp_path / "slow", extra="limit_rate 500k;")
    try:
        nginx.put("os/big.img", os.urandom(20 * MiB))
        term = Terminal(["fetch", "--root", str(root), "boot/int", nginx.url("os/big.img")],
                        columns=80, env=_env())
        assert term.read_until(lambda t: re.search(r"\d[kM]?iB/s", t), 30), term.text()
        os.write(term.master, b"\x03")  # Ctrl-C, typed: the terminal sends SIGINT
        rc = term.finish()
    finally:
        nginx.stop()
    text = term.text()
    assert rc == 130, text
    assert "Traceback" not in text and "KeyboardInterrupt" not in text
    last = term.screens()[-1]
    assert last == ("interrupted: boot/int-big.img: nothing new published (the previous "
                    "version, if any, stays)"), term.screens()
    assert text.endswith("stays)\r\n"), repr(text[-80:])  # the prompt gets a line of its own
    assert not (root / "boot/int-big.img").exists()


def test_on_pipes_every_command_prints_plain_lines(nginx: Nginx, root: Path) -> None:
    data = os.urandom(3 * MiB)
    nginx.put("os/vmlinuz", data)
    done = tftproxy("fetch", "--root", str(root), "boot/pipe", nginx.url("os/vmlinuz"))
    assert done.returncode == 0 and done.stderr == ""
    assert "\r" not in done.stdout and "\x1b" not in done.stdout
    nginx.put("os/initrd.img", os.urandom(1000))
    assert tftproxy("fetch", "--root", str(root), "boot/pipe",
                    nginx.url("os/initrd.img")).returncode == 0
    (root / "boot/plain-vmlinuz").write_bytes(b"x" * 2048)
    done = tftproxy("status", "--root", str(root))
    assert done.returncode == 0 and done.stderr == ""
    out = done.stdout
    assert "None" not in out and "\x1b" not in out and "\r" not in out
    rows = out.splitlines()
    header = rows[0]
    assert header.split() == ["NAME", "STATE", "SIZE", "VERIFIED", "SET", "GEN", "FETCHED",
                              "CHECKED"]
    table = {r.split()[0]: r for r in rows[1:4]}
    assert lines(table["boot/pipe-vmlinuz"])[0].split()[:6] == [
        "boot/pipe-vmlinuz", "published", "3.0", "MiB", "no", "manifest"]
    assert lines(table["boot/plain-vmlinuz"])[0].split()[:4] == [
        "boot/plain-vmlinuz", "unmanaged", "2.0", "KiB"]
    # Columns are aligned: every cell of a column starts where its heading does.
    for column in ("STATE", "VERIFIED", "FETCHED"):
        at = header.index(column)
        assert all(r[at - 2:at] == "  " and r[at] != " " for r in table.values()), column
    sets = rows.index(next(r for r in rows if r.startswith("SET ")))
    assert rows[sets].split() == ["SET", "CURRENT", "KEPT", "PINNED", "CHECKED", "OUTCOME",
                                  "NEXT", "CHECK"]
    # Generation 2 is current after kernel then initrd; 1 is kept, and listed only as kept.
    assert rows[sets + 1].split()[:4] == ["boot/pipe", "2", "1", "-"]
    assert rows[-1] == ("downloads in progress: unknown: no tftproxy serve answered at "
                        "http://127.0.0.1:9 (Connection refused)")
    gc = tftproxy("gc", "--root", str(root), "--dry-run", "--grace", "0")
    assert re.fullmatch(r"(would drop generation \S+\n)*would free [\d.]+ (B|KiB|MiB) in \d "
                        r"object\(s\), would drop \d old generation\(s\); kept \d object\(s\), "
                        r"[\d.]+ (KiB|MiB); disk [\d.]+ GiB free of [\d.]+ GiB\n", gc.stdout), \
        gc.stdout
    done = tftproxy("fetch", "--root", str(root), "boot/nfs", "nfs://filer/export/vmlinuz")
    assert (done.returncode, done.stdout) == (
        0, "ignored: boot/nfs-vmlinuz <- nfs://filer/export/vmlinuz: nfs sources are not "
           "fetched\n")


def test_status_shows_the_running_serves_downloads(tmp_path: Path, root: Path) -> None:
    up = Upstream()
    body = os.urandom(6 * MiB)
    release = threading.Event()
    up.routes["/os/initrd.img"] = lambda seen: Reply(
        body=body, chunk=64 * 1024, chunk_delay=0.01, pause_at=3 * MiB, pause=release)
    serve = Serve(tmp_path / "svc", root, {"fetch_wait": 0.2, "stall_timeout": 120,
                                           "drain_timeout": 1}, tftp=False)
    try:
        code, _ = serve.post("/tftp/fetch_boot_file",
                             {"prefix": "boot/live", "path": up.url("/os/initrd.img")})
        assert code == 202

        def running() -> bool:
            _, text = serve.get("/tftp/status")
            return any(d["progress"]["bytes"] >= 2 * MiB for d in json.loads(text)["downloads"])

        assert wait_for(running, 60)
        env = {"TFTPROXY_LISTEN": serve.settings["listen"]}
        done = subprocess.run([sys.executable, "-m", "tftproxy", "status", "--root", str(root)],
                              capture_output=True, text=True, timeout=60,
                              env={**os.environ, **env})
        out = done.stdout.splitlines()
        at = out.index(f"downloads in progress (tftproxy serve at {serve.url}):")
        assert out[at + 1].split()[:2] == ["NAME", "DONE"]
        row = out[at + 2].split()
        assert row[0] == "boot/live-initrd.img" and row[3:5] == ["6.0", "MiB"], row
        assert row[-1] == up.url("/os/initrd.img") and "/s" in out[at + 2]
        data = json.loads(subprocess.run(
            [sys.executable, "-m", "tftproxy", "status", "--root", str(root), "--json"],
            capture_output=True, text=True, timeout=60, env={**os.environ, **env}).stdout)
        (job,) = data["downloads"]
        assert job["name"] == "boot/live-initrd.img" and job["progress"]["total"] == len(body)
        assert set(job["progress"]) == {"bytes", "total", "rate", "eta", "percent"}
    finally:
        release.set()
        serve.stop()
        up.close()


def test_global_flags_help_and_broken_pipes(root: Path, tmp_path: Path) -> None:
    alone = tftproxy()
    assert alone.returncode == 0 and alone.stdout.startswith("usage: tftproxy")
    assert "status" in alone.stdout and alone.stderr == ""
    before = tftproxy("--root", str(root), "-v", "status", "--json")
    after = tftproxy("status", "--json", "--root", str(root), "-v")
    assert before.returncode == after.returncode == 0, (before.stderr, after.stderr)
    assert json.loads(before.stdout)["root"] == json.loads(after.stdout)["root"] == str(root)
    config = tmp_path / "t.yml"
    config.write_text("fetch_wait: 7\n")
    for args in (["--config", str(config), "config", "--json"],
                 ["config", "--json", "--config", str(config)]):
        done = tftproxy(*args)
        assert json.loads(done.stdout)["fetch_wait"]["value"] == 7, args
    assert tftproxy("status", "--log-level", "LOUD").returncode == 2
    # A reader that stops early: no "Broken pipe" and no traceback.
    shell = subprocess.run(f"{sys.executable} -m tftproxy config --json | head -n 2",
                           shell=True, capture_output=True, text=True, timeout=60)
    assert shell.stdout == '{\n  "tftproot": {\n' and shell.stderr == ""
    # A reader already gone before the first write: the pipe breaks at once, every time.
    for args in (["config", "--json"], ["status", "--root", str(root)], ["--help"]):
        r, w = os.pipe()
        os.close(r)
        done = subprocess.run([sys.executable, "-m", "tftproxy", *args], stdout=w,
                              stderr=subprocess.PIPE, text=True, timeout=60,
                              env={**os.environ, "TFTPROXY_LISTEN": "127.0.0.1:9"})
        os.close(w)
        assert done.stderr == "", (args, done.stderr)
        assert done.returncode in (0, 141), args  # argparse's --help exits on its own
