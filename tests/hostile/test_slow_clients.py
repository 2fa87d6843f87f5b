"""Slow and many HTTP clients against ``tftproxy serve`` at the common descriptor limit of
1024 (class 6): half-sent headers, trickled bodies, idle keep-alives, one greedy host."""

from __future__ import annotations

import contextlib
import errno
import resource
import select
import socket
import time
import urllib.request
from pathlib import Path

import pytest

from tests.hostile.figures import process_usage, record
from tests.hostile.rawhttp import statuses

HEADER_TIMEOUT = 3.0
ENV = {"TFTPROXY_HTTP_HEADER_TIMEOUT": str(HEADER_TIMEOUT), "TFTPROXY_HTTP_KEEPALIVE_TIMEOUT": "2"}
PARTIAL = b"GET /features HTTP/1.1\r\nHost: tftproxy.test\r\nX-Slow: "


@pytest.fixture(autouse=True)
def _enough_descriptors() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 4096:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(4096, hard), hard))


def _get(url: str, timeout: float = 5.0) -> int:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        r.read()
        return r.status


def _open(port: int, source: str) -> socket.socket | None:
    s = socket.socket()
    s.bind((source, 0))
    s.settimeout(2)
    try:
        s.connect(("127.0.0.1", port))
        s.sendall(PARTIAL)
    except OSError:
        s.close()
        return None
    s.setblocking(False)
    return s


def _closed_by_server(s: socket.socket) -> bool:
    poller = select.poll()  # select() cannot watch descriptors past 1024
    poller.register(s, select.POLLIN)
    if not poller.poll(0):
        return False
    try:
        return s.recv(4096) == b""
    except OSError as exc:
        return exc.errno in (errno.ECONNRESET, errno.EPIPE)


def test_half_sent_headers_at_the_descriptor_limit(serve, root: Path) -> None:
    served = serve(root, env=ENV, nofile=1024)
    pid = served.proc.pid
    # prlimit exec()s tftproxy in place: the pid is the service's.
    before = process_usage(pid)
    attackers: list[socket.socket] = []
    worst = 0.0
    try:
        for wave in range(2):
            for i in range(1100):
                s = _open(served.port, f"127.0.3.{1 + i % 40}")
                if s is not None:
                    attackers.append(s)
            peak = process_usage(pid)
            started = time.monotonic()
            assert _get(f"{served.url}/features") == 200, f"wave {wave}: the API is unreachable"
            worst = max(worst, time.monotonic() - started)
        time.sleep(HEADER_TIMEOUT + 1.5)
        still_open = [s for s in attackers if not _closed_by_server(s)]
        assert still_open == [], f"{len(still_open)} stalled connections still open"
        after = process_usage(pid)
    finally:
        for s in attackers:
            s.close()
    assert served.proc.poll() is None
    assert "http_max_connections 512 lowered to 312: the descriptor limit is 1024" \
        in served.log_text()
    assert peak["fds"] < 1024
    assert after["fds"] <= before["fds"] + 5, (before, after)
    record("HTTP half-sent headers at NOFILE 1024", connections=2 * 1100,
           legit_worst_s=round(worst, 2), stalled_left_open=0,
           fds_before=before["fds"], fds_peak=peak["fds"], fds_after=after["fds"],
           rss_kib_before=before["rss_kib"], rss_kib_after=after["rss_kib"])


def test_a_trickled_body_is_408_and_idle_keepalives_close(serve, root: Path) -> None:
    served = serve(root, env=ENV)
    with socket.create_connection(("127.0.0.1", served.port), 10) as s:
        s.sendall(b"POST /tftp/fetch_boot_file HTTP/1.1\r\nHost: x\r\n"
                  b"Content-Type: application/x-www-form-urlencoded\r\n"
                  b"Content-Length: 1000\r\n\r\nprefix=boot")
        started = time.monotonic()
        reply = s.recv(4096)
        took = time.monotonic() - started
    assert statuses(reply) == [408], reply
    assert b"did not arrive within 3 s" in reply
    assert HEADER_TIMEOUT - 0.5 < took < HEADER_TIMEOUT + 2
    with socket.create_connection(("127.0.0.1", served.port), 10) as s:
        s.sendall(b"GET /features HTTP/1.1\r\nHost: x\r\n\r\n")
        assert statuses(s.recv(4096)) == [200]
        started = time.monotonic()
        s.settimeout(10)
        assert s.recv(4096) == b""  # closed by the server, idle
        assert time.monotonic() - started < 2 + 2


def test_one_host_cannot_take_every_connection(serve, root: Path) -> None:
    served = serve(root, env=ENV)
    greedy = [s for s in (_open(served.port, "127.0.4.1") for _ in range(100)) if s]
    try:
        time.sleep(0.5)
        closed = sum(_closed_by_server(s) for s in greedy)
        assert closed >= 100 - 64, closed
        assert _get(f"{served.url}/features") == 200
    finally:
        for s in greedy:
            with contextlib.suppress(OSError):
                s.close()
