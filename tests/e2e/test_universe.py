"""UEFI Secure Boot through a bootloader universe that tftproxy extracted from an ISO (issue 14).

The ISO is real media built by xorriso from Debian's packages: Microsoft-signed shim
(shim-signed), Debian-signed network grub (grub-efi-amd64-signed) and Debian-signed kernel
(debian-installer-12-netboot-amd64), the suite's busybox initrd, and a .treeinfo with their
sha256. nginx serves it; ``POST /tftp/fetch_and_process`` extracts it into
``bootloader-universe/pxegrub2/e2e/<release>/x86_64`` as Foreman's Red Hat recipe asks
(``boot.efi -> grubx64.efi``, ``boot-sb.efi -> shimx64.efi``), and ``POST /tftp/pxegrub2/<mac>``
with the ``universe_*`` parameters links the host's ``host-config/<mac>/grub2/`` to it.

DHCP gives the host ``host-config/<mac>/grub2/boot-sb.efi``: OVMF loads shim over tftproxy's
TFTP, shim loads and verifies ``grubx64.efi`` beside it, grub reads ``/grub/grub.cfg`` (its
built-in prefix), which chains the host's ``grub2/grub.cfg-<mac>``, which loads the kernel and
initrd of the universe over TFTP. The guest's /init prints the marker with what the kernel said
about Secure Boot. (Debian's signed network grub has no http module built in, and Secure Boot
forbids loading one, so this chain cannot take its kernel over HTTP.) With OVMF's enforcing firmware
(OVMF_CODE_4M.secboot.fd, Microsoft's keys in OVMF_VARS_4M.ms.fd) a universe whose grub lost
its signature is refused by shim.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import media

from .bootkit import (
    Host,
    Initrd,
    Lab,
    build_initrd,
    describe_failure,
    machine,
    run,
)

pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(bool(media.missing_packages()),
                                 reason=f"needs {' '.join(media.missing_packages())}")]

# Under TCG a shim -> grub -> kernel boot takes 20-40 s here (60 s with the other core busy).
TIMEOUT = 300.0
REFUSED = "Verification failed: (0x1A) Security Violation"

GRUB_CFG = """set timeout=0
serial --unit=0 --speed=115200
terminal_input serial console
terminal_output serial console
echo "tftproxy-e2e: grub from the universe, chaining grub2/grub.cfg-$net_default_mac"
configfile /grub2/grub.cfg-$net_default_mac
"""


@dataclass
class Universe:
    release: str
    directory: str
    iso_url: str
    initrd: Initrd
    kernel_sha256: str
    grub_sha256: str


@pytest.fixture(scope="module")
def routing_grub_cfg(lab: Lab) -> None:
    """grub's prefix is /grub: its grub.cfg chains the host's config, published as a boot file."""
    url = lab.mirror_put("e2e/grub/grub.cfg", GRUB_CFG.encode())
    lab.publish("grub/", url, hashlib.sha256(GRUB_CFG.encode()).hexdigest())


def extract_universe(lab: Lab, release: str, *, unsigned_grub: bool = False) -> Universe:
    """Build the ISO, put it on the mirror and have tftproxy extract its universe."""
    build = lab.dir / "build" / f"universe-{release}"
    initrd = build_initrd(build / "initrd.img", label=release, nonce=secrets.token_hex(6),
                          report_secureboot=True)
    grub = media.GRUBNET
    if unsigned_grub:
        grub = build / "grubx64-unsigned.efi"
        shutil.copyfile(media.GRUBNET, grub)
        run(["sbattach", "--remove", grub])
    tree = media.iso_tree(build / "tree", media.DI_LINUX, initrd.path, grub=grub)
    iso = media.make_iso(tree, build / "boot.iso")
    url = lab.mirror_put(f"e2e/{release}/images/boot.iso", iso)
    directory = f"bootloader-universe/pxegrub2/e2e/{release}/x86_64"
    body = {"extract": {
        "source": url, "destination": f"{directory}/boot.iso", "type": "iso",
        "files": {f"{directory}/{n}": m for n, m in media.ISO_FILES.items()},
        "symlinks": {f"{directory}/{a}": f"{directory}/{t}" for a, t in media.ALIASES.items()},
    }}
    status, text = lab.post_json("/tftp/fetch_and_process", body)
    assert status == 200, text
    assert json.loads(text)["status"] == "published", text
    return Universe(release, directory, url, initrd, media.sha256(media.DI_LINUX),
                    media.sha256(grub))


def host_config(lab: Lab, host: Host, uni: Universe) -> None:
    """The host's grub config and host-config/ links, as Foreman sends them."""
    base = f"/host-config/{host.mac.replace(':', '-')}/grub2"
    config = (f"set timeout=0\nmenuentry universe {{\n"
              f"  linux {base}/vmlinuz console=ttyS0 panic=-1 e2e.version={uni.release}\n"
              f"  initrd {base}/initrd.img\n}}\n")
    status, text = lab.curl(f"{lab.api_url}/tftp/pxegrub2/{host.mac}", check=False, form={
        "pxeconfig": config, "targetos": "e2e", "release": uni.release, "arch": "x86_64",
        "bootfile_suffix": "x64", "universe_archive": f"{uni.directory}/boot.iso",
        "universe_kernel": f"{uni.directory}/vmlinuz",
        "universe_initrd": f"{uni.directory}/initrd.img",
        "universe_source_digest": hashlib.sha256(uni.iso_url.encode()).hexdigest()})
    assert (status, text.strip()) == (200, ""), text


def boot_universe(lab: Lab, name: str, host: Host, firmware: str, uni: Universe,
                  secure: str) -> None:
    with machine(lab, name, host, firmware) as vm:
        result = vm.start(limit=TIMEOUT + 60).wait(TIMEOUT)
    if result.marker is None:
        pytest.fail(describe_failure(lab, result), pytrace=False)
    assert result.marker == {"nonce": uni.initrd.nonce, "initrd": uni.release,
                             "cmdline": uni.release, "pad": "none", "secureboot": secure}, (
        result.marker)
    here = f"host-config/{host.mac.replace(':', '-')}/grub2"
    reads = lab.capture.transfers(host.ip, result.started)
    complete = {t.file.lstrip("/"): t.size for t in reads if t.complete}
    # shim over TFTP, then grub beside it: both the universe's bytes.
    assert complete.get(f"{here}/boot-sb.efi") == media.SHIM.stat().st_size, reads
    assert complete.get(f"{here}/grubx64.efi") == media.GRUBNET.stat().st_size, reads
    assert "grub/grub.cfg" in complete, reads
    assert "tftproxy-e2e: grub from the universe" in result.serial


@pytest.mark.usefixtures("routing_grub_cfg")
def test_secure_boot_chain_from_an_extracted_universe(lab: Lab) -> None:
    """Enforcing firmware: shim (Microsoft) -> grub (Debian) -> kernel (Debian), all from the
    universe tftproxy extracted, kernel and initrd over TFTP."""
    uni = extract_universe(lab, "sb")
    host = lab.new_universe_host()
    host_config(lab, host, uni)
    boot_universe(lab, "universe-sb", host, "uefi-sb", uni, "on")
    reads = {t.file.lstrip("/"): t.size for t in lab.capture.transfers(host.ip) if t.complete}
    here = f"host-config/{host.mac.replace(':', '-')}/grub2"
    assert reads.get(f"{here}/vmlinuz") == media.DI_LINUX.stat().st_size, reads
    assert reads.get(f"{here}/initrd.img") == uni.initrd.size, reads


@pytest.mark.usefixtures("routing_grub_cfg")
def test_secure_boot_off_boots_the_same_universe(lab: Lab) -> None:
    uni = extract_universe(lab, "nosb")
    host = lab.new_universe_host()
    host_config(lab, host, uni)
    boot_universe(lab, "universe-nosb", host, "uefi", uni, "off")


@pytest.mark.usefixtures("routing_grub_cfg")
def test_an_unsigned_grub_in_the_universe_is_refused(lab: Lab) -> None:
    uni = extract_universe(lab, "unsigned", unsigned_grub=True)
    assert uni.grub_sha256 != media.sha256(media.GRUBNET)
    host = lab.new_universe_host()
    host_config(lab, host, uni)
    with machine(lab, "universe-unsigned", host, "uefi-sb") as vm:
        seen = vm.start(limit=TIMEOUT + 60).wait_for_text(REFUSED, TIMEOUT)
        serial = vm.serial()
    assert seen is not None, f"shim did not refuse the unsigned grub:\n{serial[-3000:]}"
    assert "E2E-MARKER" not in serial
    here = f"host-config/{host.mac.replace(':', '-')}/grub2"
    reads = {t.file.lstrip("/"): t.size for t in lab.capture.transfers(host.ip) if t.complete}
    assert reads.get(f"{here}/grubx64.efi") == Path(
        lab.root / uni.directory / "grubx64.efi").stat().st_size, reads
