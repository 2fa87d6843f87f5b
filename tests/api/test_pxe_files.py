"""The host-config tree, atomic writes, and writes confined to the root, through the API."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from tests.api.conftest import ServedProxy
from tests.api.test_conformance import MAC, tree

HOST = "host-config/aa-bb-cc-dd-ee-ff"
NEW_PARAMS = {"targetos": "redhat", "release": "9.4", "arch": "x86_64", "bootfile_suffix": "x64"}


def links(root: Path, rel_dir: str) -> dict[str, str]:
    d = root / rel_dir
    return {e.name: os.readlink(e) for e in d.iterdir() if e.is_symlink()}


async def test_pxegrub2_host_tree_from_the_bootloader_universe(proxy) -> None:
    p: ServedProxy = await proxy()
    universe = p.root / "bootloader-universe/pxegrub2/redhat/9.4/x86_64"
    universe.mkdir(parents=True)
    for name in ("grubx64.efi", "shimx64.efi", "vmlinuz"):
        (universe / name).write_text(name)
    r = await p.foreman("POST", f"/tftp/PXEGrub2/{MAC}", {"pxeconfig": "cfg", **NEW_PARAMS})
    assert (r.status, r.text) == (200, "")
    grub = p.root / HOST / "grub2"
    for name in ("grub.cfg", "grub.cfg-01-aa-bb-cc-dd-ee-ff", "grub.cfg-aa:bb:cc:dd:ee:ff"):
        assert (grub / name).read_text() == "cfg"
        assert not (grub / name).is_symlink()
    assert links(p.root, f"{HOST}/grub2") == {
        "grubx64.efi": "../../../bootloader-universe/pxegrub2/redhat/9.4/x86_64/grubx64.efi",
        "shimx64.efi": "../../../bootloader-universe/pxegrub2/redhat/9.4/x86_64/shimx64.efi",
        "vmlinuz": "../../../bootloader-universe/pxegrub2/redhat/9.4/x86_64/vmlinuz",
    }
    assert (grub / "shimx64.efi").read_text() == "shimx64.efi"
    # The classic files are still written, for loaders that do not use the host tree.
    assert (p.root / "grub2/grub.cfg-01-aa-bb-cc-dd-ee-ff").read_text() == "cfg"


async def test_release_falls_back_to_default_then_to_grub2(proxy) -> None:
    p: ServedProxy = await proxy()
    default = p.root / "bootloader-universe/pxegrub2/debian/default/x86_64"
    default.mkdir(parents=True)
    (default / "grubx64.efi").write_text("g")
    params = {**NEW_PARAMS, "targetos": "debian", "release": "12"}
    r = await p.foreman("POST", f"/tftp/PXEGrub2/{MAC}", {"pxeconfig": "c", **params})
    assert r.status == 200
    assert links(p.root, f"{HOST}/grub2") == {
        "grubx64.efi": "../../../bootloader-universe/pxegrub2/debian/default/x86_64/grubx64.efi"}
    # Another OS without a universe: the links of the previous one must not linger.
    params = {**NEW_PARAMS, "targetos": "sles", "release": "15.5", "bootfile_suffix": "aa64"}
    r = await p.foreman("POST", f"/tftp/PXEGrub2/{MAC}", {"pxeconfig": "c", **params})
    assert r.status == 200
    assert links(p.root, f"{HOST}/grub2") == {
        "boot.efi": "../../../grub2/grubaa64.efi", "grubaa64.efi": "../../../grub2/grubaa64.efi",
        "boot-sb.efi": "../../../grub2/shimaa64.efi",
        "shimaa64.efi": "../../../grub2/shimaa64.efi",
    }


async def test_pxe_and_ipxe_links_and_per_variant_delete(proxy) -> None:
    p: ServedProxy = await proxy()
    for kind in ("PXELinux", "iPXE", "PXEGrub2"):
        r = await p.foreman("POST", f"/tftp/{kind}/{MAC}", {"pxeconfig": kind, **NEW_PARAMS})
        assert r.status == 200
    assert links(p.root, f"{HOST}/pxe") == {
        "01-aa-bb-cc-dd-ee-ff": "../../../pxelinux.cfg/01-aa-bb-cc-dd-ee-ff"}
    assert links(p.root, f"{HOST}/ipxe") == {
        "01-aa-bb-cc-dd-ee-ff": "../../../pxelinux.cfg/01-aa-bb-cc-dd-ee-ff.ipxe"}
    assert (p.root / HOST / "pxe/01-aa-bb-cc-dd-ee-ff").read_text() == "PXELinux"
    assert (p.root / HOST / "ipxe/01-aa-bb-cc-dd-ee-ff").read_text() == "iPXE"

    r = await p.foreman("DELETE", f"/tftp/PXEGrub2/{MAC}")
    assert r.status == 200
    assert not (p.root / HOST / "grub2").exists()
    assert (p.root / HOST / "pxe").is_dir(), "deleting one variant keeps the others' boot"
    for kind in ("PXELinux", "iPXE"):
        assert (await p.foreman("DELETE", f"/tftp/{kind}/{MAC}")).status == 200
    assert not (p.root / HOST).exists()
    assert (p.root / "host-config").is_dir()
    assert tree(p.root) == set()


async def test_pxegrub2_delete_removes_the_host_tree(proxy) -> None:
    p: ServedProxy = await proxy()
    r = await p.foreman("POST", f"/tftp/pxegrub2/{MAC}", {"pxeconfig": "c", **NEW_PARAMS})
    assert r.status == 200
    assert (p.root / HOST / "grub2/boot.efi").is_symlink()
    assert (await p.foreman("DELETE", f"/tftp/pxegrub2/{MAC}")).status == 200
    assert not (p.root / HOST).exists()
    assert tree(p.root) == set()


async def test_bad_host_parameters_are_400(proxy) -> None:
    p: ServedProxy = await proxy()
    context = "TFTP: Failed to setup host specific bootloader directory: "
    cases = [
        ({**NEW_PARAMS, "targetos": "../../etc"}, "parameter targetos '../../etc' must be"),
        ({**NEW_PARAMS, "arch": ".."}, "parameter arch '..' must be"),
        ({**NEW_PARAMS, "release": "9/4"}, "parameter release '9/4' must be"),
        ({"release": "9.4"}, "parameter(s) targetos, arch missing"),
    ]
    for params, reason in cases:
        r = await p.foreman("POST", f"/tftp/pxegrub2/{MAC}", {"pxeconfig": "c", **params})
        assert r.status == 400, params
        assert r.text.startswith(context + reason), r.text
    assert tree(p.root) == set()


async def test_writes_are_atomic_for_a_concurrent_reader(proxy) -> None:
    """A PXE client reading while Foreman rewrites sees the old or the new file, never a mix."""
    p: ServedProxy = await proxy()
    a, b = "A" * 400_000, "B" * 300_000
    assert (await p.foreman("POST", f"/tftp/pxelinux/{MAC}", {"pxeconfig": a})).status == 200
    target = p.root / "pxelinux.cfg/01-aa-bb-cc-dd-ee-ff"
    seen: set[str] = set()
    torn: list[int] = []
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            data = target.read_text()
            if data not in (a, b):
                torn.append(len(data))
            seen.add(data[:1])

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for i in range(30):
            r = await p.foreman("POST", f"/tftp/pxelinux/{MAC}", {"pxeconfig": (a, b)[i % 2]})
            assert r.status == 200
    finally:
        stop.set()
        thread.join()
    assert torn == []
    assert seen == {"A", "B"}
    assert tree(p.root) == {"pxelinux.cfg/01-aa-bb-cc-dd-ee-ff"}, "no temporary file is left"


async def test_writes_and_reads_stay_inside_the_root(proxy, tmp_path: Path) -> None:
    p: ServedProxy = await proxy()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "01-aa-bb-cc-dd-ee-ff").write_text("secret")
    (p.root / "pxelinux.cfg").symlink_to(outside)
    r = await p.foreman("POST", f"/tftp/pxelinux/{MAC}", {"pxeconfig": "evil"})
    assert r.status == 400
    assert r.text.strip() == ("TFTP: Failed to create pxe config file: pxelinux.cfg resolves "
                              "outside the TFTP root")
    r = await p.call("GET", f"/tftp/pxelinux/{MAC}")
    assert r.status == 400
    assert "secret" not in r.text
    r = await p.foreman("DELETE", f"/tftp/pxelinux/{MAC}")
    assert r.status == 400
    assert (outside / "01-aa-bb-cc-dd-ee-ff").read_text() == "secret"

    # A config file replaced by a link out of the root is not read either.
    (p.root / "grub2").mkdir()
    (p.root / "grub2/grub.cfg-01-aa-bb-cc-dd-ee-ff").symlink_to(outside / "01-aa-bb-cc-dd-ee-ff")
    r = await p.call("GET", f"/tftp/pxegrub2/{MAC}")
    assert r.status == 400
    assert "secret" not in r.text


async def test_a_directory_in_the_way_is_a_400_not_a_500(proxy) -> None:
    p: ServedProxy = await proxy()
    (p.root / "pxelinux.cfg/01-aa-bb-cc-dd-ee-ff").mkdir(parents=True)
    r = await p.foreman("POST", f"/tftp/pxelinux/{MAC}", {"pxeconfig": "x"})
    assert r.status == 400
    assert r.text.strip() == ("TFTP: Failed to create pxe config file: cannot write "
                              "pxelinux.cfg/01-aa-bb-cc-dd-ee-ff: is a directory")
    r = await p.foreman("DELETE", f"/tftp/pxelinux/{MAC}")
    assert r.status == 400
    assert "is a directory" in r.text
    (p.root / "grub2").write_text("a file where a directory should be")
    r = await p.foreman("POST", "/tftp/pxegrub2/create_default", {"menu": "x"})
    assert r.status == 400
    assert r.text.strip() == ("TFTP: Failed to create PXE default file: grub2 exists and is "
                              "not a directory")
