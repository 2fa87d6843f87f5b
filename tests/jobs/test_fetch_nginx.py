"""Fetching from nginx: real ETag / Last-Modified / 304 behaviour, through the HTTP API."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from pathlib import Path

from tests.helpers.api import foreman_success
from tests.helpers.nginx import Nginx


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def test_publish_is_a_relative_link_to_content(api, nginx: Nginx, root: Path) -> None:
    kernel = os.urandom(300_000)
    nginx.put("os/images/pxeboot/vmlinuz", kernel)
    proxy = await api()
    status, ctype, body = await proxy.fetch_boot_file(
        "boot/centos-mirror-AbC123", nginx.url("os/images/pxeboot/vmlinuz"))
    assert status == 200, body
    assert ctype.startswith("application/json")
    assert body == {
        "name": "boot/centos-mirror-AbC123-vmlinuz", "status": "published",
        "source": nginx.url("os/images/pxeboot/vmlinuz"), "size": len(kernel),
        "sha256": sha(kernel), "set": "boot/centos-mirror-AbC123", "generation": 1,
    }
    final = root / "boot/centos-mirror-AbC123-vmlinuz"
    assert final.is_symlink()
    target = os.readlink(final)
    assert not os.path.isabs(target)
    assert target == f"../.tftproxy/objects/{sha(kernel)[:2]}/{sha(kernel)}"
    assert final.read_bytes() == kernel
    obj = (final.parent / target).resolve()
    assert obj.stat().st_mode & 0o777 == 0o444
    private = root / ".tftproxy/private"
    assert private.stat().st_mode & 0o777 == 0o700
    assert list((private / "staging").iterdir()) == []


async def test_query_parameters_work_like_the_form(api, nginx: Nginx, root: Path) -> None:
    nginx.put("initrd.img", b"initrd")
    proxy = await api()
    status, _, body = await proxy.fetch_boot_file("boot/q/", nginx.url("initrd.img"), query=True)
    assert status == 200
    assert body["name"] == "boot/q/initrd.img"
    assert (root / "boot/q/initrd.img").read_bytes() == b"initrd"


async def test_up_to_date_refetch_is_a_304_and_the_link_never_moves(
    api, nginx: Nginx, root: Path
) -> None:
    nginx.put("vmlinuz", b"k1" * 1000)
    proxy = await api()
    assert (await proxy.fetch_boot_file("boot/a", nginx.url("vmlinuz")))[0] == 200
    final = root / "boot/a-vmlinuz"
    before = os.lstat(final)
    rec_before = proxy.files.store.store.records.record("boot/a-vmlinuz")
    for _ in range(3):
        status, _, body = await proxy.fetch_boot_file("boot/a", nginx.url("vmlinuz"))
        assert status == 200
        assert body["status"] == "unchanged"
    after = os.lstat(final)
    assert (before.st_ino, before.st_mtime_ns) == (after.st_ino, after.st_mtime_ns)
    statuses = [s for _, s, _ in nginx.log_lines("/vmlinuz")]
    assert statuses == [200, 304, 304, 304]
    rec = proxy.files.store.store.records.record("boot/a-vmlinuz")
    assert rec is not None and rec_before is not None and rec.current is not None
    # Validators are kept verbatim, as the server sent them.
    assert rec.current.etag and rec.current.etag.startswith('"')
    assert rec.current.last_modified and rec.current.last_modified.endswith("GMT")
    assert rec.checked_at >= rec_before.checked_at


async def test_respin_is_detected_and_republished(api, nginx: Nginx, root: Path) -> None:
    nginx.put("vmlinuz", b"release-7.5" * 100, mtime=time.time() - 3600)
    proxy = await api()
    await proxy.fetch_boot_file("boot/a", nginx.url("vmlinuz"))
    nginx.put("vmlinuz", b"release-7.6" * 100)
    status, _, body = await proxy.fetch_boot_file("boot/a", nginx.url("vmlinuz"))
    assert status == 200
    assert body["status"] == "published"
    assert (root / "boot/a-vmlinuz").read_bytes() == b"release-7.6" * 100


async def test_different_file_with_an_older_date_is_republished(
    api, nginx: Nginx, root: Path
) -> None:
    # A mirror switch can bring an older file; "newer than" logic (wget -N, curl -z) misses it.
    nginx.put("initrd.img", b"new mirror" * 50, mtime=time.time())
    proxy = await api()
    await proxy.fetch_boot_file("boot/a", nginx.url("initrd.img"))
    nginx.put("initrd.img", b"old mirror!" * 50, mtime=time.time() - 86400 * 30)
    status, _, body = await proxy.fetch_boot_file("boot/a", nginx.url("initrd.img"))
    assert (status, body["status"]) == (200, "published")
    assert (root / "boot/a-initrd.img").read_bytes() == b"old mirror!" * 50


async def test_a_new_source_url_is_a_new_resource(api, nginx: Nginx, root: Path) -> None:
    nginx.put("m1/vmlinuz", b"same bytes")
    nginx.put("m2/vmlinuz", b"other bytes")
    proxy = await api()
    await proxy.fetch_boot_file("boot/a/", nginx.url("m1/vmlinuz"))
    status, _, body = await proxy.fetch_boot_file("boot/a/", nginx.url("m2/vmlinuz"))
    assert (status, body["status"]) == (200, "published")
    assert nginx.log_lines("/m2/vmlinuz") == [("GET", 200, len(b"other bytes"))]
    rec = proxy.files.store.store.records.record("boot/a/vmlinuz")
    assert rec is not None and rec.current is not None
    assert rec.current.source == nginx.url("m2/vmlinuz")


async def test_concurrent_requests_share_one_download(api, nginx: Nginx, root: Path) -> None:
    data = os.urandom(4_000_000)
    nginx.put("big.img", data)
    proxy = await api()
    results = await asyncio.gather(
        *(proxy.fetch_boot_file("boot/a", nginx.url("big.img")) for _ in range(10)))
    assert all(status == 200 for status, _, _ in results)
    assert {body["sha256"] for _, _, body in results} == {sha(data)}
    assert {body["status"] for _, _, body in results} == {"published"}
    assert nginx.log_lines("/big.img") == [("GET", 200, len(data))]


async def test_two_names_with_the_same_content_are_stored_once(
    api, nginx: Nginx, root: Path
) -> None:
    nginx.put("a/vmlinuz", b"identical")
    nginx.put("b/vmlinuz", b"identical")
    proxy = await api()
    await proxy.fetch_boot_file("boot/one", nginx.url("a/vmlinuz"))
    await proxy.fetch_boot_file("boot/two", nginx.url("b/vmlinuz"))
    objects = [p for p in (root / ".tftproxy/objects").rglob("*") if p.is_file()]
    assert len(objects) == 1
    assert os.path.realpath(root / "boot/one-vmlinuz") == os.path.realpath(
        root / "boot/two-vmlinuz")


async def test_foreman_client_sees_success_and_failure(api, nginx: Nginx) -> None:
    nginx.put("vmlinuz", b"k")
    proxy = await api()
    for path, ok in ((nginx.url("vmlinuz"), True), (nginx.url("missing"), False)):
        async with proxy.session.post(f"{proxy.base}/tftp/fetch_boot_file",
                                      data={"prefix": "boot/f", "path": path},
                                      headers={"Accept": "json"}) as resp:
            body = await resp.text()
            assert foreman_success(resp.status, body) is ok, (resp.status, body)
            if not ok:
                assert resp.status == 502
                assert body.strip() == (
                    f"TFTP: Failed to fetch boot file: {path}: HTTP 404 Not Found; "
                    "nothing published")


async def test_missing_parameters_and_bad_schemes_are_400(api) -> None:
    proxy = await api()
    cases = [
        ({"prefix": "boot/a"}, "both 'prefix' and 'path' are required"),
        ({"prefix": "boot/a", "path": "gopher://m/vmlinuz"}, "unsupported URL scheme 'gopher'"),
        ({"prefix": "boot/a", "path": "git://m/vmlinuz"}, "unsupported URL scheme 'git'"),
        ({"prefix": "../x", "path": "http://m/vmlinuz"}, "'..'"),
    ]
    for data, message in cases:
        async with proxy.session.post(f"{proxy.base}/tftp/fetch_boot_file", data=data) as resp:
            text = await resp.text()
            assert resp.status == 400, text
            assert text.startswith("TFTP: Failed to fetch boot file: ")
            assert message in text
            assert not text.endswith("\n"), "the body is the message alone, as smart-proxy's"


async def test_nfs_is_accepted_and_ignored(api, root: Path) -> None:
    proxy = await api()
    status, _, body = await proxy.fetch_boot_file("boot/n", "nfs://server/export/vmlinuz")
    assert (status, body["status"]) == (200, "ignored")
    assert not (root / "boot/n-vmlinuz").exists()


async def test_status_lists_what_was_published(api, nginx: Nginx, root: Path) -> None:
    from tftproxy.jobs.status import status_report
    from tftproxy.store import BootStore

    nginx.put("vmlinuz", b"kernel")
    proxy = await api()
    await proxy.fetch_boot_file("boot/s", nginx.url("vmlinuz"))
    report = status_report(BootStore(root, create=False))
    [entry] = report["files"]
    assert entry["name"] == "boot/s-vmlinuz"
    assert entry["state"] == "published"
    assert entry["current"]["sha256"] == sha(b"kernel")
    assert entry["current"]["source"] == nginx.url("vmlinuz")
    assert entry["current"]["etag"]
    assert entry["fetched"] and entry["checked"]
