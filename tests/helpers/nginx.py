"""nginx from Debian on a loopback port: real ETag, Last-Modified and 304 behaviour."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

# Straight to loopback, whatever proxy the environment names.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_listening(proc: subprocess.Popen[bytes], port: int, what: str) -> None:
    """Return once ``proc`` accepts connections on the loopback ``port`` (10 s at most)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            if proc.poll() is not None:
                err = proc.stderr.read().decode() if proc.stderr else ""
                raise RuntimeError(f"{what} failed: {err}") from None
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not start listening within 10 s")


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """Terminate a server we started, killing it if it does not exit within 5 s."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def find_nginx() -> str:
    for cand in (shutil.which("nginx"), "/usr/sbin/nginx"):
        if cand and os.access(cand, os.X_OK):
            return cand
    raise RuntimeError("nginx not found: run scripts/system-deps (Debian package nginx-light)")


class Nginx:
    """A private nginx serving ``www``; ``extra`` is added inside the server block."""

    def __init__(self, base: Path, extra: str = "", http_extra: str = "",
                 tls: tuple[Path, Path] | None = None) -> None:
        self.base = base
        self.www = base / "www"
        self.www.mkdir(parents=True, exist_ok=True)
        (base / "tmp").mkdir(exist_ok=True)
        self.port = free_port()
        self.access_log = base / "access.log"
        conf = base / "nginx.conf"
        listen_tls = ""
        if tls is not None:
            listen_tls = f" ssl; ssl_certificate {tls[0]}; ssl_certificate_key {tls[1]}"
        conf.write_text(f"""
worker_processes 1;
daemon off;
master_process off;
pid {base}/nginx.pid;
error_log {base}/error.log warn;
events {{ worker_connections 512; }}
http {{
  log_format t '$request_method $uri $status $body_bytes_sent';
  access_log {self.access_log} t;
  client_body_temp_path {base}/tmp; proxy_temp_path {base}/tmp;
  fastcgi_temp_path {base}/tmp; uwsgi_temp_path {base}/tmp; scgi_temp_path {base}/tmp;
  sendfile on;
  types {{ application/octet-stream bin; }}
  default_type application/octet-stream;
  {http_extra}
  server {{
    listen 127.0.0.1:{self.port}{listen_tls};
    root {self.www};
    {extra}
  }}
}}
""")
        self.proc = subprocess.Popen([find_nginx(), "-c", str(conf), "-p", str(base)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wait_listening(self.proc, self.port, "nginx")

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path.lstrip('/')}"

    def put(self, rel: str, data: bytes, mtime: float | None = None) -> Path:
        """Write a file atomically (as a mirror sync would) with an optional mtime."""
        path = self.www / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(data)
        if mtime is not None:
            os.utime(tmp, (mtime, mtime))
        os.replace(tmp, path)
        return path

    def _entries(self, uri: str) -> list[tuple[str, int, int]]:
        out = []
        if not self.access_log.exists():
            return out
        for line in self.access_log.read_text().splitlines():
            method, u, status, size = line.split()
            if u == uri:
                out.append((method, int(status), int(size)))
        return out

    def log_lines(self, uri: str) -> list[tuple[str, int, int]]:
        """(method, status, body bytes) for every logged request of ``uri``, once every
        request made before this call is in the log.

        nginx logs a request after its response is out, so a test could read too early. Its
        single worker handles one event at a time: once a request made now is logged, every
        earlier one is too.
        """
        before = len(self._entries("/__settle__"))
        with contextlib.suppress(urllib.error.URLError, OSError):
            _DIRECT.open(self.url("__settle__"), timeout=5).close()
        deadline = time.monotonic() + 5
        while len(self._entries("/__settle__")) <= before and time.monotonic() < deadline:
            time.sleep(0.01)
        return self._entries(uri)

    def stop(self) -> None:
        stop_process(self.proc)
