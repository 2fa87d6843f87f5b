"""No file-system work on the API's event loop: every store call goes through its threads.

A slow disk must delay the request that needs it, never every other request. An audit hook
(PEP 578) records the file-system events Python raises (open, listdir, scandir, rename,
remove, mkdir, symlink, chmod...) on the event loop's thread while the API answers real
requests over a socket: fetches (new, changed, up to date), status, the status page, prune,
job status, PXE configs written, read and deleted, HTTP boot, the log buffer, registration,
boot-set syncs.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tests.helpers.nginx import Nginx

WATCHED = frozenset({
    "open", "os.listdir", "os.scandir", "os.rename", "os.remove", "os.rmdir", "os.mkdir",
    "os.symlink", "os.link", "os.chmod", "os.chown", "os.truncate", "os.utime",
    "shutil.rmtree", "shutil.copyfile", "glob.glob",
})
_watch: dict[str, Any] = {"thread": None, "events": []}


def _hook(event: str, args: tuple[Any, ...]) -> None:
    if event in WATCHED and _watch["thread"] == threading.get_ident():
        _watch["events"].append(f"{event} {args[0] if args else ''}")


# An audit hook cannot be removed; it records nothing outside `on_this_thread`.
sys.addaudithook(_hook)


@contextmanager
def on_this_thread() -> Iterator[list[str]]:
    _watch["events"] = []
    _watch["thread"] = threading.get_ident()
    try:
        yield _watch["events"]
    finally:
        _watch["thread"] = None


MAC = "52:54:00:aa:bb:cc"


async def test_the_api_does_no_file_work_on_its_event_loop(api, nginx: Nginx) -> None:
    proxy = await api(gc_grace=0, sync_interval=0.2, sync_jitter=0, sync_idle_after=0)
    nginx.put("os/images/pxeboot/vmlinuz", b"kernel 1" * 1000)
    nginx.put("os/images/pxeboot/initrd.img", b"initrd 1" * 1000)
    url = nginx.url("os/images/pxeboot/vmlinuz")
    s = proxy.session

    async def call(method: str, path: str, **kwargs: Any) -> int:
        async with s.request(method, proxy.base + path, **kwargs) as resp:
            await resp.read()
            return resp.status

    # The client's own first connection is made before watching.
    assert await call("GET", "/features") == 200
    with on_this_thread() as events:
        assert (await proxy.fetch_boot_file("boot/c", url))[0] == 200
        assert (await proxy.fetch_boot_file("boot/c", nginx.url(
            "os/images/pxeboot/initrd.img")))[0] == 200
        assert (await proxy.fetch_boot_file("boot/c", url))[0] == 200  # up to date
    nginx.put("os/images/pxeboot/vmlinuz", b"kernel 2" * 1000, mtime=time.time() + 5)
    with on_this_thread() as changed:
        assert (await proxy.fetch_boot_file("boot/c", url))[0] == 200  # a new generation
        assert await call("GET", "/tftp/status") == 200
        # The status page: the report, the clean-up dry run and the template.
        assert await call("GET", "/") == 200
        assert await call("GET", "/status") == 200
        assert await call("POST", "/tftp/prune?age=1") == 200
        assert await call("GET", "/tftp/fetch_boot_file/0123456789abcdef") == 404
        assert await call("POST", f"/tftp/pxegrub2/{MAC}",
                          data={"pxeconfig": "menuentry x {}", "targetos": "rhel",
                                "arch": "x86_64"}) == 200
        assert await call("GET", f"/tftp/pxegrub2/{MAC}") == 200
        assert await call("POST", "/tftp/pxelinux/create_default",
                          data={"menu": "DEFAULT x"}) == 200
        assert await call("DELETE", f"/tftp/pxegrub2/{MAC}") == 200
        assert await call("GET", "/httpboot/boot/c-vmlinuz") == 200
        assert await call("HEAD", "/httpboot/boot/c-initrd.img") == 200
        assert await call("GET", "/httpboot/boot/missing") == 404
        assert await call("GET", "/EFI/boot/c-vmlinuz") == 200
        assert await call("GET", "/EFI/boot") == 403
        assert await call("GET", "/logs/?from_timestamp=1") == 200
        assert await call("GET", "/v2/features") == 200
        assert await call("GET", "/version") == 200
    nginx.put("os/images/pxeboot/initrd.img", b"initrd 2" * 1000, mtime=time.time() + 5)
    with on_this_thread() as synced:
        async with s.post(proxy.base + "/tftp/sync", data={"prefix": "boot/c"}) as resp:
            run = await resp.json()
        assert run["updated"] == 1  # a new generation, published by the sync
        assert await call("POST", "/tftp/sync") == 200  # every set, up to date
        assert await call("GET", run["url"]) == 200
    with on_this_thread() as background:
        proxy.files.sync.start()  # serve's background revalidation, every 0.2 s here
        for _ in range(300):
            if proxy.files.sync.counts["checked"] >= 4:
                break
            await asyncio.sleep(0.01)
    assert proxy.files.sync.counts["checked"] >= 4
    assert events == [] and changed == [] and synced == [] and background == []


async def test_archive_extraction_does_no_file_work_on_the_event_loop(api, nginx: Nginx,
                                                                      tmp_path) -> None:
    """fetch_and_process of a tgz and an ISO, new and then up to date: download, extraction
    (on a thread of its own), publishing and the universe check never touch a file on the loop."""
    import json

    from tests.helpers import media

    if media.missing_packages():
        import pytest

        pytest.skip(f"needs {' '.join(media.missing_packages())}")
    proxy = await api(gc_grace=0)
    tree = tmp_path / "tree"
    (tree / "d").mkdir(parents=True)
    (tree / "d/linux").write_bytes(b"kernel" * 1000)
    (tree / "d/grubx64.efi").write_bytes(b"grub" * 1000)
    nginx.put("m/netboot.tar.gz", media.netboot_tgz(tmp_path / "n.tgz", tree).read_bytes())
    nginx.put("m/boot.iso", media.make_iso(tree, tmp_path / "b.iso").read_bytes())
    u = "bootloader-universe/pxegrub2/os/1/x86_64"
    s = proxy.session
    async with s.get(proxy.base + "/features") as resp:
        await resp.read()

    async def extract(kind: str, archive: str) -> int:
        body = {"extract": {"source": nginx.url(f"m/{archive}"), "type": kind,
                            "destination": f"{u}/{archive}",
                            "files": {f"{u}/linux": "d/linux", f"{u}/grubx64.efi": "d/grubx64.efi"},
                            "symlinks": {f"{u}/boot.efi": f"{u}/grubx64.efi"}}}
        async with s.post(proxy.base + "/tftp/fetch_and_process", data=json.dumps(body),
                          headers={"Content-Type": "application/json"}) as resp:
            await resp.read()
            return resp.status

    with on_this_thread() as events:
        assert await extract("tgz", "netboot.tar.gz") == 200
        assert await extract("tgz", "netboot.tar.gz") == 200  # up to date
        assert await extract("iso", "boot.iso") == 200
        async with s.post(proxy.base + f"/tftp/pxegrub2/{MAC}", data={
                "pxeconfig": "x", "targetos": "os", "release": "1", "arch": "x86_64",
                "universe_archive": f"{u}/boot.iso", "universe_kernel": f"{u}/linux",
                "universe_initrd": f"{u}/linux",
                "universe_source_digest": "0" * 64}) as resp:
            assert resp.status == 409
    assert events == []


async def test_oci_fetches_do_no_file_work_on_the_event_loop(api, tmp_path) -> None:
    """From a registry that wants credentials: the auth file, staging and the store are read
    on threads; new, up to date, respun and already-stored layers alike."""
    import base64
    import json

    from tests.helpers.registry import Pusher, Registry

    registry = Registry(tmp_path / "registry", htpasswd={"u": "p"})
    try:
        pusher = Pusher(registry, tmp_path / "push", ("u", "p"), basic=True)
        pusher.push("os/netboot", "1", {"vmlinuz": b"k1" * 5000, "initrd.img": b"i1" * 5000})
        auth = tmp_path / "auth.json"
        auth.write_text(json.dumps({"auths": {registry.host: {
            "auth": base64.b64encode(b"u:p").decode()}}}))
        proxy = await api(oci_auth_file=auth)
        kernel, initrd = (registry.url("os/netboot:1", t) for t in ("vmlinuz", "initrd.img"))
        with on_this_thread() as events:
            for prefix, url in (("boot/o", kernel), ("boot/o", initrd), ("boot/o", kernel),
                                ("boot/p", kernel)):
                status, _, body = await proxy.fetch_boot_file(prefix, url)
                assert status == 200, body
            # The push is the test's own file work: on a thread, not watched.
            await asyncio.to_thread(pusher.push, "os/netboot", "1",
                                    {"vmlinuz": b"k2" * 5000, "initrd.img": b"i2" * 5000})
            status, _, body = await proxy.fetch_boot_file("boot/o", kernel)
            assert (status, body["status"]) == (200, "published"), body
        assert events == []
    finally:
        registry.stop()


def test_the_hook_sees_file_work_on_the_watched_thread(tmp_path) -> None:
    """The check above can fail: the same hook catches a plain open() on this thread."""
    with on_this_thread() as events:
        (tmp_path / "x").write_text("x")
    assert any(e.startswith("open ") for e in events)
