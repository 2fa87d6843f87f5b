"""A disk that fills during a refresh, on real small tmpfs mounts (classes 2 and 3).

The last good version stays served, every member of the set is put back, nothing temporary
is left, and ``min_free_space`` holds while a body without Content-Length streams.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.upstream import Reply, Upstream, static
from tests.hostile.conftest import fill, free_bytes, tmpfs
from tests.hostile.figures import record

MiB = 1024 * 1024
KERNEL_V1 = os.urandom(2 * MiB)
INITRD_V1 = os.urandom(1 * MiB)


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    with tmpfs(tmp_path / "disk", "24m") as mount:
        yield mount


def _leftovers(root: Path) -> list[str]:
    """Staging files and temporaries anywhere under tftproxy's state."""
    found = []
    for dirpath, _, files in os.walk(root / ".tftproxy"):
        for f in files:
            if f.endswith((".tmp", ".part")):
                found.append(os.path.join(dirpath, f))
    return found


async def _publish_set(proxy, upstream: Upstream) -> None:
    upstream.routes["/vmlinuz"] = static(KERNEL_V1, etag='"k1"')
    upstream.routes["/initrd.img"] = static(INITRD_V1, etag='"i1"')
    for path in ("/vmlinuz", "/initrd.img"):
        status, _, body = await proxy.fetch_boot_file("boot/a", upstream.url(path))
        assert (status, body["status"]) == (200, "published"), body


def _still_v1(proxy, root: Path) -> None:
    assert (root / "boot/a-vmlinuz").read_bytes() == KERNEL_V1
    assert (root / "boot/a-initrd.img").read_bytes() == INITRD_V1
    records = proxy.files.store.store.records
    for name in ("boot/a-vmlinuz", "boot/a-initrd.img"):
        rec = records.record(name)
        assert rec is not None and rec.state == "published" and not rec.hidden, rec
    srec = records.set_record("boot/a")
    assert srec is not None and srec.state == "published" and srec.candidate is None


async def _published_then_full(api, upstream: Upstream, disk: Path, leave: int):
    """A set published on the small disk, then the disk filled to ``leave`` bytes free."""
    root = disk / "tftpboot"
    root.mkdir()
    proxy = await api(tftproot=root, min_free_space=0)
    await _publish_set(proxy, upstream)
    return proxy, root, fill(root, leave=leave)


async def test_a_full_disk_during_a_refresh_keeps_the_whole_set(api, upstream: Upstream,
                                                                disk: Path) -> None:
    proxy, root, filler = await _published_then_full(api, upstream, disk, MiB)
    # A changed kernel, without Content-Length, larger than what is left.
    upstream.routes["/vmlinuz"] = lambda seen: Reply(body=os.urandom(4 * MiB),
                                                      headers={"ETag": '"k2"'}, length=-1)
    status, ctype, body = await proxy.fetch_boot_file("boot/a", upstream.url("/vmlinuz"))
    assert status == 502 and ctype.startswith("text/plain"), body
    assert "No space left on device" in body and "internal error" not in body, body
    assert body.rstrip().endswith("previous version kept"), body
    _still_v1(proxy, root)
    assert _leftovers(root) == []
    record("full disk during a refresh", disk="24 MiB tmpfs", body_without_length="4 MiB",
           served_after="last good set", leftovers=0)
    # Space comes back: the next fetch publishes the new version.
    filler.unlink()
    upstream.routes["/vmlinuz"] = static(b"new kernel" * 1000, etag='"k3"')
    status, _, result = await proxy.fetch_boot_file("boot/a", upstream.url("/vmlinuz"))
    assert (status, result["status"]) == (200, "published"), result


async def test_a_full_disk_while_the_records_change_keeps_the_set(api, upstream: Upstream,
                                                                  disk: Path) -> None:
    """Full to the last block: even hiding the set cannot write its records."""
    proxy, root, _ = await _published_then_full(api, upstream, disk, 0)
    upstream.routes["/vmlinuz"] = lambda seen: Reply(body=os.urandom(MiB),
                                                      headers={"ETag": '"k2"'}, length=-1)
    status, _, body = await proxy.fetch_boot_file("boot/a", upstream.url("/vmlinuz"))
    assert status == 502, body
    assert "No space left on device" in body and "internal error" not in body, body
    _still_v1(proxy, root)
    assert _leftovers(root) == []


@pytest.mark.parametrize("body_size", [30 * MiB, 14 * MiB], ids=["over-the-disk", "fits-the-disk"])
async def test_min_free_space_holds_without_content_length(api, upstream: Upstream,
                                                           disk: Path, body_size: int) -> None:
    root = disk / "tftpboot"
    root.mkdir()
    minimum = 12 * MiB
    proxy = await api(tftproot=root, min_free_space=minimum)
    lowest = [free_bytes(root)]
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            lowest[0] = min(lowest[0], free_bytes(root))
            time.sleep(0.002)

    upstream.routes["/initrd.img"] = lambda seen: Reply(body=b"\x5a" * body_size, length=-1,
                                                         chunk=256 * 1024, chunk_delay=0.005)
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        status, _, body = await proxy.fetch_boot_file("boot/b", upstream.url("/initrd.img"))
    finally:
        stop.set()
        watcher.join(5)
    assert status == 502, body
    assert "min_free_space is 12582912" in body and "nothing published" in body, body
    # The check runs every MiB written (plus one write batch): the disk never went lower.
    assert lowest[0] >= minimum - 3 * MiB, lowest
    assert not os.path.lexists(root / "boot/b-initrd.img")
    assert _leftovers(root) == []
    record(f"min_free_space, chunked body of {body_size // MiB} MiB",
           disk="24 MiB tmpfs", min_free_space="12 MiB",
           lowest_free_mib=round(lowest[0] / MiB, 2))
