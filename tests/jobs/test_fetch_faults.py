"""Faults at a chosen byte, from an in-process upstream: nothing half-done is ever published."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import os
import socket
import threading
from pathlib import Path

import pytest

from tests.helpers.upstream import Reply, Seen, Upstream, static

V1 = b"version one " * 20_000
V2 = b"version two!! " * 20_000


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def publish_v1(proxy, upstream: Upstream, path: str = "/vmlinuz") -> None:
    upstream.routes[path] = static(V1, etag='"v1"', last_modified="Mon, 01 Jan 2024 00:00:00 GMT")
    status, _, body = await proxy.fetch_boot_file("boot/a", upstream.url(path))
    assert status == 200, body
    upstream.seen.clear()


def assert_still_v1(root: Path, name: str = "boot/a-vmlinuz") -> None:
    assert (root / name).read_bytes() == V1


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        (Reply(body=V2, headers={"ETag": '"v2"'}, cut_at=100_000, then="close"),
         "truncated: the server closed the connection after"),
        (Reply(body=V2, headers={"ETag": '"v2"'}, cut_at=100_000, then="reset"),
         "connection"),
        (Reply(body=V2, headers={"ETag": '"v2"'}, cut_at=100_000, then="stall",
               stall_seconds=5), "stalled: no data for 1 s"),
        (Reply(404, "Not Found", body=b"gone"), "HTTP 404 Not Found"),
        (Reply(500, "Internal Server Error", body=b"oops"), "HTTP 500 Internal Server Error"),
    ],
    ids=["truncated", "reset", "stall", "404", "500"],
)
async def test_a_broken_refetch_keeps_the_last_good_version(
    api, upstream: Upstream, root: Path, reply: Reply, message: str
) -> None:
    proxy = await api(stall_timeout=1.0)
    await publish_v1(proxy, upstream)
    upstream.routes["/vmlinuz"] = lambda seen: reply
    status, ctype, body = await proxy.fetch_boot_file("boot/a", upstream.url("/vmlinuz"))
    assert status == 502
    assert ctype.startswith("text/plain")
    assert body.startswith(f"TFTP: Failed to fetch boot file: {upstream.url('/vmlinuz')}: ")
    assert message in body
    assert body.rstrip().endswith("; previous version kept")
    assert_still_v1(root)
    assert list((root / ".tftproxy/private/staging").iterdir()) == []
    rec = proxy.files.store.store.records.record("boot/a-vmlinuz")
    assert rec is not None and rec.state == "published" and rec.current is not None
    assert rec.current.sha256 == sha(V1)


async def test_a_first_fetch_that_breaks_publishes_nothing(api, upstream: Upstream,
                                                           root: Path) -> None:
    proxy = await api()
    upstream.routes["/initrd.img"] = lambda s: Reply(body=V1, cut_at=5000)
    status, _, body = await proxy.fetch_boot_file("boot/a", upstream.url("/initrd.img"))
    assert status == 502
    assert "nothing published" in body
    assert not os.path.lexists(root / "boot/a-initrd.img")
    assert proxy.files.store.store.records.record("boot/a-initrd.img") is None


async def test_5xx_is_retried_with_backoff_then_succeeds(api, upstream: Upstream,
                                                         root: Path) -> None:
    calls = []

    def flaky(seen: Seen) -> Reply:
        calls.append(seen)
        if len(calls) < 3:
            return Reply(503, "Service Unavailable", body=b"busy")
        return Reply(body=V1)

    upstream.routes["/vmlinuz"] = flaky
    proxy = await api(retries=3, retry_backoff=0.05)
    status, _, body = await proxy.fetch_boot_file("boot/a", upstream.url("/vmlinuz"))
    assert (status, body["status"]) == (200, "published")
    assert len(calls) == 3
    assert_still_v1(root)


async def test_4xx_is_not_retried(api, upstream: Upstream) -> None:
    upstream.routes["/vmlinuz"] = lambda s: Reply(403, "Forbidden", body=b"no")
    proxy = await api(retries=3, retry_backoff=0.05)
    status, _, body = await proxy.fetch_boot_file("boot/a", upstream.url("/vmlinuz"))
    assert status == 502 and "HTTP 403 Forbidden" in body
    assert len(upstream.requests_for("/vmlinuz")) == 1


async def test_no_validators_means_full_get_and_hash_compare(api, upstream: Upstream,
                                                             root: Path) -> None:
    upstream.routes["/vmlinuz"] = static(V1)
    proxy = await api()
    assert (await proxy.fetch_boot_file("boot/a", upstream.url("/vmlinuz")))[0] == 200
    before = os.lstat(root / "boot/a-vmlinuz")
    status, _, body = await proxy.fetch_boot_file("boot/a", upstream.url("/vmlinuz"))
    assert (status, body["status"]) == (200, "unchanged")
    assert os.lstat(root / "boot/a-vmlinuz").st_ino == before.st_ino
    second = upstream.requests_for("/vmlinuz")[1]
    assert "if-none-match" not in second.headers
    assert "if-modified-since" not in second.headers
    upstream.routes["/vmlinuz"] = static(V2)
    status, _, body = await proxy.fetch_boot_file("boot/a", upstream.url("/vmlinuz"))
    assert (status, body["status"]) == (200, "published")
    assert (root / "boot/a-vmlinuz").read_bytes() == V2


async def test_conditional_headers_and_identity_encoding_are_sent(
    api, upstream: Upstream
) -> None:
    proxy = await api()
    await publish_v1(proxy, upstream)
    status, _, body = await proxy.fetch_boot_file("boot/a", upstream.url("/vmlinuz"))
    assert (status, body["status"]) == (200, "unchanged")
    [seen] = upstream.requests_for("/vmlinuz")
    assert seen.headers["if-none-match"] == '"v1"'
    assert seen.headers["if-modified-since"] == "Mon, 01 Jan 2024 00:00:00 GMT"
    assert seen.headers["accept-encoding"] == "identity"


async def test_gzip_content_encoding_is_stored_as_sent(api, upstream: Upstream,
                                                       root: Path) -> None:
    # Some servers label initrd.gz as Content-Encoding: gzip; curl stores the bytes as sent.
    raw = gzip.compress(V1)
    upstream.routes["/initrd.gz"] = lambda s: Reply(body=raw, headers={"Content-Encoding": "gzip"})
    proxy = await api()
    status, _, body = await proxy.fetch_boot_file("boot/a", upstream.url("/initrd.gz"))
    assert status == 200
    assert body["sha256"] == sha(raw)
    assert (root / "boot/a-initrd.gz").read_bytes() == raw


async def test_redirects_are_followed_and_loops_bounded(api, upstream: Upstream,
                                                        root: Path) -> None:
    upstream.routes["/old/vmlinuz"] = lambda s: Reply(
        302, "Found", headers={"Location": upstream.url("/new/vmlinuz")})
    upstream.routes["/new/vmlinuz"] = static(V1, etag='"r"')
    upstream.routes["/loop/vmlinuz"] = lambda s: Reply(
        302, "Found", headers={"Location": upstream.url("/loop/vmlinuz")})
    proxy = await api(max_redirects=5)
    status, _, body = await proxy.fetch_boot_file("boot/r", upstream.url("/old/vmlinuz"))
    assert status == 200
    assert body["final_url"] == upstream.url("/new/vmlinuz")
    rec = proxy.files.store.store.records.record("boot/r-vmlinuz")
    assert rec is not None and rec.current is not None
    assert rec.current.final_url == upstream.url("/new/vmlinuz")
    status, _, body = await proxy.fetch_boot_file("boot/l", upstream.url("/loop/vmlinuz"))
    assert status == 502
    assert "more than 5 redirects" in body
    assert len(upstream.requests_for("/loop/vmlinuz")) == 6


async def test_max_file_size_and_free_space(api, upstream: Upstream, root: Path) -> None:
    upstream.routes["/big"] = static(V1)
    upstream.routes["/unsized"] = lambda s: Reply(body=V1, length=-1)
    proxy = await api(max_file_size=1000)
    status, _, body = await proxy.fetch_boot_file("boot/a", upstream.url("/big"))
    assert status == 502 and "more than max_file_size (1000)" in body
    status, _, body = await proxy.fetch_boot_file("boot/a", upstream.url("/unsized"))
    assert status == 502 and "grew past max_file_size" in body
    proxy2 = await api(min_free_space=2**62)
    status, _, body = await proxy2.fetch_boot_file("boot/b", upstream.url("/big"))
    assert status == 502 and "not enough free space" in body
    assert not os.path.lexists(root / "boot/a-big")
    assert not os.path.lexists(root / "boot/b-big")


async def test_connection_refused_is_retried_and_reported(api, root: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proxy = await api(retries=2, retry_backoff=0.01)
    status, _, body = await proxy.fetch_boot_file("boot/a", f"http://127.0.0.1:{port}/vmlinuz")
    assert status == 502
    assert "cannot connect" in body and "after 3 attempts" in body


async def test_hide_mode_hides_the_name_while_a_changed_version_downloads(
    api, upstream: Upstream, root: Path
) -> None:
    proxy = await api()
    await publish_v1(proxy, upstream)
    gate = threading.Event()
    upstream.routes["/vmlinuz"] = lambda s: Reply(body=V2, headers={"ETag": '"v2"'},
                                                  pause_at=50_000, pause=gate)
    job = await proxy.files.request("boot/a", upstream.url("/vmlinuz"))
    final = root / "boot/a-vmlinuz"
    for _ in range(200):
        if not os.path.lexists(final):
            break
        await asyncio.sleep(0.01)
    assert not os.path.lexists(final), "a changed version must hide the old one"
    assert proxy.files.store.store.serving.is_refreshing("boot/a-vmlinuz")
    gate.set()
    result = await job.outcome()
    assert result.status == "published"
    assert final.read_bytes() == V2
    assert not proxy.files.store.store.serving.is_refreshing("boot/a-vmlinuz")


async def test_keep_mode_serves_the_old_version_until_the_new_one_is_complete(
    api, upstream: Upstream, root: Path
) -> None:
    proxy = await api(refresh_mode="keep")
    await publish_v1(proxy, upstream)
    gate = threading.Event()
    upstream.routes["/vmlinuz"] = lambda s: Reply(body=V2, headers={"ETag": '"v2"'},
                                                  pause_at=50_000, pause=gate)
    job = await proxy.files.request("boot/a", upstream.url("/vmlinuz"))
    for _ in range(50):
        await asyncio.sleep(0.01)
        assert (root / "boot/a-vmlinuz").read_bytes() == V1
    gate.set()
    assert (await job.outcome()).status == "published"
    assert (root / "boot/a-vmlinuz").read_bytes() == V2


async def test_hidden_name_comes_back_when_the_fetch_fails(api, upstream: Upstream,
                                                           root: Path) -> None:
    proxy = await api()
    await publish_v1(proxy, upstream)
    upstream.routes["/vmlinuz"] = lambda s: Reply(body=V2, headers={"ETag": '"v2"'},
                                                  cut_at=70_000)
    status, _, _ = await proxy.fetch_boot_file("boot/a", upstream.url("/vmlinuz"))
    assert status == 502
    assert_still_v1(root)


async def test_slow_fetch_answers_202_and_the_job_url_reports_it(
    api, upstream: Upstream, root: Path
) -> None:
    gate = threading.Event()
    upstream.routes["/vmlinuz"] = lambda s: Reply(body=V1, pause_at=10_000, pause=gate)
    proxy = await api(fetch_wait=0.3)
    async with proxy.session.post(f"{proxy.base}/tftp/fetch_boot_file",
                                  data={"prefix": "boot/a", "path": upstream.url("/vmlinuz")},
                                  headers={"Accept": "json"}) as resp:
        assert resp.status == 202
        body = await resp.json()
    assert body["state"] == "running"
    assert body["url"] == f"/tftp/fetch_boot_file/{body['id']}"
    assert resp.headers["Location"] == body["url"]
    assert body["progress"]["total"] in (None, len(V1))  # known once the headers are in
    for _ in range(200):  # a loaded machine may not have read them within fetch_wait
        async with proxy.session.get(proxy.base + body["url"]) as resp:
            running = await resp.json()
        if running["progress"]["total"] is not None:
            break
        await asyncio.sleep(0.05)
    assert running["state"] == "running"
    assert running["progress"]["total"] == len(V1)
    gate.set()
    for _ in range(200):
        async with proxy.session.get(proxy.base + body["url"]) as resp:
            job = await resp.json()
        if job["state"] != "running":
            break
        await asyncio.sleep(0.05)
    assert job["state"] == "published"
    assert job["result"]["sha256"] == sha(V1)
    assert job["progress"]["bytes"] == len(V1)
    async with proxy.session.get(f"{proxy.base}/tftp/fetch_boot_file/nope") as resp:
        assert resp.status == 404
