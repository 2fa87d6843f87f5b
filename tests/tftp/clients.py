"""Real TFTP clients and peer servers driven by the tests, plus a raw packet-level client."""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tftproxy.store import BootStore, Version
from tftproxy.tftp.packets import Packet, build_ack, build_error, build_request, parse_packet
from tftproxy.tftp.server import ServerConfig, TftpServer

CLIENT_TIMEOUT = 30  # bound on any one client run; a hang fails the test instead of blocking it


def need(tool: str) -> str:
    path = shutil.which(tool) or (f"/usr/sbin/{tool}" if os.path.exists(f"/usr/sbin/{tool}")
                                  else None)
    if path is None:
        pytest.fail(f"{tool} is not installed: run scripts/system-deps")
    return path


def publish(store: BootStore, name: str, data: bytes) -> Version:
    """Publish ``data`` under ``name`` through the store's writer API, as the fetcher does."""
    sha = hashlib.sha256(data).hexdigest()
    with store.lock(name):
        staging = store.objects.new_staging(name)
        staging.write(data)
        store.objects.ingest(staging, sha)
        version = Version(sha256=sha, size=len(data), source=f"test:{name}",
                          final_url=f"test:{name}", fetched_at=time.time())
        store.transactions.commit(name, version)
    return version


def wait_for(predicate: Callable[[], bool], limit: float = 10.0) -> bool:
    """Poll until ``predicate`` holds (True) or ``limit`` seconds pass (False)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


# ---------------------------------------------------------------- real clients


def curl_get(port: int, name: str, out: Path, *, host: str = "127.0.0.1",
             blksize: int | None = None, options: bool = True,
             source: str | None = None) -> subprocess.CompletedProcess[str]:
    """curl's TFTP client; ``source`` is the local address it sends from (one machine)."""
    url_host = f"[{host}]" if ":" in host else host
    cmd = [need("curl"), "-sS", "-o", str(out), f"tftp://{url_host}:{port}/{name}"]
    if source is not None:
        cmd += ["--interface", source]
    if blksize is not None:
        cmd += ["--tftp-blksize", str(blksize)]
    if not options:
        cmd.append("--tftp-no-options")
    return subprocess.run(cmd, capture_output=True, text=True, timeout=CLIENT_TIMEOUT)


def tftp_hpa_get(port: int, name: str, out: Path, *, mode: str = "binary",
                 host: str = "127.0.0.1") -> subprocess.CompletedProcess[str]:
    """tftp-hpa's client; it exits 0 even on an ERROR, so the code is set from its output."""
    cmd = [need("tftp"), host, str(port), "-m", mode, "-c", "get", name, str(out)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=CLIENT_TIMEOUT)
    if result.returncode == 0 and ("Error code" in result.stdout or "timed out" in result.stdout):
        result.returncode = 1
    return result


def atftp_get(port: int, name: str, out: Path, *, options: dict[str, int] | None = None,
              host: str = "127.0.0.1") -> subprocess.CompletedProcess[str]:
    cmd = [need("atftp")]
    for key, value in (options or {}).items():
        cmd += ["--option", f"{key} {value}"]
    cmd += ["-g", "-r", name, "-l", str(out), host, str(port)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=CLIENT_TIMEOUT)


# ---------------------------------------------------------------- raw client


class RawClient:
    """A TFTP client at packet level: the tests decide every datagram."""

    def __init__(self, server: tuple[str, int], family: int = socket.AF_INET,
                 bind: str = "127.0.0.1") -> None:
        self.server = server
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.bind((bind, 0))
        self.peer: tuple[str, int] | None = None

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send_raw(self, data: bytes, to: tuple[str, int] | None = None) -> None:
        self.sock.sendto(data, to or self.server)

    def rrq(self, name: str, mode: str = "octet", options: dict[str, str] | None = None) -> bytes:
        raw = build_request(name, mode, options)
        self.send_raw(raw)
        return raw

    def recv(self, timeout: float = 5.0) -> tuple[Packet, tuple[str, int]]:
        """The next datagram (parsed) and its source; the first answer fixes the peer."""
        self.sock.settimeout(timeout)
        data, addr = self.sock.recvfrom(65536)
        if self.peer is None:
            self.peer = addr
        return parse_packet(data), addr

    def recv_raw(self, timeout: float = 5.0) -> tuple[bytes, tuple[str, int]]:
        self.sock.settimeout(timeout)
        data, addr = self.sock.recvfrom(65536)
        return data, addr

    def silent(self, seconds: float) -> bool:
        """True if nothing arrives for ``seconds``."""
        self.sock.settimeout(seconds)
        try:
            self.sock.recvfrom(65536)
        except TimeoutError:
            return True
        return False

    def ack(self, block: int) -> None:
        assert self.peer is not None
        self.send_raw(build_ack(block), self.peer)

    def error(self, code: int, message: str = "") -> None:
        assert self.peer is not None
        self.send_raw(build_error(code, message), self.peer)


# -------------------------------------------------------------------- servers


@contextmanager
def running_server(store: BootStore, config: ServerConfig | None = None,
                   addresses: tuple[str, ...] = ("127.0.0.1:0",)) -> Iterator[TftpServer]:
    """Our server, one in-process worker on a thread."""
    server = TftpServer.bind(store.serving, addresses, config)
    thread = threading.Thread(target=server.serve_forever, name="tftp-test", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.stop()
        thread.join(10)
        server.close()


def free_udp_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_ready(port: int, host: str = "127.0.0.1", limit: float = 10.0) -> bool:
    """True once a TFTP server on ``port`` answers a request (for a name that does not exist)."""
    deadline = time.monotonic() + limit
    with RawClient((host, port)) as client:
        while time.monotonic() < deadline:
            client.rrq("tftproxy-readiness-probe")
            try:
                client.recv(0.2)
            except TimeoutError:
                continue
            return True
    return False


@contextmanager
def in_tftpd(root: Path) -> Iterator[int]:
    """tftp-hpa's in.tftpd on a loopback port, chrooted into ``root`` (-s)."""
    binary = need("in.tftpd")
    port = free_udp_port()
    proc = subprocess.Popen([binary, "-L", "-s", "-u", "root", "-a", f"127.0.0.1:{port}",
                             str(root)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        if not wait_ready(port):
            pytest.fail("in.tftpd did not answer")
        yield port
    finally:
        proc.terminate()
        proc.wait(10)
