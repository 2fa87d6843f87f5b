"""Fetches through the API are checked against the distribution's checksums served by nginx."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

from tests.helpers.nginx import Nginx
from tftproxy.jobs.status import status_report
from tftproxy.store import BootStore

K1, I1 = b"kernel 9.4 " * 2000, b"initrd 9.4 " * 5000
K2, I2 = b"kernel 9.5 " * 2100, b"initrd 9.5 " * 5100
TREE = "rocky/9/BaseOS/x86_64/os"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def publish_tree(nginx: Nginx, kernel: bytes, initrd: bytes, listed: dict[str, bytes]) -> None:
    """A Red Hat style tree: .treeinfo at the root, its [checksums] naming ``listed``."""
    nginx.put(f"{TREE}/images/pxeboot/vmlinuz", kernel, mtime=time.time())
    nginx.put(f"{TREE}/images/pxeboot/initrd.img", initrd, mtime=time.time())
    checksums = "".join(f"images/pxeboot/{n} = sha256:{sha(d)}\n" for n, d in listed.items())
    nginx.put(f"{TREE}/.treeinfo", (
        "[header]\ntype = productmd.treeinfo\nversion = 1.2\n\n"
        "[release]\nname = Rocky Linux\nshort = Rocky\nversion = 9.4\n\n"
        "[tree]\narch = x86_64\nplatforms = x86_64\n\n"
        "[images-x86_64]\nkernel = images/pxeboot/vmlinuz\ninitrd = images/pxeboot/initrd.img\n\n"
        f"[checksums]\n{checksums}").encode())


async def fetch_both(proxy, nginx: Nginx) -> list[tuple[int, object]]:
    out = []
    for f in ("vmlinuz", "initrd.img"):
        status, _, body = await proxy.fetch_boot_file(
            "boot/rocky9", nginx.url(f"{TREE}/images/pxeboot/{f}"))
        out.append((status, body))
    return out


async def test_a_verified_set_says_how_in_status(api, nginx: Nginx, root: Path) -> None:
    publish_tree(nginx, K1, I1, {"vmlinuz": K1, "initrd.img": I1})
    proxy = await api()
    assert [s for s, _ in await fetch_both(proxy, nginx)] == [200, 200]
    report = status_report(BootStore(root, create=False))
    how = {f["name"]: f["current"]["verified"] for f in report["files"]}
    expected = f"sha256 matches .treeinfo at {nginx.url(TREE + '/.treeinfo')}"
    assert how == {"boot/rocky9-vmlinuz": expected, "boot/rocky9-initrd.img": expected}


async def test_a_mismatch_publishes_nothing_and_names_the_checksums(
    api, nginx: Nginx, root: Path
) -> None:
    publish_tree(nginx, K1, I1, {"vmlinuz": K1, "initrd.img": I1})
    proxy = await api()
    await fetch_both(proxy, nginx)
    # A mirror mid-sync: the new kernel is there, the manifest still lists the old one.
    publish_tree(nginx, K2, I2, {"vmlinuz": K1, "initrd.img": I2})
    status, _, body = await proxy.fetch_boot_file(
        "boot/rocky9", nginx.url(f"{TREE}/images/pxeboot/vmlinuz"))
    assert status == 502
    assert (f"boot/rocky9-vmlinuz: checksum mismatch for "
            f"{nginx.url(TREE + '/images/pxeboot/vmlinuz')}: .treeinfo at "
            f"{nginx.url(TREE + '/.treeinfo')} says sha256 {sha(K1)}, downloaded file has "
            f"{sha(K2)}; the mirror may be syncing, try again later") in body
    assert body.rstrip().endswith("previous version kept")
    assert (root / "boot/rocky9-vmlinuz").read_bytes() == K1
    assert (root / "boot/rocky9-initrd.img").read_bytes() == I1
    # Once the mirror has settled, the next request publishes the new pair.
    publish_tree(nginx, K2, I2, {"vmlinuz": K2, "initrd.img": I2})
    status, _, body = await proxy.fetch_boot_file(
        "boot/rocky9", nginx.url(f"{TREE}/images/pxeboot/vmlinuz"))
    assert (status, body["status"]) == (200, "published")
    assert (root / "boot/rocky9-initrd.img").read_bytes() == I2


async def test_a_manifest_naming_only_some_files(api, nginx: Nginx, root: Path) -> None:
    publish_tree(nginx, K1, I1, {"vmlinuz": K1})
    proxy = await api()
    assert [s for s, _ in await fetch_both(proxy, nginx)] == [200, 200]
    report = status_report(BootStore(root, create=False))
    how = {f["name"]: f["current"]["verified"] for f in report["files"]}
    assert how["boot/rocky9-vmlinuz"].startswith("sha256 matches .treeinfo")
    assert "not listed" in how["boot/rocky9-initrd.img"]
    strict = await api(verify="require")
    status, _, body = await strict.fetch_boot_file(
        "boot/strict", nginx.url(f"{TREE}/images/pxeboot/initrd.img"))
    assert status == 502 and "boot/strict-initrd.img" in body
    assert not (root / "boot/strict-initrd.img").exists()


async def test_no_manifest_is_fine_unless_required(api, nginx: Nginx, root: Path) -> None:
    nginx.put("plain/vmlinuz", K1)
    proxy = await api()
    status, _, _ = await proxy.fetch_boot_file("boot/p", nginx.url("plain/vmlinuz"))
    assert status == 200
    [entry] = status_report(BootStore(root, create=False))["files"]
    assert entry["current"]["verified"].startswith("no checksum manifest found")
    strict = await api(verify="require")
    status, _, body = await strict.fetch_boot_file("boot/q", nginx.url("plain/vmlinuz"))
    assert status == 502 and "boot/q-vmlinuz" in body and "nothing published" in body
    off = await api(verify="off")
    status, _, _ = await off.fetch_boot_file("boot/o", nginx.url("plain/vmlinuz"))
    assert status == 200
    # auto and require looked for a manifest; off did not.
    assert [s for _, s, _ in nginx.log_lines("/plain/.treeinfo")] == [404, 404]
