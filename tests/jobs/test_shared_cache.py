"""Several proxies, one mirror: three tftproxy instances behind one squid as their
http_proxy. One upstream download serves all three; validators pass through, so a respin is
noticed by every proxy; a cache outage is a clear error and each keeps its last good version."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.nginx import Nginx
from tests.helpers.squid import Squid

PATH = "os/images/pxeboot/vmlinuz"


@pytest.fixture
def squid() -> Iterator[Squid]:
    cache = Squid()
    yield cache
    cache.close()


def bodies_sent(nginx: Nginx) -> list[int]:
    """Body bytes of every 200 nginx sent for the file (304s send none)."""
    return [size for method, status, size in nginx.log_lines("/" + PATH)
            if method == "GET" and status == 200]


async def test_one_download_for_three_proxies(api, nginx: Nginx, squid: Squid,
                                              tmp_path: Path) -> None:
    first = os.urandom(1_500_000)
    nginx.put(PATH, first, mtime=time.time() - 60)
    url = nginx.url(PATH)
    proxies = [await api(tftproot=tmp_path / f"root{i}", http_proxy=squid.url)
               for i in range(3)]
    for proxy in proxies:
        status, _, body = await proxy.fetch_boot_file("boot/c", url)
        assert status == 200 and body["status"] == "published"
        assert body["sha256"] == hashlib.sha256(first).hexdigest()
    assert bodies_sent(nginx) == [len(first)]  # the mirror sent the file once

    for proxy in proxies:  # up to date everywhere: only revalidations reach the mirror
        status, _, body = await proxy.fetch_boot_file("boot/c", url)
        assert status == 200 and body["status"] == "unchanged"
    assert bodies_sent(nginx) == [len(first)]

    respin = os.urandom(1_600_000)
    nginx.put(PATH, respin, mtime=time.time())
    for proxy in proxies:  # every proxy notices, through the cache
        status, _, body = await proxy.fetch_boot_file("boot/c", url)
        assert status == 200 and body["status"] == "published"
        assert body["sha256"] == hashlib.sha256(respin).hexdigest()
    assert bodies_sent(nginx) == [len(first), len(respin)], (
        squid.base / "access.log").read_text()

    squid.stop()  # the cache is down
    for i, proxy in enumerate(proxies):
        status, _, text = await proxy.fetch_boot_file("boot/c", url)
        assert status == 502
        assert text == (f"TFTP: Failed to fetch boot file: {url}: cannot connect to the HTTP "
                        f"proxy {squid.url}: Connection refused; previous version kept")
        assert (tmp_path / f"root{i}" / "boot/c-vmlinuz").read_bytes() == respin
