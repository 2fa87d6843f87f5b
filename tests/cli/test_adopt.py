"""A tree smart-proxy filled, taken over: unmanaged files listed, adopted, checked against
their source (nginx with a .treeinfo), and old ones cleaned up only when asked."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

from tests.cli.test_cli import tftproxy
from tests.helpers.nginx import Nginx
from tests.jobs.test_fetch_verified import TREE, publish_tree

KERNEL, INITRD = b"kernel 9.4 " * 2000, b"initrd 9.4 " * 5000


def smart_proxy_tree(root: Path) -> None:
    """What smart-proxy leaves: `curl --output` straight into boot/, and a host's config."""
    (root / "boot").mkdir()
    (root / "boot" / "rocky-AbC-vmlinuz").write_bytes(KERNEL)
    (root / "boot" / "rocky-AbC-initrd.img").write_bytes(INITRD)
    old = root / "boot" / "centos7-XyZ-vmlinuz"
    old.write_bytes(b"an old kernel" * 100)
    os.utime(old, (time.time() - 90 * 86400,) * 2)
    (root / "pxelinux.cfg").mkdir()
    (root / "pxelinux.cfg" / "01-52-54-00-aa-bb-cc").write_text(
        "DEFAULT linux\nLABEL linux\n KERNEL boot/rocky-AbC-vmlinuz\n"
        " APPEND initrd=boot/rocky-AbC-initrd.img\n")


def status(root: Path) -> dict:
    done = tftproxy("status", "--root", str(root), "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_plain_files_are_listed_then_adopted_as_one_boot_set(root: Path) -> None:
    smart_proxy_tree(root)
    before = status(root)
    assert [u["name"] for u in before["unmanaged"]] == [
        "boot/centos7-XyZ-vmlinuz", "boot/rocky-AbC-initrd.img", "boot/rocky-AbC-vmlinuz"]
    assert before["files"] == []
    assert "unmanaged (a plain file" in tftproxy("status", "--root", str(root), "--long").stdout

    done = tftproxy("adopt", "--root", str(root), "boot/rocky-AbC-vmlinuz",
                    "boot/rocky-AbC-initrd.img")
    assert done.returncode == 0, done.stderr
    assert "adopted: boot/rocky-AbC-vmlinuz: set boot/rocky-AbC" in done.stdout
    for name, data in (("boot/rocky-AbC-vmlinuz", KERNEL), ("boot/rocky-AbC-initrd.img", INITRD)):
        path = root / name
        assert path.is_symlink() and path.read_bytes() == data
        assert os.readlink(path).startswith("../.tftproxy/objects/")
    after = status(root)
    assert [u["name"] for u in after["unmanaged"]] == ["boot/centos7-XyZ-vmlinuz"]
    [rocky] = after["sets"]
    assert rocky["set"] == "boot/rocky-AbC"
    assert rocky["generations"][0]["members"] == {
        "boot/rocky-AbC-initrd.img": hashlib.sha256(INITRD).hexdigest(),
        "boot/rocky-AbC-vmlinuz": hashlib.sha256(KERNEL).hexdigest()}


def test_known_sources_verify_or_refetch(root: Path, nginx: Nginx) -> None:
    smart_proxy_tree(root)
    publish_tree(nginx, KERNEL, INITRD, {"vmlinuz": KERNEL, "initrd.img": INITRD})
    # The initrd smart-proxy left is truncated: curl was interrupted.
    (root / "boot" / "rocky-AbC-initrd.img").write_bytes(INITRD[: len(INITRD) // 2])
    url = nginx.url(f"{TREE}/images/pxeboot/")
    nginx.put("plain/vmlinuz", b"an old kernel" * 100)  # a source without any manifest
    done = tftproxy("adopt", "--root", str(root),
                    "--source", f"boot/rocky-AbC-vmlinuz={url}vmlinuz",
                    "--source", f"boot/rocky-AbC-initrd.img={url}initrd.img",
                    "--source", f"boot/centos7-XyZ-vmlinuz={nginx.url('plain/vmlinuz')}")
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert any(ln.startswith("verified: boot/rocky-AbC-vmlinuz: sha256 matches .treeinfo")
               for ln in lines), lines
    assert any(ln.startswith("refetched: boot/rocky-AbC-initrd.img: ") and "mismatch" in ln
               for ln in lines), lines
    assert any(ln.startswith("unchanged: boot/centos7-XyZ-vmlinuz: no checksum manifest")
               for ln in lines), lines
    assert (root / "boot" / "rocky-AbC-initrd.img").read_bytes() == INITRD
    files = {f["name"]: f for f in status(root)["files"]}
    assert files["boot/rocky-AbC-vmlinuz"]["current"]["verified"].startswith("sha256 matches")
    assert files["boot/rocky-AbC-initrd.img"]["current"]["source"] == url + "initrd.img"
    # The unverifiable one now has the validators nginx sent: the next check is a 304.
    assert files["boot/centos7-XyZ-vmlinuz"]["current"]["etag"]


def test_gc_removes_unreferenced_boot_files_only_when_asked(root: Path) -> None:
    smart_proxy_tree(root)
    assert tftproxy("adopt", "--root", str(root)).returncode == 0
    assert tftproxy("gc", "--root", str(root), "--grace", "3600").stdout.count("removed") == 0
    assert (root / "boot" / "centos7-XyZ-vmlinuz").exists()
    dry = tftproxy("gc", "--root", str(root), "--unreferenced", "--grace", "3600", "--dry-run")
    assert dry.stdout.splitlines()[0] == ("would remove boot/centos7-XyZ-vmlinuz: no PXE config "
                                          "names it")
    assert (root / "boot" / "centos7-XyZ-vmlinuz").exists()
    done = tftproxy("gc", "--root", str(root), "--unreferenced", "--grace", "3600")
    assert done.returncode == 0
    assert "removed boot/centos7-XyZ-vmlinuz" in done.stdout
    assert not (root / "boot" / "centos7-XyZ-vmlinuz").exists()
    # What a host's config boots stays.
    assert (root / "boot" / "rocky-AbC-vmlinuz").read_bytes() == KERNEL
    assert (root / "boot" / "rocky-AbC-initrd.img").read_bytes() == INITRD
