"""``fresh_for``: a check that just succeeded answers the requests that follow it.

Foreman's Build PXE Default asks for every host group's kernel and initrd at once, and many
hosts built together ask for the same files; the mirror must see one check per file, not one
per request. Only successes are reused, only for the same name and URL, only for the window.
"""

from __future__ import annotations

import asyncio
import os
import time

from tests.helpers.nginx import Nginx


async def test_requests_within_the_window_share_one_upstream_check(api, nginx: Nginx) -> None:
    nginx.put("vmlinuz", os.urandom(50_000))
    proxy = await api(fresh_for=30.0)
    url = nginx.url("vmlinuz")
    first = await proxy.fetch_boot_file("boot/a", url)
    assert first[0] == 200 and first[2]["status"] == "published"
    # A burst at once (joins the running check or reuses its result), then one by one.
    burst = await asyncio.gather(*(proxy.fetch_boot_file("boot/a", url) for _ in range(40)))
    for _ in range(10):
        burst.append(await proxy.fetch_boot_file("boot/a", url))
    assert {(status, body["sha256"]) for status, _, body in burst} == {(200, first[2]["sha256"])}
    assert [s for _, s, _ in nginx.log_lines("/vmlinuz")] == [200]


async def test_the_window_ends_and_the_next_request_checks_again(api, nginx: Nginx) -> None:
    nginx.put("vmlinuz", b"k1" * 1000, mtime=time.time() - 60)
    proxy = await api(fresh_for=0.3)
    url = nginx.url("vmlinuz")
    assert (await proxy.fetch_boot_file("boot/a", url))[0] == 200
    await asyncio.sleep(0.4)
    status, _, body = await proxy.fetch_boot_file("boot/a", url)
    assert (status, body["status"]) == (200, "unchanged")
    nginx.put("vmlinuz", b"k2" * 1000)  # a respin: found by the first check after the window
    await asyncio.sleep(0.4)
    status, _, body = await proxy.fetch_boot_file("boot/a", url)
    assert (status, body["status"]) == (200, "published")
    assert [s for _, s, _ in nginx.log_lines("/vmlinuz")] == [200, 304, 200]


async def test_a_failure_is_never_reused(api, nginx: Nginx) -> None:
    proxy = await api(fresh_for=30.0)
    url = nginx.url("vmlinuz")
    status, _, _ = await proxy.fetch_boot_file("boot/a", url)
    assert status == 502  # not there yet
    nginx.put("vmlinuz", b"kernel" * 100)
    status, _, body = await proxy.fetch_boot_file("boot/a", url)
    assert (status, body["status"]) == (200, "published")
    assert [s for _, s, _ in nginx.log_lines("/vmlinuz")] == [404, 200]


async def test_another_url_for_the_same_name_is_checked(api, nginx: Nginx) -> None:
    """A mirror switch right after a check is fetched at once, and the old URL's success then
    answers nothing: it is no longer what the name holds."""
    nginx.put("a/vmlinuz", b"from mirror a" * 100)
    nginx.put("b/vmlinuz", b"from mirror b" * 100)
    proxy = await api(fresh_for=30.0)
    assert (await proxy.fetch_boot_file("boot/x", nginx.url("a/vmlinuz")))[0] == 200
    status, _, body = await proxy.fetch_boot_file("boot/x", nginx.url("b/vmlinuz"))
    assert (status, body["status"], body["source"]) == (200, "published", nginx.url("b/vmlinuz"))
    status, _, body = await proxy.fetch_boot_file("boot/x", nginx.url("a/vmlinuz"))
    assert (status, body["status"], body["source"]) == (200, "published", nginx.url("a/vmlinuz"))
    assert len(nginx.log_lines("/a/vmlinuz")) == 2
    assert len(nginx.log_lines("/b/vmlinuz")) == 1
