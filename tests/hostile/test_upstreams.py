"""Hostile upstreams (class 10 and the rest of the breadth): every fault is a one-line
error within a bounded time, and the last good version stays served the whole time."""

from __future__ import annotations

import asyncio
import gzip
import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers.upstream import Reply, Upstream, static
from tests.hostile.figures import record
from tests.hostile.rawupstream import RawUpstream, trickle

GOOD = b"the last good kernel " * 5000
HEADERS = b"HTTP/1.1 200 OK\r\nETag: \"new\"\r\nContent-Length: 100000\r\n\r\n"
FAST = {"stall_timeout": 1.5, "min_rate": 1000, "rate_window": 2.0, "fetch_timeout": 30,
        "max_file_size": 1024 * 1024}
TRIED: set[str] = set()


async def _publish_good(proxy, upstream: Upstream) -> None:
    upstream.routes["/vmlinuz"] = static(GOOD, etag='"good"')
    status, _, body = await proxy.fetch_boot_file("boot/h", upstream.url("/vmlinuz"))
    assert status == 200, body


async def _watch_served(root: Path, stop: asyncio.Event) -> list[bytes | None]:
    """What a reader of the name sees, every 50 ms, until ``stop``."""
    seen: list[bytes | None] = []
    while not stop.is_set():
        try:
            seen.append((root / "boot/h-vmlinuz").read_bytes())
        except FileNotFoundError:
            seen.append(None)
        await asyncio.sleep(0.05)
    return seen


async def _attack(api, upstream: Upstream, root: Path, url: str, message: str,
                  limit: float, **settings) -> float:
    proxy = await api(**{**FAST, **settings})
    await _publish_good(proxy, upstream)
    stop = asyncio.Event()
    watcher = asyncio.create_task(_watch_served(root, stop))
    started = time.monotonic()
    status, _, body = await asyncio.wait_for(proxy.fetch_boot_file("boot/h", url), limit + 10)
    took = time.monotonic() - started
    stop.set()
    seen = await watcher
    assert status == 502, body
    assert message in body and "internal error" not in body, body
    assert body.rstrip().endswith("previous version kept"), body
    assert took <= limit, f"took {took:.1f} s"
    assert (root / "boot/h-vmlinuz").read_bytes() == GOOD
    assert all(s in (GOOD, None) for s in seen)
    return took


@pytest.mark.parametrize("kind", ["hide", "keep"])
async def test_a_trickling_body_is_cut_off_by_min_rate(api, upstream: Upstream, root: Path,
                                                       kind: str) -> None:
    proxy = await api(**FAST, refresh_mode=kind)
    await _publish_good(proxy, upstream)
    upstream.routes["/vmlinuz"] = lambda seen: Reply(body=b"x" * 100_000,
                                                      headers={"ETag": '"new"'},
                                                      chunk=40, chunk_delay=0.1)
    stop = asyncio.Event()
    watcher = asyncio.create_task(_watch_served(root, stop))
    started = time.monotonic()
    status, _, body = await asyncio.wait_for(
        proxy.fetch_boot_file("boot/h", upstream.url("/vmlinuz")), 20)
    took = time.monotonic() - started
    stop.set()
    seen = await watcher
    assert status == 502, body
    assert "too slow: " in body, body
    assert "less than min_rate (1000 bytes/s over rate_window 2 s)" in body, body
    assert (root / "boot/h-vmlinuz").read_bytes() == GOOD
    assert all(s in (GOOD, None) for s in seen)
    hidden = seen.count(None) * 0.05
    assert took < 5 and hidden < 5, (took, hidden)
    if kind == "keep":
        assert hidden == 0
    record(f"trickling upstream (refresh_mode {kind})", rate="400 B/s",
           min_rate="1000 B/s over 2 s", failed_after_s=round(took, 1),
           name_hidden_s=round(hidden, 1))


CASES: dict[str, tuple[Callable[[RawUpstream], Callable[[socket.socket], None]], str, float]] = {
    "headers trickled": (lambda u: trickle(HEADERS, 0.2, u.stopped),
                         "too slow: no response headers within 2 s", 6),
    "1xx forever": (lambda u: trickle(b"HTTP/1.1 100 Continue\r\n\r\n" * 10_000, 0.001,
                                      u.stopped), "", 6),
    "garbage status line": (lambda u: lambda c: c.sendall(b"HTTQ/9 two hundred\r\n\r\n"),
                            "", 4),
    "header line of 100 KB": (lambda u: lambda c: c.sendall(
        b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n"), "", 4),
    "10000 headers": (lambda u: lambda c: c.sendall(
        b"HTTP/1.1 200 OK\r\n" + b"X-A: b\r\n" * 10_000 + b"\r\n"), "", 4),
    "accepts, says nothing": (lambda u: lambda c: time.sleep(8), "", 6),
    "lying Content-Length": (lambda u: lambda c: c.sendall(
        b"HTTP/1.1 200 OK\r\nETag: \"n\"\r\nContent-Length: 50000\r\n\r\n" + b"y" * 100),
                             "truncated", 4),
    "negative Content-Length": (lambda u: lambda c: c.sendall(
        b"HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\nhello"), "", 4),
    "bad chunked framing": (lambda u: lambda c: c.sendall(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"),
                            "", 4),
    "redirect to file://": (lambda u: lambda c: c.sendall(
        b"HTTP/1.1 302 Found\r\nLocation: file:///etc/passwd\r\nContent-Length: 0\r\n\r\n"),
                            "", 4),
    "reset at once": (lambda u: lambda c: (c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                                        b"\x01\x00\x00\x00\x00\x00\x00\x00")),
                      "", 4),
}


@pytest.mark.parametrize("case", sorted(CASES))
async def test_a_hostile_upstream_is_a_clear_error(api, upstream: Upstream, root: Path,
                                                   case: str) -> None:
    make, message, limit = CASES[case]
    raw = RawUpstream(lambda c: None)
    raw.script = make(raw)
    try:
        await _attack(api, upstream, root, raw.url("/vmlinuz"), message, limit)
    finally:
        raw.close()
    TRIED.add(case)
    record("hostile upstreams (raw)", tried=len(TRIED), internal_errors=0,
           last_good_kept=len(TRIED))


@pytest.mark.parametrize(("name", "reply", "message"), [
    ("endless chunked body", lambda s: Reply(body=b"z" * (3 * 1024 * 1024), length=-1,
                                             headers={"ETag": '"e"'}),
     "file grew past max_file_size (1048576 bytes)"),
    ("gzip bomb", lambda s: Reply(body=gzip.compress(b"\0" * (8 * 1024 * 1024)),
                                  headers={"ETag": '"g"', "Content-Encoding": "gzip"}), None),
    ("redirect loop", lambda s: Reply(302, "Found", headers={"Location": "/vmlinuz"}),
     "more than 10 redirects"),
])
async def test_hostile_answers_from_the_same_url(api, upstream: Upstream, root: Path, name: str,
                                                 reply, message: str | None) -> None:
    proxy = await api(**FAST)
    await _publish_good(proxy, upstream)
    upstream.routes["/vmlinuz"] = reply
    status, _, body = await asyncio.wait_for(
        proxy.fetch_boot_file("boot/h", upstream.url("/vmlinuz")), 20)
    if message is None:
        # Stored as sent, never decoded: 8 MiB of zeros stay an 8 KiB gzip file.
        assert status == 200, body
        assert (root / "boot/h-vmlinuz").stat().st_size < 64 * 1024
        return
    assert status == 502 and message in body, body
    assert (root / "boot/h-vmlinuz").read_bytes() == GOOD
