"""``POST /tftp/sync`` ("Sync boot files") and its run status; sync state in ``/tftp/status``."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from tests.helpers.api import RunningApi
from tests.helpers.upstream import Reply, Upstream, static

K1, I1 = b"kernel one " * 2000, b"initrd one " * 5000
I2 = b"initrd two!! " * 5100


async def publish(proxy: RunningApi, upstream: Upstream, prefix: str) -> None:
    for f, data in (("vmlinuz", K1), ("initrd.img", I1)):
        upstream.routes[f"/{prefix}/{f}"] = static(data, etag=f'"{prefix}-{f}"')
        status, _, body = await proxy.fetch_boot_file(f"boot/{prefix}",
                                                      upstream.url(f"/{prefix}/{f}"))
        assert status == 200, body


async def post_sync(proxy: RunningApi, **data: str) -> tuple[int, str, object]:
    async with proxy.session.post(f"{proxy.base}/tftp/sync", data=data or None,
                                  headers={"Accept": "application/json"}) as resp:
        if resp.content_type == "application/json":
            return resp.status, resp.headers.get("Location", ""), await resp.json()
        return resp.status, resp.headers.get("Location", ""), await resp.text()


async def test_sync_lists_each_set_unchanged_or_updated(api, upstream: Upstream,
                                                        root: Path) -> None:
    proxy = await api()
    await publish(proxy, upstream, "a")
    await publish(proxy, upstream, "b")
    upstream.routes["/b/initrd.img"] = static(I2, etag='"b-2"')
    status, _, body = await post_sync(proxy)
    assert status == 200, body
    assert isinstance(body, dict)
    assert (body["state"], body["total"], body["unchanged"], body["updated"], body["failed"]) == (
        "done", 2, 1, 1, 0)
    by_set = {s["set"]: s for s in body["sets"]}
    assert by_set["boot/a"]["status"] == "unchanged" and by_set["boot/a"]["generation"] == 2
    assert (by_set["boot/b"]["status"], by_set["boot/b"]["from_generation"],
            by_set["boot/b"]["generation"]) == ("updated", 2, 3)
    assert (root / "boot/b-initrd.img").read_bytes() == I2
    # The run stays at its status URL; one prefix syncs one set.
    async with proxy.session.get(proxy.base + body["url"]) as resp:
        assert resp.status == 200 and (await resp.json())["sets"] == body["sets"]
    status, _, one = await post_sync(proxy, prefix="boot/a")
    assert status == 200 and isinstance(one, dict)
    assert [s["set"] for s in one["sets"]] == ["boot/a"] and one["unchanged"] == 1
    # Status shows, per set, the last check, its outcome and (sync off here) no next check.
    async with proxy.session.get(f"{proxy.base}/tftp/status") as resp:
        report = await resp.json()
    sync = {s["set"]: s["sync"] for s in report["sets"]}
    assert sync["boot/b"]["outcome"] == "updated" and sync["boot/b"]["from_generation"] == 2
    assert sync["boot/a"]["checked"] is not None and sync["boot/a"]["failures"] == 0
    assert report["sync"]["counts"] == {"checked": 3, "unchanged": 2, "updated": 1}


async def test_bad_input_and_failed_sets_are_named(api, upstream: Upstream,
                                                   root: Path) -> None:
    proxy = await api()
    await publish(proxy, upstream, "a")
    status, _, body = await post_sync(proxy, prefix="boot/zz")
    assert (status, body) == (404, "TFTP: Failed to sync boot files: no boot set is published "
                                   "under prefix 'boot/zz'")
    status, _, body = await post_sync(proxy, prefix=" ")
    assert (status, body) == (400, "TFTP: Failed to sync boot files: prefix is empty")
    status, _, body = await post_sync(proxy, prefix="/etc/boot")
    assert status == 400 and "outside the TFTP root" in str(body)
    async with proxy.session.get(f"{proxy.base}/tftp/sync/0123456789abcdef") as resp:
        assert resp.status == 404
    upstream.routes["/a/vmlinuz"] = lambda s: Reply(500, "Internal Server Error", body=b"x")
    status, _, body = await post_sync(proxy)
    assert status == 502
    assert isinstance(body, str) and body.startswith(
        "TFTP: Failed to sync boot files: 1 of 1 boot set(s) failed: boot/a: boot set boot/a "
        "not switched: boot/a-vmlinuz: HTTP 500 Internal Server Error")
    assert "previous version kept" in body and "/tftp/sync/" in body
    assert (root / "boot/a-vmlinuz").read_bytes() == K1


async def test_a_long_sync_answers_202_with_its_status_url(api, upstream: Upstream) -> None:
    proxy = await api()
    await publish(proxy, upstream, "a")
    gate = threading.Event()
    upstream.routes["/a/vmlinuz"] = lambda s: (gate.wait(10), Reply(304, "Not Modified"))[1]
    proxy.settings.fetch_wait = 0.2  # the same settings object the API answers with
    status, location, body = await post_sync(proxy)
    gate.set()
    assert status == 202 and isinstance(body, dict)
    assert location == body["url"] and body["state"] == "running"
    assert body["pending"] == ["boot/a"]
    for _ in range(500):
        async with proxy.session.get(proxy.base + location) as resp:
            run = await resp.json()
        if run["state"] == "done":
            break
        await asyncio.sleep(0.01)
    assert run["state"] == "done" and run["unchanged"] == 1 and run["pending"] == []


async def test_a_sync_of_nothing_is_an_empty_answer(api) -> None:
    proxy = await api()
    status, _, body = await post_sync(proxy)
    assert status == 200 and isinstance(body, dict)
    assert (body["total"], body["sets"], body["state"]) == (0, [], "done")
