"""`tftproxy serve` as an admin runs it: a real process, its settings file, systemd's
notification socket, its log."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from tests.helpers.nginx import free_port
from tests.tftp.clients import free_udp_port

_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class Serve:
    """One `tftproxy serve` with TFTP, its settings in ``config`` (a YAML file it rereads
    on SIGHUP) and a notification socket standing where systemd's would."""

    def __init__(self, base: Path, root: Path, settings: dict[str, Any] | None = None,
                 *, tftp: bool = True, args: tuple[str, ...] = (),
                 env: dict[str, str] | None = None) -> None:
        base.mkdir(parents=True, exist_ok=True)
        self.base = base
        self.api_port = free_port()
        self.tftp_port = free_udp_port() if tftp else None
        self.url = f"http://127.0.0.1:{self.api_port}"
        self.config = base / "tftproxy.yml"
        self.settings: dict[str, Any] = {
            "tftproot": str(root), "listen": f"127.0.0.1:{self.api_port}",
            "min_free_space": 0, "retries": 0, "stall_timeout": 5, "gc_interval": 0,
            # Each request's own upstream check (tests/jobs/test_fresh_for.py: the window).
            "fresh_for": 0,
            **({"tftp_listen": [f"127.0.0.1:{self.tftp_port}"]} if tftp else {}),
            **(settings or {}),
        }
        self.write_settings()
        self.log = base / "stderr.log"
        self.notify_path = base / "notify.sock"
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(str(self.notify_path))
        self.notes: list[str] = []
        with open(self.log, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tftproxy", "serve", "--config", str(self.config),
                 *args], stdout=subprocess.DEVNULL, stderr=err,
                env={**os.environ, "NOTIFY_SOCKET": str(self.notify_path), **(env or {})})
        if not self.wait_note("READY=1", 30):
            self.stop(signal.SIGKILL)
            raise RuntimeError(f"tftproxy serve did not get ready: {self.log_text()[-3000:]}")

    def write_settings(self, **changes: Any) -> None:
        self.settings.update(changes)
        self.config.write_text(yaml.safe_dump(self.settings))

    def wait_note(self, line: str, limit: float = 10.0) -> bool:
        """Whether systemd would have been told ``line`` within ``limit`` seconds."""
        deadline = time.monotonic() + limit
        while line not in self.notes:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            if hasattr(self, "proc") and self.proc.poll() is not None:
                left = min(left, 0.2)  # a dead process says nothing more
                deadline = min(deadline, time.monotonic() + 0.2)
            self.notify.settimeout(min(left, 1.0))
            try:
                self.notes += self.notify.recv(4096).decode().splitlines()
            except TimeoutError:
                continue
        return True

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_log(self, text: str, limit: float = 10.0) -> bool:
        deadline = time.monotonic() + limit
        while text not in self.log_text():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                return text in self.log_text()
            time.sleep(0.05)
        return True

    def get(self, path: str, timeout: float = 10.0) -> tuple[int, str]:
        try:
            with _DIRECT.open(self.url + path, timeout=timeout) as resp:
                return resp.status, resp.read().decode(errors="replace")
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def post(self, path: str, data: dict[str, str], timeout: float = 60.0) -> tuple[int, str]:
        body = "&".join(f"{k}={urllib.request.quote(v, safe='')}" for k, v in data.items())
        req = urllib.request.Request(self.url + path, data=body.encode(), method="POST")
        try:
            with _DIRECT.open(req, timeout=timeout) as resp:
                return resp.status, resp.read().decode(errors="replace")
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def send(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        with contextlib.suppress(OSError):
            self.notify.setblocking(False)
            while True:  # what was told before the end
                self.notes += self.notify.recv(4096).decode().splitlines()
        with contextlib.suppress(OSError):
            self.notify.close()
        return self.proc.returncode
