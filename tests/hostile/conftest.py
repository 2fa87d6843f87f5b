"""The hostile-input suite: attacks from outside, each bounded in count and time.

Helpers here make what the attacks need: small real tmpfs mounts (a disk that fills), a
``tftproxy serve`` process with its own limits, and the figures printed at the end.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.hostile import figures


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if figures.FIGURES:
        terminalreporter.section("hostile-input figures")
        for line in figures.lines():
            terminalreporter.write_line(line)
        figures.write_out()


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A real tmpfs of ``size`` mounted at ``path`` (the tests run as root)."""
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs",
                           str(path)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs (the suite runs as root): {done.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(directory: Path, leave: int) -> Path:
    """Fill the file system of ``directory`` until about ``leave`` bytes are free."""
    filler = directory / "filler"
    st = os.statvfs(directory)
    free = st.f_bavail * st.f_frsize
    with open(filler, "wb") as f:
        chunk = b"\0" * (1 << 20)
        remaining = max(0, free - leave)
        with contextlib.suppress(OSError):
            while remaining > 0:
                n = min(len(chunk), remaining)
                f.write(chunk[:n])
                remaining -= n
            f.flush()
    return filler


def free_bytes(directory: Path) -> int:
    st = os.statvfs(directory)
    return st.f_bavail * st.f_frsize


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Served:
    """A ``tftproxy serve`` process: its API URL, its log, and the process."""

    proc: subprocess.Popen[bytes]
    url: str
    log: Path
    port: int

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def start_serve(root: Path, log: Path, *args: str, env: dict[str, str] | None = None,
                nofile: int | None = None, wrapper: list[str] | None = None,
                wait: float = 20.0) -> Served:
    """``tftproxy serve`` on a free loopback port; returns once it answers /features (or
    fails the test with its log if it exits or does not answer). ``nofile`` is its descriptor
    limit; ``wrapper`` a command it runs under (setpriv, to run as another user)."""
    port = free_tcp_port()
    cmd = [sys.executable, "-m", "tftproxy", "serve", "--root", str(root),
           "--listen", f"127.0.0.1:{port}", *args]
    if nofile is not None:
        cmd = ["prlimit", f"--nofile={nofile}:{nofile}", "--", *cmd]
    if wrapper is not None:
        cmd = [*wrapper, *cmd]
    full_env = {**os.environ, "TFTPROXY_MIN_FREE_SPACE": "0", "TFTPROXY_GC_INTERVAL": "0",
                **(env or {})}
    out = open(log, "wb")  # noqa: SIM115 - the process writes it until stopped
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=full_env)
    out.close()
    served = Served(proc, f"http://127.0.0.1:{port}", log, port)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return served
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5) as s:
            s.sendall(b"GET /features HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            if s.recv(12).startswith(b"HTTP/1.1 200"):
                return served
        time.sleep(0.1)
    served.stop()
    pytest.fail(f"tftproxy serve did not answer within {wait} s:\n{served.log_text()}")


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Any]:
    """``serve(root, *args, **kw)`` starts ``tftproxy serve``; every one is stopped at the end."""
    started: list[Served] = []

    def start(root: Path, *args: str, **kwargs: Any) -> Served:
        served = start_serve(root, tmp_path / f"serve-{len(started)}.log", *args, **kwargs)
        started.append(served)
        return served

    yield start
    for served in started:
        served.stop()
