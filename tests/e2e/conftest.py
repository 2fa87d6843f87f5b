"""Fixtures of the network-boot suite: the lab (namespace + servers), the kernel, the boot sets.

The lab is built once per session and torn down at its end, also when a test or the build fails:
every process is stopped with its process group and the namespace is deleted. SIGTERM is turned
into KeyboardInterrupt while the suite runs, so a killed pytest still cleans up.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .bootkit import (
    BOOT_IPXE,
    IPXE_ROM,
    OVMF_CODE,
    OVMF_VARS,
    SNPONLY_EFI,
    Lab,
    LabError,
    debian_kernel,
    run_directory,
    sha256_file,
)

TOOLS = {  # what the lab runs -> the Debian package that brings it (scripts/system-deps)
    "qemu-system-x86_64": "qemu-system-x86",
    "dnsmasq": "dnsmasq-base",
    "ip": "iproute2",
    "ss": "iproute2",
    "nginx": "nginx-light",
    "curl": "curl",
    "dpkg-deb": "dpkg",
    "apt-get": "apt",
}
FILES = {
    IPXE_ROM: "ipxe-qemu",
    OVMF_CODE: "ovmf",
    OVMF_VARS: "ovmf",
    SNPONLY_EFI: "ipxe",
    Path("/bin/busybox"): "busybox-static",
}

_timings: list[Any] = []


def _which(tool: str) -> str | None:
    return shutil.which(tool) or next(
        (p for p in (f"/usr/sbin/{tool}", f"/sbin/{tool}") if os.access(p, os.X_OK)), None)


@pytest.fixture(scope="session")
def e2e_prerequisites() -> None:
    if os.geteuid() != 0:
        pytest.skip("the network-boot suite needs root (network namespaces, tap devices)")
    missing = sorted({pkg for tool, pkg in TOOLS.items() if _which(tool) is None}
                     | {pkg for path, pkg in FILES.items() if not path.exists()})
    if missing:
        pytest.fail(f"missing Debian packages for the e2e suite: {' '.join(missing)} "
                    "(scripts/system-deps installs them)", pytrace=False)
    if not Path("/dev/net/tun").exists():
        pytest.fail("/dev/net/tun is missing: QEMU cannot attach to the lab's bridge",
                    pytrace=False)


@pytest.fixture(scope="session")
def kernel(e2e_prerequisites: None) -> Path:
    """Debian's kernel image, extracted from its linux-image package (cached in .cache/e2e)."""
    try:
        path, _package = debian_kernel()
    except LabError as exc:
        pytest.fail(f"could not get Debian's kernel: {exc}", pytrace=False)
    return path


@pytest.fixture(scope="session")
def kernel_sha256(kernel: Path) -> str:
    return sha256_file(kernel)


@pytest.fixture(scope="session")
def lab(e2e_prerequisites: None) -> Iterator[Lab]:
    """The namespace with dnsmasq, nginx (the mirror) and tftproxy, and the shared boot files.

    The first-stage files are published through the API like any other: ``e2e/boot.ipxe``
    (what iPXE is told to load) and ``e2e/snponly.efi`` (iPXE for UEFI firmware).
    """
    previous = signal.getsignal(signal.SIGTERM)

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    if previous in (signal.SIG_DFL, None):
        signal.signal(signal.SIGTERM, interrupt)
    the_lab = Lab(run_directory())
    try:
        try:
            the_lab.start()
            url = the_lab.mirror_put("e2e/boot.ipxe", BOOT_IPXE.encode())
            the_lab.publish("e2e/", url, sha256_file(the_lab.www / "e2e/boot.ipxe"))
            url = the_lab.mirror_put("e2e/snponly.efi", SNPONLY_EFI)
            the_lab.publish("e2e/", url, sha256_file(SNPONLY_EFI))
        except LabError as exc:
            pytest.fail(f"the boot lab could not be built: {exc}\n(logs in {the_lab.dir})",
                        pytrace=False)
        yield the_lab
    finally:
        the_lab.close()
        _timings.extend(the_lab.timings)
        with contextlib.suppress(ValueError, TypeError):
            signal.signal(signal.SIGTERM, previous)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _timings:
        return
    terminalreporter.section("network boots (QEMU)")
    terminalreporter.write_line(f"logs, serial consoles and packets: {_timings[0].run_dir}")
    for t in _timings:
        state = "booted" if t.ok else "NO MARKER"
        terminalreporter.write_line(f"{t.test:<22} {t.firmware:<5} {t.seconds:7.1f} s  {state}")
