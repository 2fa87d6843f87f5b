"""Real firmware network-boots Debian's kernel through tftproxy (issue #6).

Each test publishes a boot set through ``POST /tftp/fetch_boot_file`` from nginx, as Foreman does,
boots a QEMU guest (TCG) from it, and passes only when the guest's /init prints the marker of
exactly the initrd and kernel arguments the test published, and powers the machine off.
The packets recorded on the lab's bridge show what the firmware asked and what tftproxy answered.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from .bootkit import (
    API_PORT,
    MIRROR,
    SERVER_IP,
    SNPONLY_EFI,
    Boot,
    Host,
    Initrd,
    Lab,
    Transfer,
    build_initrd,
    describe_failure,
    machine,
    sha256_file,
    wait_until,
)

pytestmark = pytest.mark.e2e

# Under TCG on 2 cores a BIOS boot takes 15-20 s and a UEFI boot 25-32 s (up to 31 s and 61 s
# with the other core busy); the limits leave room for a slower machine and bound a hung boot.
BIOS_TIMEOUT = 180.0
UEFI_TIMEOUT = 300.0
# Random bytes in the v2 initrd of the refresh test: a size no v1 initrd can have.
REFRESH_PAD = 64 * 1024

TFTP_BASE = f"tftp://{SERVER_IP}/"
HTTP_BASE = f"http://{SERVER_IP}:{API_PORT}/httpboot/"


@dataclass
class BootSet:
    """A kernel, an initrd and the host's iPXE config that loads them, as files to publish."""

    tag: str
    version: str
    host: Host
    kernel: Path
    kernel_sha256: str
    initrd: Initrd
    config: bytes
    prefix: str
    names: dict[str, str]

    @property
    def kernel_name(self) -> str:
        return f"{self.prefix}-vmlinuz"

    @property
    def initrd_name(self) -> str:
        return f"{self.prefix}-initrd.gz"

    @property
    def config_name(self) -> str:
        return f"pxelinux.cfg/{self.host.config_name}"


def prepare(lab: Lab, kernel: Path, kernel_sha256: str, host: Host, tag: str, version: str,
            *, base: str = TFTP_BASE, pad: int = 0) -> BootSet:
    """Build a boot set; publish() puts it on the mirror and through the API."""
    initrd = build_initrd(lab.dir / "build" / tag / version / "initrd.gz", label=version,
                          nonce=secrets.token_hex(6), pad_bytes=pad)
    # Foreman's prefix: boot/<medium>-<12 chars of a hash of the medium's URL>. It stays the
    # same when the medium's content changes, which is what a refresh is.
    medium = hashlib.sha256(f"{MIRROR}/{tag}".encode()).hexdigest()[:12]
    prefix = f"boot/e2e-{tag}-{medium}"
    args = f"initrd=initrd.gz console=ttyS0 quiet panic=-1 e2e.version={version}"
    # initrd=initrd.gz names the initrd for the kernel's EFI stub (iPXE's EFI build hands it
    # over as a file of that name); a BIOS boot ignores it.
    config = (f"#!ipxe\n"
              f"echo tftproxy-e2e: {tag} boot set {version}\n"
              f"kernel {base}{prefix}-vmlinuz {args}\n"
              f"initrd --name initrd.gz {base}{prefix}-initrd.gz\n"
              f"boot\n").encode()
    return BootSet(tag, version, host, kernel, kernel_sha256, initrd, config, prefix, {})


def publish(lab: Lab, bs: BootSet, *, config: bool = True) -> None:
    """Put the files on the mirror, then fetch them in Foreman's order: kernel, initrd.

    Then the host's config (``config=False`` refreshes only the boot set, as Foreman does when
    a medium's content changes).
    """
    kernel_url = lab.mirror_put(f"{bs.tag}/vmlinuz", bs.kernel)
    initrd_url = lab.mirror_put(f"{bs.tag}/initrd.gz", bs.initrd.path)
    bs.names = {
        "kernel": lab.publish(bs.prefix, kernel_url, bs.kernel_sha256),
        "initrd": lab.publish(bs.prefix, initrd_url, bs.initrd.sha256),
    }
    assert bs.names == {"kernel": bs.kernel_name, "initrd": bs.initrd_name}
    if config:
        config_url = lab.mirror_put(f"{bs.tag}/{bs.host.config_name}", bs.config)
        bs.names["config"] = lab.publish("pxelinux.cfg/", config_url,
                                         hashlib.sha256(bs.config).hexdigest())
        assert bs.names["config"] == bs.config_name


def boot(lab: Lab, name: str, host: Host, firmware: str, timeout: float) -> Boot:
    with machine(lab, name, host, firmware) as vm:
        return vm.start(limit=timeout + 60).wait(timeout)


def assert_booted(lab: Lab, result: Boot, bs: BootSet) -> None:
    """The guest ran exactly this boot set's /init with this boot set's arguments, then halted."""
    if result.marker is None:
        pytest.fail(describe_failure(lab, result), pytrace=False)
    assert result.marker == {
        "nonce": bs.initrd.nonce,
        "initrd": bs.version,
        "cmdline": bs.version,
        "pad": bs.initrd.pad_sha256 or "none",
    }, f"the guest booted something else than boot set {bs.version}: {result.marker}"
    assert result.exited, "the guest printed the marker but did not power off"


def ipxe_loaded(result: Boot, url: str) -> bool:
    """iPXE's own report on the console: ``<url>... ok`` (progress may come in between).

    After the last file the kernel takes the serial port over at once and may swallow the
    ``k``: an ``o`` followed by the kernel's terminal reset (ESC c) is the same report.
    """
    return re.search(re.escape(url) + r"\.\.\.[^\n]{0,300}?\bo(?:k\b|(?=\x1bc))",
                     result.serial) is not None


def one_transfer(transfers: list[Transfer], name: str) -> Transfer:
    """The complete read of ``name``; there must be exactly one."""
    reads = [t for t in transfers if t.file == name]
    complete = [t for t in reads if t.complete]
    assert len(complete) == 1, f"expected one complete TFTP read of {name}, saw {reads}"
    return complete[0]


def assert_ipxe_read(tr: Transfer, size: int) -> None:
    """iPXE asks for blksize 1432 and tsize 0; tftproxy grants both and sends every byte."""
    assert tr.opts.get("blksize") == "1432", tr
    assert tr.opts.get("tsize") == "0", tr
    assert tr.oack is not None, f"no OACK for {tr.file}: {tr}"
    assert tr.oack.get("blksize") == "1432", tr
    assert tr.oack.get("tsize") == str(size), tr
    assert tr.size == size, tr


# ------------------------------------------------------------------------------------ tests


def test_bios_ipxe_boots_linux_over_tftp(lab: Lab, kernel: Path, kernel_sha256: str) -> None:
    """Legacy BIOS + iPXE ROM: DHCP, chain script, host config, kernel and initrd over TFTP."""
    host = lab.new_host()
    bs = prepare(lab, kernel, kernel_sha256, host, "bios", "v1")
    publish(lab, bs)

    result = boot(lab, "bios", host, "bios", BIOS_TIMEOUT)

    assert_booted(lab, result, bs)
    reads = lab.capture.transfers(host.ip, result.started)
    assert [t.file for t in reads if t.complete] == [
        "e2e/boot.ipxe", bs.config_name, bs.kernel_name, bs.initrd_name]
    assert_ipxe_read(one_transfer(reads, bs.kernel_name), kernel.stat().st_size)
    assert_ipxe_read(one_transfer(reads, bs.initrd_name), bs.initrd.size)
    assert all(not t.errors for t in reads), reads
    assert ipxe_loaded(result, f"{TFTP_BASE}{bs.kernel_name}"), result.serial[-2000:]
    assert ipxe_loaded(result, f"{TFTP_BASE}{bs.initrd_name}"), result.serial[-2000:]


def test_uefi_ovmf_boots_linux_over_tftp(lab: Lab, kernel: Path, kernel_sha256: str) -> None:
    """OVMF's own PXE client (size probe, windowsize 4) loads iPXE, which loads Linux."""
    host = lab.new_host()
    bs = prepare(lab, kernel, kernel_sha256, host, "uefi", "v1")
    publish(lab, bs)

    result = boot(lab, "uefi", host, "uefi", UEFI_TIMEOUT)

    assert_booted(lab, result, bs)
    reads = lab.capture.transfers(host.ip, result.started)
    efi = [t for t in reads if t.file == "e2e/snponly.efi"]
    size = SNPONLY_EFI.stat().st_size
    assert len(efi) >= 2, f"expected OVMF's size probe and then the read: {efi}"
    probe, read = efi[0], efi[-1]
    # The size probe: tsize 0 with blksize 1468 and windowsize 4; tftproxy's OACK gives the size;
    # OVMF aborts with ERROR 8 (option negotiation) and allocates a buffer of exactly that size.
    assert probe.opts.get("tsize") == "0", probe
    assert probe.opts.get("blksize") == "1468", probe
    assert probe.opts.get("windowsize") == "4", probe
    assert probe.oack is not None, probe
    assert probe.oack.get("tsize") == str(size), probe
    assert [(who, code) for who, code, _ in probe.errors] == [("client", 8)], probe
    assert probe.size == 0, f"data was sent after the OACK of the size probe: {probe}"
    # The read: a window of 4 blocks of 1468 bytes, every byte of the file, no error.
    assert read.oack is not None, read
    assert read.oack.get("blksize") == "1468", read
    assert read.oack.get("windowsize") == "4", f"tftproxy did not grant windowsize 4: {read}"
    assert read.size == size, read
    assert read.complete, read
    # Then iPXE (running on the firmware's network driver) reads the boot set.
    assert_ipxe_read(one_transfer(reads, bs.kernel_name), kernel.stat().st_size)
    assert_ipxe_read(one_transfer(reads, bs.initrd_name), bs.initrd.size)


def test_refresh_during_boot_boots_one_version(lab: Lab, kernel: Path,
                                               kernel_sha256: str) -> None:
    """The boot set is refreshed while a machine boots from it: it still boots, all of v1.

    v1 and v2 of the set ``boot/e2e-refresh-<hash>`` differ in both members: v2's kernel is
    Debian's with a 64 KiB trailer (a different file that still boots), v2's initrd has another
    marker and size. The refresh is posted once the kernel is on the wire and is complete
    before the kernel's transfer ends, so
    - the kernel transfer must go on with v1's bytes (a swap may not tear a file), and
    - the initrd, requested after the switch, must still be v1's: a machine that loaded the v1
      kernel must not get the v2 initrd (a mixed pair).
    The marker shows which initrd and kernel arguments the guest booted; the bytes on the wire
    show which kernel it was sent. A machine that starts after the refresh gets all of v2.
    """
    host, later_host = lab.new_host(), lab.new_host()
    kernel_v2 = lab.dir / "build" / "refresh" / "vmlinuz-v2"
    kernel_v2.parent.mkdir(parents=True, exist_ok=True)
    kernel_v2.write_bytes(kernel.read_bytes() + b"tftproxy-e2e v2 " * 4096)
    v1 = prepare(lab, kernel, kernel_sha256, host, "refresh", "v1")
    v2 = prepare(lab, kernel_v2, sha256_file(kernel_v2), later_host, "refresh", "v2",
                 pad=REFRESH_PAD)
    assert v1.prefix == v2.prefix
    assert v1.initrd.size != v2.initrd.size
    publish(lab, v1)

    with machine(lab, "refresh-v1", host, "bios") as vm:
        vm.start(limit=BIOS_TIMEOUT + 60)
        assert vm.proc is not None

        def kernel_under_way() -> Transfer | None:
            reads = [t for t in lab.capture.transfers(host.ip, vm.started)
                     if t.file == v1.kernel_name and t.data_packets >= 10]
            return reads[-1] if reads else None

        wait_until(f"the guest to start reading {v1.kernel_name}", kernel_under_way,
                   BIOS_TIMEOUT, proc=vm.proc)
        refresh_started = time.time()
        publish(lab, v2, config=False)  # same names, new content, as one new generation
        refreshed = time.time()
        result = vm.wait(BIOS_TIMEOUT)

    if result.marker is None:
        pytest.fail(describe_failure(lab, result), pytrace=False)
    reads = lab.capture.transfers(host.ip, result.started)
    k = one_transfer(reads, v1.kernel_name)
    i = one_transfer(reads, v1.initrd_name)
    sent_kernel = {kernel.stat().st_size: "v1", kernel_v2.stat().st_size: "v2"}.get(k.size, "?")
    booted = (f"kernel {sent_kernel} ({k.size} bytes sent), initrd {result.marker['initrd']}, "
              f"arguments {result.marker['cmdline']}")
    print(f"refresh took {refreshed - refresh_started:.2f}s; kernel on the wire "
          f"{k.first_data and k.first_data - refresh_started:+.2f}s to "
          f"{k.last_data and k.last_data - refresh_started:+.2f}s; initrd asked at "
          f"{i.start - refresh_started:+.2f}s; booted {booted}")
    assert (sent_kernel, result.marker["initrd"]) == ("v1", "v1"), (
        f"mixed or wrong boot set: the guest booted {booted}; every part must be v1")
    assert_booted(lab, result, v1)
    assert k.first_data is not None
    assert k.last_data is not None
    assert k.first_data < refresh_started, k
    assert k.last_data > refreshed, (
        f"the kernel's transfer ended {refreshed - k.last_data:.2f}s before the refresh was "
        "done: this run did not overlap them")
    assert i.start > refreshed, (
        f"the initrd was asked for {refreshed - i.start:.2f}s before the refresh was done: "
        "this run did not test the pair")
    assert_ipxe_read(k, kernel.stat().st_size)  # v1's kernel, whole
    assert_ipxe_read(i, v1.initrd.size)  # v1's initrd (the marker says so too)

    # A machine that starts after the refresh boots v2: its kernel, its initrd, its arguments.
    publish(lab, v2)  # the set is unchanged by now; this adds the later host's config
    after = boot(lab, "refresh-v2", later_host, "bios", BIOS_TIMEOUT)
    assert_booted(lab, after, v2)
    reads = lab.capture.transfers(later_host.ip, after.started)
    assert_ipxe_read(one_transfer(reads, v2.kernel_name), kernel_v2.stat().st_size)
    assert_ipxe_read(one_transfer(reads, v2.initrd_name), v2.initrd.size)


def test_bios_ipxe_boots_linux_over_httpboot(lab: Lab, kernel: Path,
                                             kernel_sha256: str) -> None:
    """iPXE loads the kernel and initrd from GET /httpboot/<name> on the API port."""
    host = lab.new_host()
    bs = prepare(lab, kernel, kernel_sha256, host, "http", "v1", base=HTTP_BASE)
    publish(lab, bs)

    result = boot(lab, "httpboot", host, "bios", BIOS_TIMEOUT)

    assert_booted(lab, result, bs)
    reads = lab.capture.transfers(host.ip, result.started)
    assert [t.file for t in reads if t.complete] == ["e2e/boot.ipxe", bs.config_name], (
        f"the kernel and initrd must come over HTTP, not TFTP: {reads}")
    connects = lab.capture.tcp_connects(host.ip, f"{SERVER_IP}:{API_PORT}", result.started)
    # iPXE keeps the connection open between the two files, so one connection may carry both.
    assert connects >= 1, "the guest never connected to the API port"
    assert ipxe_loaded(result, f"{HTTP_BASE}{bs.kernel_name}"), result.serial[-2000:]
    assert ipxe_loaded(result, f"{HTTP_BASE}{bs.initrd_name}"), result.serial[-2000:]


def test_a_machine_booting_during_the_first_fetch_waits_for_its_files(
        lab: Lab, kernel: Path, kernel_sha256: str) -> None:
    """Foreman answered (202 counts as done) and the host boots while its kernel's first
    version is still downloading: tftproxy holds the kernel's TFTP request and answers it,
    whole, the moment the kernel is published, and the machine boots.

    The kernel comes from a mirror that stalls half-way until the test opens a gate: the
    gate opens once the guest's request for the kernel is on the wire and unanswered.
    """
    host = lab.new_host()
    bs = prepare(lab, kernel, kernel_sha256, host, "first", "v1")
    gate = lab.dir / "gate-open"
    mirror = lab.spawn_gated_mirror(gate)
    kernel_url = lab.mirror_put(f"gated/{bs.tag}/vmlinuz", bs.kernel).replace(MIRROR, mirror)
    initrd_url = lab.mirror_put(f"{bs.tag}/initrd.gz", bs.initrd.path)
    config_url = lab.mirror_put(f"{bs.tag}/{bs.host.config_name}", bs.config)
    assert lab.publish("pxelinux.cfg/", config_url,
                       hashlib.sha256(bs.config).hexdigest()) == bs.config_name
    names: dict[str, str] = {}

    def foreman_fetches() -> None:  # in Foreman's order, each request after the previous one
        names["kernel"] = lab.publish(bs.prefix, kernel_url, bs.kernel_sha256)
        names["initrd"] = lab.publish(bs.prefix, initrd_url, bs.initrd.sha256)

    fetching = threading.Thread(target=foreman_fetches, name="foreman-fetches", daemon=True)
    fetching.start()
    wait_until("the kernel's first fetch to be under way",
               lambda: lab.file_state(bs.kernel_name) == "fetching (first version)", 60)

    with machine(lab, "first-fetch", host, "bios") as vm:
        vm.start(limit=BIOS_TIMEOUT + 60)
        assert vm.proc is not None

        def kernel_asked() -> Transfer | None:
            reads = [t for t in lab.capture.transfers(host.ip, vm.started)
                     if t.file == bs.kernel_name]
            return reads[0] if reads else None

        asked = wait_until(f"the guest to ask for {bs.kernel_name}", kernel_asked,
                           BIOS_TIMEOUT, proc=vm.proc)
        time.sleep(2.0)  # held, not refused: no ERROR and no DATA while the fetch stalls
        early = [t for t in lab.capture.transfers(host.ip, vm.started)
                 if t.file == bs.kernel_name]
        assert all(not t.errors and not t.data_packets for t in early), early
        assert lab.file_state(bs.kernel_name) == "fetching (first version)"
        gate.write_text("open\n")
        opened = time.time()
        result = vm.wait(BIOS_TIMEOUT)
    fetching.join(120)

    assert_booted(lab, result, bs)
    assert names == {"kernel": bs.kernel_name, "initrd": bs.initrd_name}
    reads = lab.capture.transfers(host.ip, result.started)
    k = one_transfer(reads, bs.kernel_name)
    assert asked.start < opened, "the guest asked before the kernel existed"
    assert k.first_data is not None and k.first_data > opened, k
    assert_ipxe_read(k, kernel.stat().st_size)  # the whole kernel, once published
    assert_ipxe_read(one_transfer(reads, bs.initrd_name), bs.initrd.size)
    assert all(not t.errors for t in reads if t.file == bs.kernel_name), reads
    print(f"kernel asked at {asked.start - opened:+.2f}s, gate opened at 0, first DATA at "
          f"{k.first_data - opened:+.2f}s")
