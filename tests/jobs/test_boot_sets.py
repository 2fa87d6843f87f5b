"""Boot sets switch as one generation; clients stay on the generation they started on."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path

from tests.helpers.nginx import Nginx
from tests.helpers.upstream import Reply, Upstream, static
from tftproxy.store import BootStore
from tftproxy.store.gc import collect

K1, I1 = b"kernel 7.5 " * 3000, b"initrd 7.5 " * 9000
K2, I2 = b"kernel 7.6 " * 3100, b"initrd 7.6 " * 9100


def served(store: BootStore, name: str, client: str | None = None) -> bytes:
    f = store.serving.open_served(name, client=client)
    try:
        return os.pread(f.fd, f.size, 0)
    finally:
        f.close()


async def publish_pair(proxy, nginx: Nginx, kernel: bytes, initrd: bytes) -> None:
    nginx.put("os/images/pxeboot/vmlinuz", kernel)
    nginx.put("os/images/pxeboot/initrd.img", initrd)
    for f in ("vmlinuz", "initrd.img"):
        status, _, body = await proxy.fetch_boot_file("boot/c7", nginx.url(
            f"os/images/pxeboot/{f}"))
        assert status == 200, body


async def test_a_respin_switches_kernel_and_initrd_together(api, nginx: Nginx,
                                                            root: Path) -> None:
    proxy = await api()
    await publish_pair(proxy, nginx, K1, I1)
    nginx.put("os/images/pxeboot/vmlinuz", K2, mtime=time.time() + 5)
    nginx.put("os/images/pxeboot/initrd.img", I2, mtime=time.time() + 5)
    # Foreman asks for the kernel first: the initrd is revalidated at once, in the same job.
    status, _, body = await proxy.fetch_boot_file("boot/c7", nginx.url("os/images/pxeboot/vmlinuz"))
    assert (status, body["status"], body["generation"]) == (200, "published", 3)
    assert (root / "boot/c7-vmlinuz").read_bytes() == K2
    assert (root / "boot/c7-initrd.img").read_bytes() == I2
    # Its following request for the initrd finds it up to date.
    status, _, body = await proxy.fetch_boot_file("boot/c7",
                                                  nginx.url("os/images/pxeboot/initrd.img"))
    assert (status, body["status"], body["generation"]) == (200, "unchanged", 3)
    # Adding the initrd revalidated the kernel (304); the respin fetched each file once.
    kernel_log = nginx.log_lines("/os/images/pxeboot/vmlinuz")
    initrd_log = nginx.log_lines("/os/images/pxeboot/initrd.img")
    assert [s for _, s, _ in kernel_log] == [200, 304, 200]
    assert [s for _, s, _ in initrd_log] == [200, 200, 304]
    srec = proxy.files.store.store.records.set_record("boot/c7")
    assert srec is not None and srec.current == 3
    gen3 = srec.generation(3)
    assert gen3 is not None
    assert set(gen3.members) == {"boot/c7-vmlinuz", "boot/c7-initrd.img"}


async def test_a_broken_member_switches_nothing(api, upstream: Upstream, root: Path) -> None:
    upstream.routes["/os/vmlinuz"] = static(K1, etag='"k1"')
    upstream.routes["/os/initrd.img"] = static(I1, etag='"i1"')
    proxy = await api()
    for f in ("vmlinuz", "initrd.img"):
        assert (await proxy.fetch_boot_file("boot/s", upstream.url(f"/os/{f}")))[0] == 200
    upstream.routes["/os/vmlinuz"] = static(K2, etag='"k2"')
    upstream.routes["/os/initrd.img"] = lambda s: Reply(body=I2, headers={"ETag": '"i2"'},
                                                        cut_at=1000)
    status, _, body = await proxy.fetch_boot_file("boot/s", upstream.url("/os/vmlinuz"))
    assert status == 502
    assert "boot set boot/s not switched: boot/s-initrd.img: truncated" in body
    assert body.rstrip().endswith("previous version kept")
    assert (root / "boot/s-vmlinuz").read_bytes() == K1
    assert (root / "boot/s-initrd.img").read_bytes() == I1
    assert list((root / ".tftproxy/private/staging").iterdir()) == []


async def test_requests_during_a_set_change_join_it(api, upstream: Upstream,
                                                    root: Path) -> None:
    upstream.routes["/os/vmlinuz"] = static(K1, etag='"k1"')
    upstream.routes["/os/initrd.img"] = static(I1, etag='"i1"')
    proxy = await api()
    for f in ("vmlinuz", "initrd.img"):
        assert (await proxy.fetch_boot_file("boot/j", upstream.url(f"/os/{f}")))[0] == 200
    upstream.seen.clear()
    gate = threading.Event()
    upstream.routes["/os/vmlinuz"] = static(K2, etag='"k2"')
    upstream.routes["/os/initrd.img"] = lambda s: Reply(body=I2, headers={"ETag": '"i2"'},
                                                        pause_at=20_000, pause=gate)
    kernel = asyncio.create_task(proxy.fetch_boot_file("boot/j", upstream.url("/os/vmlinuz")))
    for _ in range(300):
        if upstream.requests_for("/os/initrd.img"):
            break
        await asyncio.sleep(0.01)
    # Hidden while the new generation is prepared (refresh_mode: hide).
    assert not os.path.lexists(root / "boot/j-vmlinuz")
    assert not os.path.lexists(root / "boot/j-initrd.img")
    initrd = asyncio.create_task(proxy.fetch_boot_file("boot/j", upstream.url("/os/initrd.img")))
    await asyncio.sleep(0.2)
    gate.set()
    (ks, _, kb), (is_, _, ib) = await asyncio.gather(kernel, initrd)
    assert (ks, kb["status"]) == (200, "published")
    assert (is_, ib["status"], ib["generation"]) == (200, "published", kb["generation"])
    assert len(upstream.requests_for("/os/initrd.img")) == 1


async def test_keep_mode_switches_both_links_in_one_batch(api, upstream: Upstream,
                                                          root: Path) -> None:
    upstream.routes["/os/vmlinuz"] = static(K1, etag='"k1"')
    upstream.routes["/os/initrd.img"] = static(I1, etag='"i1"')
    proxy = await api(refresh_mode="keep")
    for f in ("vmlinuz", "initrd.img"):
        assert (await proxy.fetch_boot_file("boot/k", upstream.url(f"/os/{f}")))[0] == 200
    gate = threading.Event()
    upstream.routes["/os/vmlinuz"] = static(K2, etag='"k2"')
    upstream.routes["/os/initrd.img"] = lambda s: Reply(body=I2, headers={"ETag": '"i2"'},
                                                        pause_at=20_000, pause=gate)
    task = asyncio.create_task(proxy.fetch_boot_file("boot/k", upstream.url("/os/vmlinuz")))
    for _ in range(50):
        await asyncio.sleep(0.01)
        # The kernel is complete, but no mixed pair is ever visible.
        assert (root / "boot/k-vmlinuz").read_bytes() == K1
        assert (root / "boot/k-initrd.img").read_bytes() == I1
    gate.set()
    assert (await task)[0] == 200
    assert (root / "boot/k-vmlinuz").read_bytes() == K2
    assert (root / "boot/k-initrd.img").read_bytes() == I2


async def test_pinned_clients_keep_their_generation(api, nginx: Nginx, root: Path) -> None:
    proxy = await api(pin_window=60)
    await publish_pair(proxy, nginx, K1, I1)
    store = BootStore(root, pin_window=60)
    # Client A starts booting: it reads the kernel of the current generation.
    assert served(store, "boot/c7-vmlinuz", "127.0.0.2") == K1
    nginx.put("os/images/pxeboot/vmlinuz", K2, mtime=time.time() + 5)
    nginx.put("os/images/pxeboot/initrd.img", I2, mtime=time.time() + 5)
    await proxy.fetch_boot_file("boot/c7", nginx.url("os/images/pxeboot/vmlinuz"))
    # A finishes with the initrd of the generation it started on; a new client B gets the new.
    assert served(store, "boot/c7-initrd.img", "127.0.0.2") == I1
    assert served(store, "boot/c7-vmlinuz", "127.0.0.2") == K1
    assert served(store, "boot/c7-vmlinuz", "127.0.0.3") == K2
    assert served(store, "boot/c7-initrd.img", "127.0.0.3") == I2
    # Clean-up keeps what A is pinned to, even with no grace at all.
    report = collect(store, grace=0.0)
    assert report.deleted == []
    assert served(store, "boot/c7-initrd.img", "127.0.0.2") == I1
    # Once the pin expires, A gets the current generation and the old content can go.
    expired = BootStore(root, pin_window=60)
    later = time.time() + 120
    assert expired.pins.get("127.0.0.2", "boot/c7", now=later) is None
    report = collect(store, grace=0.0, now=later)
    assert len(report.deleted) == 2
    assert report.freed_bytes == len(K1) + len(I1)
    assert (root / "boot/c7-vmlinuz").read_bytes() == K2


async def test_clean_up_frees_only_what_nothing_uses(api, nginx: Nginx, root: Path) -> None:
    proxy = await api(pin_window=0)
    await publish_pair(proxy, nginx, K1, I1)
    nginx.put("os/images/pxeboot/vmlinuz", K2, mtime=time.time() + 5)
    await proxy.fetch_boot_file("boot/c7", nginx.url("os/images/pxeboot/vmlinuz"))
    store = proxy.files.store.store
    # Within the grace period nothing goes, not even the retired kernel.
    assert collect(store, grace=3600).deleted == []
    dry = collect(store, grace=0.0, dry_run=True)
    assert dry.freed_bytes == len(K1) and len(dry.deleted) == 1
    assert store.layout.object_path(dry.deleted[0]).exists()
    # A name someone linked by hand to old content keeps it.
    os.symlink(os.path.relpath(store.layout.object_path(dry.deleted[0]), root / "boot"),
               root / "boot/manual-vmlinuz")
    kept = collect(store, grace=0.0)
    assert kept.deleted == []
    # The retired generations themselves are past their grace: their records go.
    assert kept.dropped_generations == ["boot/c7#1", "boot/c7#2"]
    os.unlink(root / "boot/manual-vmlinuz")
    report = collect(store, grace=0.0)
    assert report.deleted == dry.deleted
    for name, data in (("boot/c7-vmlinuz", K2), ("boot/c7-initrd.img", I1)):
        assert (root / name).read_bytes() == data


async def test_clean_up_waits_for_a_fetch_that_is_publishing(api, nginx: Nginx,
                                                             root: Path) -> None:
    proxy = await api()
    await publish_pair(proxy, nginx, K1, I1)
    store = proxy.files.store.store
    # A publisher holds the clean-up lock shared between storing content and linking it.
    publisher = store.gc_lock()
    assert publisher.acquire(blocking=True, shared=True)
    done = threading.Event()
    threading.Thread(target=lambda: (collect(store, grace=0.0), done.set()), daemon=True).start()
    await asyncio.sleep(0.3)
    assert not done.is_set()
    publisher.release()
    assert await asyncio.to_thread(done.wait, 10)


async def test_prune_route_and_status_show_generations(api, nginx: Nginx, root: Path) -> None:
    proxy = await api(pin_window=0)
    await publish_pair(proxy, nginx, K1, I1)
    for bad in ("0", "-5", "soon", ""):
        async with proxy.session.post(f"{proxy.base}/tftp/prune", params={"age": bad}) as r:
            assert r.status == 400
            assert "age must be a positive number of seconds" in await r.text()
    async with proxy.session.post(f"{proxy.base}/tftp/prune", params={"age": "3600"}) as r:
        assert r.status == 200
        report = await r.json()
    assert report["deleted"] == [] and report["disk_total"] > 0
    async with proxy.session.get(f"{proxy.base}/tftp/status") as r:
        status = await r.json()
    [s] = status["sets"]
    assert s["set"] == "boot/c7" and s["current"] == 2
    assert [g["current"] for g in s["generations"]] == [False, True]
    assert {f["name"]: f["generation"] for f in status["files"]} == {
        "boot/c7-initrd.img": 2, "boot/c7-vmlinuz": 2}


def test_a_switch_interrupted_by_a_crash_is_finished_on_restart(root: Path) -> None:
    import hashlib
    from dataclasses import replace

    from tftproxy.store import Version

    store = BootStore(root)
    versions = {}
    for name, data in (("boot/r-vmlinuz", K1), ("boot/r-initrd.img", I1)):
        staging = store.objects.new_staging(name)
        staging.write(data)
        sha = hashlib.sha256(data).hexdigest()
        store.objects.ingest(staging, sha)
        versions[name] = Version(sha256=sha, size=len(data), source="http://m/" + name,
                                 final_url="http://m/" + name)
    store.transactions.publish_generation("boot/r", {"boot/r-vmlinuz": versions["boot/r-vmlinuz"]},
                                          1.0)
    # The process died after recording the candidate and linking one of two names.
    srec = store.records.set_record("boot/r")
    assert srec is not None
    store.records.write_set_record(replace(srec, state="switching", candidate=versions))
    store.links.link("boot/r-initrd.img", versions["boot/r-initrd.img"].sha256)
    report = store.recover()
    assert sorted(report.completed) == ["boot/r-initrd.img", "boot/r-vmlinuz"]
    srec = store.records.set_record("boot/r")
    assert srec is not None and srec.state == "published" and srec.current == 2
    assert (root / "boot/r-initrd.img").read_bytes() == I1
    rec = store.records.record("boot/r-initrd.img")
    assert rec is not None and rec.generation == 2 and rec.set == "boot/r"
