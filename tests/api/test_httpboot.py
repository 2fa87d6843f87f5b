"""HTTP boot: GET/HEAD /httpboot/<path> over a real loopback socket, with curl and aiohttp."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from yarl import URL

from tests.tftp.clients import need, publish
from tests.tftp.test_refresh import NAME, refreshing
from tftproxy import assemble
from tftproxy.api.app import create_app
from tftproxy.settings.model import Settings
from tftproxy.store import BootStore


@pytest.fixture
async def base(store: BootStore, tree: dict[str, bytes]) -> AsyncIterator[str]:
    settings = Settings(tftproot=store.root, refresh_hold=5.0)
    files = assemble.boot_files(settings, store)
    runner = web.AppRunner(create_app(settings, files, files.store))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}/httpboot"
    await runner.cleanup()
    await files.close()


async def test_get_with_curl(base: str, tree: dict[str, bytes], tmp_path: Path) -> None:
    for name in ("pxelinux.0", "images/vmlinuz", "kernel-link", "empty.cfg"):
        out = tmp_path / "out"
        proc = await asyncio.create_subprocess_exec(
            need("curl"), "-sS", "-f", "-o", str(out), f"{base}/{name}")
        assert await proc.wait() == 0, name
        assert out.read_bytes() == tree[name], name


async def test_headers_head_and_conditionals(base: str, tree: dict[str, bytes]) -> None:
    data = tree["images/vmlinuz"]
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{base}/images/vmlinuz") as r:
            assert r.status == 200
            assert await r.read() == data
            assert r.headers["Content-Length"] == str(len(data))
            assert r.headers["Accept-Ranges"] == "bytes"
            etag, modified = r.headers["ETag"], r.headers["Last-Modified"]
        async with s.head(f"{base}/images/vmlinuz") as r:
            assert r.status == 200
            assert r.headers["Content-Length"] == str(len(data))
            assert r.headers["ETag"] == etag
            assert await r.read() == b""
        async with s.get(f"{base}/images/vmlinuz", headers={"If-None-Match": etag}) as r:
            assert r.status == 304
        async with s.get(f"{base}/images/vmlinuz", headers={"If-Modified-Since": modified}) as r:
            assert r.status == 304


async def test_ranges(base: str, tree: dict[str, bytes]) -> None:
    data = tree["images/vmlinuz"]
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{base}/images/vmlinuz", headers={"Range": "bytes=100-199"}) as r:
            assert r.status == 206
            assert await r.read() == data[100:200]
            assert r.headers["Content-Range"] == f"bytes 100-199/{len(data)}"
        async with s.get(f"{base}/images/vmlinuz", headers={"Range": "bytes=-10"}) as r:
            assert r.status == 206 and await r.read() == data[-10:]
        async with s.get(f"{base}/images/vmlinuz",
                         headers={"Range": f"bytes={len(data)}-"}) as r:
            assert r.status == 416


async def test_same_path_rules_as_tftp(base: str, tree: dict[str, bytes]) -> None:
    async with aiohttp.ClientSession() as s:
        for name in ("%5Cboot%5Cgrub%5Cgrubx64.efi", "/boot/grub/grubx64.efi"):
            async with s.get(f"{base}/{name}") as r:
                assert r.status == 200, name
                assert await r.read() == tree["boot/grub/grubx64.efi"]
        for name in ("escape", "boot/escape2", "boot", "", ".tftproxy/private/meta",
                     "%2E%2E/secret", "boot/%2E%2E/%2E%2E/secret"):
            # encoded=True: the client must not resolve the dot segments itself.
            async with s.get(URL(f"{base}/{name}", encoded=True)) as r:
                assert r.status == 403, name
                assert b"outside the root" not in await r.read()
        async with s.get(f"{base}/nothing-here") as r:
            assert r.status == 404


async def test_curl_path_traversal_is_refused(base: str) -> None:
    # --path-as-is sends the dot segments unresolved, as an attacker would.
    result = await asyncio.to_thread(
        subprocess.run, [need("curl"), "-s", "--path-as-is", "-o", "/dev/null", "-w",
                         "%{http_code}", f"{base}/../../secret"],
        capture_output=True, text=True, timeout=30)
    assert result.stdout in ("403", "404")
    assert result.stdout != "200"


async def test_request_during_refresh_waits_for_the_new_version(base: str,
                                                                store: BootStore) -> None:
    publish(store, NAME, b"old version")
    with refreshing(store, NAME) as finish:
        async with aiohttp.ClientSession() as s:
            pending = asyncio.ensure_future(s.get(f"{base}/{NAME}"))
            await asyncio.sleep(0.3)
            assert not pending.done()
            finish(b"new version")
            async with await pending as r:
                assert r.status == 200
                assert await r.read() == b"new version"


async def test_publish_during_a_response_never_changes_its_bytes(base: str,
                                                                 store: BootStore) -> None:
    old, new = b"a" * 8_000_000, b"b" * 8_000_000
    publish(store, NAME, old)
    async with aiohttp.ClientSession() as s, s.get(f"{base}/{NAME}") as r:
        first = await r.content.readexactly(65536)
        publish(store, NAME, new)
        rest = await r.read()
    assert first + rest == old
    # A client new to this file gets the new version; this one stays on its generation.
    other = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))
    async with aiohttp.ClientSession(connector=other) as s, s.get(f"{base}/{NAME}") as r:
        assert await r.read() == new
    async with aiohttp.ClientSession() as s, s.get(f"{base}/{NAME}") as r:
        assert await r.read() == old
