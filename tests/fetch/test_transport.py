"""TLS verification, an HTTP proxy, connect timeouts and a full disk, with real servers."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.nginx import Nginx
from tests.helpers.upstream import Reply, Upstream, static
from tftproxy import assemble
from tftproxy.settings.model import Settings


async def _fetch(settings: Settings, prefix: str, url: str):
    files = assemble.boot_files(settings)
    try:
        return await (await files.request(prefix, url)).outcome()
    finally:
        await files.close()


async def test_tls_is_verified_by_default(tls_nginx, make_settings, root: Path) -> None:
    server, ca = tls_nginx
    server.put("vmlinuz", b"secure kernel")
    url = f"https://127.0.0.1:{server.port}/vmlinuz"
    result = await _fetch(make_settings(), "boot/t", url)
    assert result.status == "failed"
    assert "TLS error" in (result.message or "") and "certificate verify failed" in (
        result.message or "")
    assert not os.path.lexists(root / "boot/t-vmlinuz")
    result = await _fetch(make_settings(ca_bundle=ca), "boot/t", url)
    assert result.status == "published", result.message
    assert (root / "boot/t-vmlinuz").read_bytes() == b"secure kernel"
    result = await _fetch(make_settings(verify_server_cert=False), "boot/u", url)
    assert result.status == "published", result.message


async def test_requests_go_through_the_configured_proxy(
    tmp_path: Path, upstream: Upstream, make_settings, root: Path
) -> None:
    upstream.routes["/vmlinuz"] = static(b"via proxy", etag='"p"')
    proxy = Nginx(tmp_path / "proxy",
                  extra=f"location / {{ proxy_pass http://127.0.0.1:{upstream.port}; }}")
    try:
        settings = make_settings(http_proxy=f"http://127.0.0.1:{proxy.port}")
        result = await _fetch(settings, "boot/p", upstream.url("/vmlinuz"))
        assert result.status == "published", result.message
        assert proxy.log_lines("/vmlinuz") == [("GET", 200, len(b"via proxy"))]
        assert (root / "boot/p-vmlinuz").read_bytes() == b"via proxy"
    finally:
        proxy.stop()


async def test_connect_timeout_is_named(make_settings) -> None:
    # A listener whose accept queue is full drops SYNs: the connect hangs, on loopback.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(4):
        c = socket.socket()
        c.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            c.connect(("127.0.0.1", port))
        fillers.append(c)
    try:
        result = await _fetch(make_settings(tftp_connect_timeout=0.5), "boot/c",
                              f"http://127.0.0.1:{port}/vmlinuz")
        assert result.status == "failed"
        assert "connect timed out after 0.5 s" in (result.message or "")
    finally:
        for c in fillers:
            c.close()
        listener.close()


@pytest.fixture
def small_root(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs as the TFTP root: a real full disk."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)],
                          capture_output=True, text=True)
    assert done.returncode == 0, f"mounting a tmpfs needs root: {done.stderr}"
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


async def test_a_full_disk_fails_cleanly(upstream: Upstream, small_root: Path) -> None:
    first = b"k" * 200_000
    upstream.routes["/vmlinuz"] = static(first, etag='"1"')
    settings = Settings(tftproot=small_root, retries=0, min_free_space=0)
    assert (await _fetch(settings, "boot/d", upstream.url("/vmlinuz"))).status == "published"
    big = os.urandom(3 * 1024 * 1024)
    # Without a length the free-space check cannot refuse up front: the disk fills up.
    upstream.routes["/vmlinuz"] = lambda s: Reply(body=big, length=-1, headers={"ETag": '"2"'})
    result = await _fetch(settings, "boot/d", upstream.url("/vmlinuz"))
    assert result.status == "failed"
    assert "No space left on device" in (result.message or "")
    assert (small_root / "boot/d-vmlinuz").read_bytes() == first
    assert list((small_root / ".tftproxy/private/staging").iterdir()) == []
    # With a length, the check refuses before writing anything.
    upstream.routes["/vmlinuz"] = lambda s: Reply(body=big, headers={"ETag": '"3"'})
    result = await _fetch(settings, "boot/d", upstream.url("/vmlinuz"))
    assert "not enough free space" in (result.message or "")
    assert (small_root / "boot/d-vmlinuz").read_bytes() == first
