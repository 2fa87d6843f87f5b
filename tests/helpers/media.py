"""Real installation media for the archive tests, built from Debian's own packages.

* ``netboot.tar.gz``: the tree of ``debian-installer-12-netboot-amd64`` packed as Debian packs
  its netboot.tar.gz (names ``./debian-installer/amd64/linux``, top-level symlinks).
* an ISO made by ``xorriso`` holding ``shim-signed``'s ``shimx64.efi.signed`` (as
  ``EFI/BOOT/BOOTX64.EFI``), ``grub-efi-amd64-signed``'s ``grubnetx64.efi.signed`` (as
  ``EFI/BOOT/grubx64.efi``), a kernel and an initrd under ``images/pxeboot/``, and a
  ``.treeinfo`` whose ``[checksums]`` carry their sha256, as Red Hat's boot.iso does.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

DI_TREE = Path("/usr/lib/debian-installer/images/12/amd64/text")
DI_LINUX = DI_TREE / "debian-installer/amd64/linux"
SHIM = Path("/usr/lib/shim/shimx64.efi.signed")
GRUBNET = Path("/usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed")
PACKAGES = {DI_TREE: "debian-installer-12-netboot-amd64", SHIM: "shim-signed",
            GRUBNET: "grub-efi-amd64-signed"}

DEBIAN_FILES = {  # Foreman's Debian recipe: TFTP name (in the universe) -> member
    "linux": "debian-installer/amd64/linux",
    "initrd.gz": "debian-installer/amd64/initrd.gz",
    "grubx64.efi": "debian-installer/amd64/grubx64.efi",
    "shimx64.efi": "debian-installer/amd64/bootnetx64.efi",
}
ISO_FILES = {  # Foreman's Red Hat recipe
    "grubx64.efi": "EFI/BOOT/grubx64.efi",
    "shimx64.efi": "EFI/BOOT/BOOTX64.EFI",
    "vmlinuz": "images/pxeboot/vmlinuz",
    "initrd.img": "images/pxeboot/initrd.img",
}
ALIASES = {"boot.efi": "grubx64.efi", "boot-sb.efi": "shimx64.efi"}


def missing_packages() -> list[str]:
    out = [pkg for path, pkg in PACKAGES.items() if not path.exists()]
    if shutil.which("xorriso") is None:
        out.append("xorriso")
    return out


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def netboot_tgz(dest: Path, tree: Path = DI_TREE) -> Path:
    """The d-i tree as Debian's netboot.tar.gz (gzip level 1: the members are compressed)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(dest, "w:gz", compresslevel=1) as tar:
        for entry in sorted(tree.iterdir()):
            tar.add(entry, arcname=f"./{entry.name}")
    return dest


def iso_tree(dest: Path, kernel: Path, initrd: Path, *, grub: Path = GRUBNET,
             shim: Path = SHIM, checksums: dict[str, str] | None = None) -> Path:
    """A boot.iso-like tree: EFI/BOOT, images/pxeboot and a .treeinfo with sha256 sums.

    ``checksums`` overrides what the .treeinfo says (a tampered or respun medium).
    """
    files = {"EFI/BOOT/BOOTX64.EFI": shim, "EFI/BOOT/grubx64.efi": grub,
             "images/pxeboot/vmlinuz": kernel, "images/pxeboot/initrd.img": initrd}
    for rel, src in files.items():
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dest / rel)
    sums = {rel: sha256(dest / rel) for rel in files if rel.startswith("images/")}
    sums.update(checksums or {})
    lines = ["[header]", "type = productmd.treeinfo", "version = 1.2", "[general]",
             "family = tftproxy-test", "[checksums]",
             *(f"{rel} = sha256:{digest}" for rel, digest in sorted(sums.items()))]
    (dest / ".treeinfo").write_text("\n".join(lines) + "\n")
    return dest


def make_iso(tree: Path, dest: Path, *, names: str = "rock ridge") -> Path:
    """``xorriso`` writes the image: Rock Ridge and Joliet (as distributions do), Joliet only,
    or plain ISO 9660 names."""
    rr = "on" if names == "rock ridge" else "off"
    joliet = "on" if names in ("rock ridge", "joliet") else "off"
    dest.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(dest)
    subprocess.run(["xorriso", "-rockridge", rr, "-joliet", joliet, "-outdev", str(dest),
                    "-volid", "TFTPROXY", "-map", str(tree), "/"],
                   check=True, capture_output=True, timeout=120)
    return dest
