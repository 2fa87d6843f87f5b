"""The network-boot lab: real firmware, a real kernel, real servers, one private network.

Everything runs inside a network namespace the lab creates (``tftproxy-e2e-<pid>``), on the
documentation network 192.0.2.0/24 that exists nowhere but there:

    QEMU (SeaBIOS + iPXE ROM, or OVMF) --tap--> br0 192.0.2.1
        dnsmasq          DHCP only (DNS off): points the firmware at tftproxy's TFTP server
        tftproxy serve   HTTP API on 192.0.2.1:8000 (fetch_boot_file, /httpboot), TFTP on :69
        nginx            the "installation mirror" Foreman fetches from, 127.0.0.1:8080
        tftpcap.py       records TFTP and HTTP-connection packets on br0 for the assertions

Nothing here is a mock: the kernel is Debian's, extracted from its package at test time; the
initrd is busybox-static with a tiny /init that prints a marker on the serial console and
powers the machine off. Every process is started in its own process group and stopped with it;
the namespace is deleted at the end, whatever happened.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.helpers import media

PROJECT = Path(__file__).resolve().parents[2]
CACHE = PROJECT / ".cache" / "e2e"
VENV_BIN = Path(sys.executable).parent

SUBNET = "192.0.2"  # TEST-NET-1 (RFC 5737): routed nowhere, used only inside the namespace
SERVER_IP = f"{SUBNET}.1"
SERVER_IP6 = "2001:db8:e2e::1"  # documentation prefix; only for the router advertisement below
API_PORT = 8000
MIRROR = "http://127.0.0.1:8080"  # nginx, on the namespace's own loopback

OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
# Secure Boot enforced: the SMM build, and variables with Microsoft's 2011 CAs enrolled.
OVMF_CODE_SB = Path("/usr/share/OVMF/OVMF_CODE_4M.secboot.fd")
OVMF_VARS_SB = Path("/usr/share/OVMF/OVMF_VARS_4M.ms.fd")
SNPONLY_EFI = Path("/usr/lib/ipxe/snponly.efi")
IPXE_ROM = Path("/usr/lib/ipxe/qemu/efi-virtio.rom")
BUSYBOX = Path("/bin/busybox")

# Upper bound on the life of any server the lab starts (QEMU gets its boot's own limit).
DAEMON_LIMIT = 3600.0

MARKER = "E2E-MARKER"
MARKER_RE = re.compile(rf"{MARKER} ((?:\w+=\S+ ?)+)")


class LabError(RuntimeError):
    """The lab could not be built; the message says which piece and why."""


# --------------------------------------------------------------------------- processes


def run(argv: Sequence[str | os.PathLike[str]], *, timeout: float = 120.0, check: bool = True,
        cwd: Path | None = None, input: bytes | None = None) -> subprocess.CompletedProcess[str]:
    """Run a command to completion with a time limit; raise with its output when it fails."""
    try:
        proc = subprocess.run([str(a) for a in argv], capture_output=True, timeout=timeout,
                              cwd=cwd, input=input, check=False)
    except subprocess.TimeoutExpired as exc:
        raise LabError(f"{' '.join(map(str, argv))} did not finish in {timeout:.0f}s") from exc
    out = subprocess.CompletedProcess(proc.args, proc.returncode,
                                      proc.stdout.decode("utf-8", "replace"),
                                      proc.stderr.decode("utf-8", "replace"))
    if check and out.returncode != 0:
        raise LabError(f"{' '.join(map(str, argv))} failed ({out.returncode}): "
                       f"{out.stderr.strip() or out.stdout.strip()}")
    return out


class Proc:
    """A background process in its own process group, whose output goes to a log file."""

    def __init__(self, name: str, argv: Sequence[str | os.PathLike[str]], log: Path,
                 env: dict[str, str] | None = None) -> None:
        self.name = name
        self.argv = [str(a) for a in argv]
        self.log = log
        with open(log, "ab") as out:
            out.write(f"$ {' '.join(self.argv)}\n".encode())
            out.flush()
            self.popen = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=out,
                                          stderr=subprocess.STDOUT, start_new_session=True,
                                          env=env)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, grace: float = 5.0) -> int | None:
        """SIGTERM the whole group, then SIGKILL what is left after ``grace`` seconds."""
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(grace)
        # The leader may be gone while children of its group live on: kill the group anyway.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(5)
        return self.popen.returncode

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def wait_until(what: str, predicate: Any, timeout: float, interval: float = 0.1,
               proc: Proc | None = None) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail clearly on timeout or death."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if proc is not None and not proc.alive():
            raise LabError(f"{proc.name} exited ({proc.popen.returncode}) while waiting for "
                           f"{what}; its log ({proc.log}):\n{proc.log_tail()}")
        if time.monotonic() > deadline:
            tail = f"; log of {proc.name}:\n{proc.log_tail()}" if proc else ""
            raise LabError(f"timed out after {timeout:.0f}s waiting for {what}{tail}")
        time.sleep(interval)


# ---------------------------------------------------------------------------- the namespace


class Netns:
    """A network namespace holding a bridge ``br0`` at 192.0.2.1/24, and the taps of the VMs."""

    PREFIX = "tftproxy-e2e-"

    def __init__(self) -> None:
        self.name = f"{self.PREFIX}{os.getpid()}"
        self._remove_stale()
        if self.name in self.list():
            self.destroy()
        run(["ip", "netns", "add", self.name])
        try:
            for argv in (
                ["ip", "link", "set", "lo", "up"],
                ["ip", "link", "add", "br0", "type", "bridge"],
                ["ip", "addr", "add", f"{SERVER_IP}/24", "dev", "br0"],
                ["ip", "-6", "addr", "add", f"{SERVER_IP6}/64", "dev", "br0", "nodad"],
                ["ip", "link", "set", "br0", "up"],
            ):
                self.run(argv)
        except BaseException:
            self.destroy()
            raise

    @classmethod
    def list(cls) -> list[str]:
        out = run(["ip", "netns", "list"], check=False).stdout
        return [line.split()[0] for line in out.splitlines() if line.strip()]

    @classmethod
    def _remove_stale(cls) -> None:
        """Delete empty namespaces left by an earlier run of this suite that was killed."""
        for name in cls.list():
            if not name.startswith(cls.PREFIX):
                continue
            pid = name[len(cls.PREFIX):]
            if pid.isdigit() and not Path(f"/proc/{pid}").exists():
                pids = run(["ip", "netns", "pids", name], check=False).stdout.split()
                if not pids:
                    run(["ip", "netns", "del", name], check=False)

    def argv(self, argv: Sequence[str | os.PathLike[str]]) -> list[str]:
        return ["ip", "netns", "exec", self.name, *map(str, argv)]

    def run(self, argv: Sequence[str | os.PathLike[str]], **kw: Any
            ) -> subprocess.CompletedProcess[str]:
        return run(self.argv(argv), **kw)

    def add_tap(self, tap: str) -> None:
        self.run(["ip", "tuntap", "add", "dev", tap, "mode", "tap"])
        self.run(["ip", "link", "set", tap, "master", "br0"])
        self.run(["ip", "link", "set", tap, "up"])

    def del_tap(self, tap: str) -> None:
        self.run(["ip", "link", "del", tap], check=False)

    def udp_listening(self, addr: str, port: int) -> bool:
        out = self.run(["ss", "-Hlun", f"sport = :{port}"], check=False).stdout
        return f"{addr}:{port}" in out or f"*:{port}" in out or f"0.0.0.0:{port}" in out

    def destroy(self) -> None:
        # Our processes are stopped by their owners first; anything still inside was started by
        # this lab too (the namespace is ours alone), so it goes with the namespace.
        pids = run(["ip", "netns", "pids", self.name], check=False).stdout.split()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)
        run(["ip", "netns", "del", self.name], check=False)


# ------------------------------------------------------------------------------ the kernel


def _newest_kernel_package() -> str:
    """linux-image-<abi>-amd64 that Debian's linux-image-amd64 points at (apt's newest)."""
    def ask() -> str | None:
        out = run(["apt-cache", "depends", "linux-image-amd64"], check=False).stdout
        found = re.findall(r"Depends: (linux-image-[0-9][^\s]*-amd64)\b", out)
        if found:
            return found[0]
        out = run(["apt-cache", "search", "--names-only", r"^linux-image-[0-9.]+-[0-9]+-amd64$"],
                  check=False).stdout
        names = [line.split()[0] for line in out.splitlines() if line.strip()]

        def key(name: str) -> list[int]:
            return [int(n) for n in re.findall(r"\d+", name)]

        return max(names, key=key) if names else None

    name = ask()
    if name is None:
        run(["apt-get", "update", "-qq"], timeout=300)
        name = ask()
    if name is None:
        raise LabError("apt knows no linux-image-*-amd64 package: is this Debian amd64?")
    return name


def debian_kernel(cache: Path = CACHE) -> tuple[Path, str]:
    """Debian's kernel (``boot/vmlinuz-*`` of a linux-image .deb), fetched once and cached.

    ``apt-get download`` from Debian's archive is the only network access; the .deb is unpacked
    with dpkg-deb at test time and only the kernel image is kept. Set
    TFTPROXY_E2E_KERNEL_PACKAGE to pin a package name.
    """
    package = os.environ.get("TFTPROXY_E2E_KERNEL_PACKAGE") or _newest_kernel_package()
    dest_dir = cache / "kernel" / package
    kernel = dest_dir / "vmlinuz"
    if kernel.is_file() and kernel.stat().st_size > 1_000_000:
        return kernel, package
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="kernel-", dir=cache) as tmp_name:
        tmp = Path(tmp_name)
        os.chmod(tmp, 0o755)  # apt drops to _apt for downloads where it can
        got = run(["apt-get", "download", package], cwd=tmp, timeout=600, check=False)
        if got.returncode != 0:
            run(["apt-get", "update", "-qq"], timeout=300)
            run(["apt-get", "download", package], cwd=tmp, timeout=600)
        debs = sorted(tmp.glob(f"{package}_*.deb"))
        if not debs:
            raise LabError(f"apt-get download {package} left no .deb in {tmp}")
        unpacked = tmp / "x"
        unpacked.mkdir()
        run(["bash", "-o", "pipefail", "-c",
             'dpkg-deb --fsys-tarfile "$1" | tar -x -C "$2" --wildcards "./boot/vmlinuz-*"',
             "extract", debs[0], unpacked], timeout=300)
        images = sorted((unpacked / "boot").glob("vmlinuz-*"))
        if not images:
            raise LabError(f"{debs[0].name} holds no boot/vmlinuz-*")
        dest_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(images[0], tmp / "vmlinuz.part")
        (dest_dir / "SOURCE").write_text(f"{debs[0].name} {images[0].name}\n")
        os.replace(tmp / "vmlinuz.part", kernel)
    return kernel, package


# ------------------------------------------------------------------------------ the initrd


def _is_static_elf(path: Path) -> bool:
    """True for an ELF executable without a program interpreter (needs no shared libraries)."""
    with open(path, "rb") as f:
        head = f.read(64)
        if head[:4] != b"\x7fELF" or head[4] != 2:
            return False
        phoff, = struct.unpack_from("<Q", head, 0x20)
        phentsize, phnum = struct.unpack_from("<HH", head, 0x36)
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    return all(struct.unpack_from("<I", table, i * phentsize)[0] != 3 for i in range(phnum))


def cpio_newc(entries: Sequence[tuple[str, int, bytes, tuple[int, int]]]) -> bytes:
    """An archive in the kernel's initramfs format (cpio "newc"): (name, mode, data, rdev)."""
    out = io.BytesIO()

    def pad(n: int) -> None:
        out.write(b"\0" * (-n % 4))

    for ino, (name, mode, data, (major, minor)) in enumerate(
            [*entries, ("TRAILER!!!", 0, b"", (0, 0))], start=1):
        raw_name = name.encode() + b"\0"
        fields = (ino, mode, 0, 0, 1, 0, len(data), 0, 0, major, minor, len(raw_name), 0)
        header = b"070701" + b"".join(b"%08x" % f for f in fields)
        out.write(header + raw_name)
        pad(len(header) + len(raw_name))
        out.write(data)
        pad(len(data))
    return out.getvalue()


INIT_SCRIPT = """#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
cmdline=none
for arg in $(cat /proc/cmdline); do
  case "$arg" in e2e.version=*) cmdline="${{arg#e2e.version=}}";; esac
done
pad=none
[ -f /pad.bin ] && pad=$(sha256sum /pad.bin | cut -d' ' -f1)
{pre}echo "{marker} nonce={nonce} initrd={label} cmdline=$cmdline pad=$pad{fields}"
poweroff -f
"""
# What the kernel said about Secure Boot ("secureboot: Secure boot enabled" or "disabled").
SECUREBOOT_PRE = ("sb=unknown\n"
                  "dmesg | grep -q 'Secure boot enabled' && sb=on\n"
                  "dmesg | grep -q 'Secure boot disabled' && sb=off\n")


@dataclass(frozen=True)
class Initrd:
    path: Path
    label: str
    nonce: str
    sha256: str
    size: int
    pad_sha256: str | None


def build_initrd(dest: Path, *, label: str, nonce: str, pad_bytes: int = 0,
                 report_secureboot: bool = False) -> Initrd:
    """A gzipped initramfs: busybox-static and an /init that prints the marker, then powers off.

    ``pad_bytes`` of random data go into /pad.bin; /init prints their sha256, so the test can
    tell exactly which bytes the machine booted with.
    """
    if not BUSYBOX.is_file() or not _is_static_elf(BUSYBOX):
        raise LabError(f"{BUSYBOX} is missing or not statically linked: install busybox-static")
    init = INIT_SCRIPT.format(marker=MARKER, nonce=nonce, label=label,
                              pre=SECUREBOOT_PRE if report_secureboot else "",
                              fields=" secureboot=$sb" if report_secureboot else "").encode()
    entries: list[tuple[str, int, bytes, tuple[int, int]]] = [
        ("bin", 0o40755, b"", (0, 0)),
        ("dev", 0o40755, b"", (0, 0)),
        ("dev/console", 0o20600, b"", (5, 1)),  # the kernel's first console, no mknod needed
        ("proc", 0o40755, b"", (0, 0)),
        ("bin/busybox", 0o100755, BUSYBOX.read_bytes(), (0, 0)),
        ("init", 0o100755, init, (0, 0)),
    ]
    pad_sha = None
    if pad_bytes:
        pad = os.urandom(pad_bytes)
        pad_sha = hashlib.sha256(pad).hexdigest()
        entries.append(("pad.bin", 0o100644, pad, (0, 0)))
    data = gzip.compress(cpio_newc(entries), compresslevel=1 if pad_bytes else 6, mtime=0)
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(data)
    return Initrd(dest, label, nonce, hashlib.sha256(data).hexdigest(), len(data), pad_sha)


def sha256_file(path: Path) -> str:
    return media.sha256(path)


# ---------------------------------------------------------------------------- the capture


@dataclass
class Transfer:
    """One TFTP read as seen on the wire."""

    file: str
    client: str
    opts: dict[str, str]
    start: float
    server: str | None = None
    oack: dict[str, str] | None = None
    errors: list[tuple[str, int, str]] = field(default_factory=list)  # (who, code, message)
    blocks: dict[int, int] = field(default_factory=dict)
    data_packets: int = 0
    first_data: float | None = None
    last_data: float | None = None

    @property
    def size(self) -> int:
        return sum(self.blocks.values())

    @property
    def blksize(self) -> int:
        return int((self.oack or {}).get("blksize", 512))

    @property
    def complete(self) -> bool:
        return any(n < self.blksize for n in self.blocks.values()) and not self.errors

    def __repr__(self) -> str:
        return (f"<{self.file} from {self.client} opts={self.opts} oack={self.oack} "
                f"errors={self.errors} bytes={self.size} complete={self.complete}>")


class Capture:
    """Reads what tftpcap.py recorded, incrementally."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self._events: list[dict[str, Any]] = []

    def events(self) -> list[dict[str, Any]]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self._offset)
                chunk = f.read()
        except FileNotFoundError:
            return self._events
        end = chunk.rfind(b"\n") + 1
        for line in chunk[:end].splitlines():
            with contextlib.suppress(ValueError):
                self._events.append(json.loads(line))
        self._offset += end
        return self._events

    def transfers(self, client_ip: str, since: float = 0.0) -> list[Transfer]:
        current: dict[str, Transfer] = {}
        out: list[Transfer] = []
        for ev in self.events():
            if ev.get("t", 0) < since or ev["op"] in ("START", "TCP-SYN"):
                continue
            src, dst = ev["src"], ev["dst"]
            if ev["op"] == "RRQ":
                if not src.startswith(client_ip + ":"):
                    continue
                tr = Transfer(ev["file"], src, ev["opts"], ev["t"])
                current[src] = tr
                out.append(tr)
                continue
            if dst in current:
                tr = current[dst]
                tr.server = tr.server or src
                if ev["op"] == "OACK":
                    tr.oack = ev["opts"]
                elif ev["op"] == "DATA":
                    tr.blocks[ev["block"]] = ev["len"]
                    tr.data_packets += 1
                    tr.first_data = tr.first_data or ev["t"]
                    tr.last_data = ev["t"]
                elif ev["op"] == "ERROR":
                    tr.errors.append(("server", ev["code"], ev["msg"]))
            elif src in current and ev["op"] == "ERROR":
                current[src].errors.append(("client", ev["code"], ev["msg"]))
        return out

    def tcp_connects(self, client_ip: str, dst: str, since: float = 0.0) -> int:
        return sum(1 for ev in self.events()
                   if ev["op"] == "TCP-SYN" and ev.get("t", 0) >= since
                   and ev["src"].startswith(client_ip + ":") and ev["dst"] == dst)


# ------------------------------------------------------------------------------- services


def _free_of_outer_settings() -> dict[str, str]:
    """The environment for our servers, without the caller's TFTPROXY_* settings."""
    return {k: v for k, v in os.environ.items() if not k.startswith("TFTPROXY_")}


def write_nginx_conf(base: Path, www: Path) -> Path:
    (base / "tmp").mkdir(parents=True, exist_ok=True)
    conf = base / "nginx.conf"
    conf.write_text(f"""
worker_processes 1;
daemon off;
master_process off;
pid {base}/nginx.pid;
error_log {base}/error.log warn;
events {{ worker_connections 256; }}
http {{
  log_format t '$msec $request_method $uri $status $body_bytes_sent';
  access_log {base}/access.log t;
  client_body_temp_path {base}/tmp; proxy_temp_path {base}/tmp;
  fastcgi_temp_path {base}/tmp; uwsgi_temp_path {base}/tmp; scgi_temp_path {base}/tmp;
  default_type application/octet-stream;
  server {{
    listen {MIRROR.removeprefix("http://")};
    root {www};
  }}
}}
""")
    return conf


def write_dnsmasq_conf(base: Path, hosts: Sequence[tuple[str, str]],
                      universe_hosts: Sequence[tuple[str, str]] = ()) -> Path:
    """DHCP only (port=0: no DNS). iPXE gets the chain script, UEFI firmware gets iPXE first.

    ``universe_hosts`` boot as Foreman points a host at its bootloader universe: their boot
    file is ``host-config/<mac>/grub2/boot-sb.efi`` (shim, then grub beside it).
    """
    conf = base / "dnsmasq.conf"
    lines = [
        "port=0",
        "interface=br0",
        "bind-interfaces",
        "no-resolv",
        "no-hosts",
        "dhcp-authoritative",
        "log-dhcp",
        f"dhcp-leasefile={base}/leases",
        f"dhcp-range={SUBNET}.100,{SUBNET}.199,255.255.255.0,1h",
        # iPXE announces itself in the user class: it gets the script that chains the host's
        # own config. Firmware that is not iPXE and asks for an EFI x64 boot file (client
        # architecture 7 or 9) gets iPXE's EFI build, which then asks again as iPXE.
        "dhcp-userclass=set:ipxe,iPXE",
        "dhcp-match=set:efi64,option:client-arch,7",
        "dhcp-match=set:efi64,option:client-arch,9",
        f"dhcp-boot=tag:!universe,tag:ipxe,e2e/boot.ipxe,,{SERVER_IP}",
        f"dhcp-boot=tag:!universe,tag:!ipxe,tag:efi64,e2e/snponly.efi,,{SERVER_IP}",
        f"dhcp-boot=tag:!universe,tag:!ipxe,tag:!efi64,e2e/boot.ipxe,,{SERVER_IP}",
        # shim reads its own path from the BOOTP file field to find grub beside it: keep the
        # name there, never moved into options (Secure Boot PXE recipe).
        "dhcp-no-override",
        # A router advertisement lets iPXE's IPv6 autoconfiguration finish at once instead of
        # waiting ~13 s for one before it runs the boot file (IPv4 is used for everything).
        "enable-ra",
        f"dhcp-range={SERVER_IP6.rsplit('::', 1)[0]}::,ra-only,64",
    ]
    lines += [f"dhcp-host={mac},{ip}" for mac, ip in hosts]
    for n, (mac, ip) in enumerate(universe_hosts):
        lines += [f"dhcp-host={mac},set:universe,set:u{n},{ip}",
                  f"dhcp-boot=tag:u{n},{HOST_CONFIG_BOOT.format(mac.replace(':', '-'))},,"
                  f"{SERVER_IP}"]
    conf.write_text("\n".join(lines) + "\n")
    return conf


HOST_CONFIG_BOOT = "host-config/{}/grub2/boot-sb.efi"

BOOT_IPXE = f"""#!ipxe
echo tftproxy-e2e: chaining the config of ${{mac:hexhyp}}
chain tftp://{SERVER_IP}/pxelinux.cfg/01-${{mac:hexhyp}}.ipxe
"""


@dataclass(frozen=True)
class Host:
    mac: str
    ip: str

    @property
    def config_name(self) -> str:
        """Where Foreman's iPXE variant puts a host's config: pxelinux.cfg/01-<mac>.ipxe."""
        return f"01-{self.mac.replace(':', '-')}.ipxe"


@dataclass
class BootTiming:
    test: str
    firmware: str
    seconds: float
    ok: bool
    run_dir: str


def run_directory(keep: int = 3) -> Path:
    """A new directory for one session's logs under .cache/e2e/runs; the oldest are pruned.

    Not pytest's tmp_path: other pytest sessions on the machine prune those within minutes.
    """
    runs = CACHE / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    old = sorted((p for p in runs.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime)
    for path in old[:max(0, len(old) - keep + 1)]:
        shutil.rmtree(path, ignore_errors=True)
    path = runs / f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    path.mkdir()
    return path


class Lab:
    """The namespace and its servers; ``publish`` goes through tftproxy's API as Foreman does."""

    def __init__(self, workdir: Path) -> None:
        self.dir = workdir
        self.root = workdir / "tftpboot"
        self.www = workdir / "mirror"
        self.procs: list[Proc] = []
        self.hosts = [Host(f"52:54:00:e2:e2:{i:02x}", f"{SUBNET}.{100 + i}") for i in range(1, 13)]
        self.universe_hosts = [Host(f"52:54:00:e2:e3:{i:02x}", f"{SUBNET}.{120 + i}")
                               for i in range(1, 7)]
        self._next_universe_host = 0
        self._next_host = 0
        self.timings: list[BootTiming] = []
        self.tftp_server = "?"
        self.netns: Netns | None = None
        self.capture = Capture(workdir / "capture.jsonl")
        self.api_url = f"http://{SERVER_IP}:{API_PORT}"

    # -- lifecycle

    def start(self) -> None:
        for d in (self.root, self.www):
            d.mkdir(parents=True, exist_ok=True)
        self.netns = ns = Netns()
        (self.dir / "NETNS").write_text(ns.name + "\n")
        cap = self._spawn("tftpcap", [sys.executable, Path(__file__).with_name("tftpcap.py"),
                                      "br0", self.capture.path, "--max-seconds", "1800"])
        wait_until("the packet capture", lambda: self.capture.path.exists(), 10, proc=cap)
        dns_conf = write_dnsmasq_conf(self.dir, [(h.mac, h.ip) for h in self.hosts],
                                      [(h.mac, h.ip) for h in self.universe_hosts])
        dns = self._spawn("dnsmasq", [
            "dnsmasq", "--keep-in-foreground", "--user=root", "--group=root",
            f"--conf-file={dns_conf}",
            f"--log-facility={self.dir / 'dnsmasq.log'}", f"--pid-file={self.dir / 'dnsmasq.pid'}",
        ])
        wait_until("dnsmasq on br0:67", lambda: ns.udp_listening("0.0.0.0%br0", 67)
                   or ns.udp_listening("0.0.0.0", 67), 15, proc=dns)
        nginx = self._spawn("nginx", ["nginx", "-c", write_nginx_conf(self.dir / "nginx",
                                                                       self.www),
                                      "-p", self.dir / "nginx"])
        (self.www / "ping").write_text("pong\n")
        wait_until("nginx", lambda: self.curl(f"{MIRROR}/ping", check=False)[0] == 200, 15,
                   proc=nginx)
        self._start_tftproxy()

    def _start_tftproxy(self) -> None:
        assert self.netns is not None
        tftproxy = str(VENV_BIN / "tftproxy")
        if not os.access(tftproxy, os.X_OK):
            raise LabError(f"{tftproxy} not found: run `make test` (it installs the venv)")
        serve = [tftproxy, "serve", "--root", self.root, "--listen", f"{SERVER_IP}:{API_PORT}"]
        tftp_listen = f"{SERVER_IP}:69"
        # auto: `serve --tftp-listen` (one process, as deployed) when the CLI has it, else the
        # separate `tftproxy tftpd`; "serve" or "tftpd" force one; "in.tftpd" is tftpd-hpa.
        choice = os.environ.get("TFTPROXY_E2E_TFTPD", "auto")
        if choice == "auto":
            serve_help = run([tftproxy, "serve", "--help"], check=False).stdout
            has_tftpd = run([tftproxy, "tftpd", "--help"], check=False).returncode == 0
            choice = "serve" if "--tftp-listen" in serve_help else "tftpd" if has_tftpd else ""
        env = _free_of_outer_settings()
        if choice == "in.tftpd":
            # Only to tell a harness problem from a server problem; never the default.
            self.tftp_server = "in.tftpd (tftpd-hpa, reference)"
            api = self._spawn("tftproxy-api", serve, env=env)
            tftp = self._spawn("in.tftpd", ["in.tftpd", "--foreground", "--address", tftp_listen,
                                            "--secure", "--verbose", self.root])
        elif choice == "serve":
            self.tftp_server = "tftproxy serve --tftp-listen"
            api = tftp = self._spawn("tftproxy", [*serve, "--tftp-listen", tftp_listen], env=env)
        elif choice == "tftpd":
            self.tftp_server = "tftproxy tftpd"
            api = self._spawn("tftproxy-api", serve, env=env)
            tftp = self._spawn("tftproxy-tftpd", [tftproxy, "tftpd", "--root", self.root,
                                                  "--listen", tftp_listen], env=env)
        else:
            raise LabError("tftproxy has no TFTP server yet: neither `tftproxy serve "
                           "--tftp-listen` nor `tftproxy tftpd` exists")
        wait_until("tftproxy's HTTP API", lambda: self.curl(f"{self.api_url}/version",
                                                            check=False)[0] > 0, 30, proc=api)
        ns = self.netns
        wait_until(f"a TFTP server on {tftp_listen}", lambda: ns.udp_listening(SERVER_IP, 69),
                   30, proc=tftp)

    def close(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()
        if self.netns is not None:
            self.netns.destroy()
        # What the mirror served and the built files are large and made anew each run.
        for bulky in (self.www, self.dir / "build"):
            shutil.rmtree(bulky, ignore_errors=True)
        (self.dir / "timings.json").write_text(
            json.dumps([t.__dict__ for t in self.timings], indent=1))

    def _spawn(self, name: str, argv: Sequence[str | os.PathLike[str]],
               env: dict[str, str] | None = None, limit: float = DAEMON_LIMIT) -> Proc:
        """Start a process in the namespace, in its own process group, for ``limit`` s at most.

        The limit (coreutils' timeout) bounds it even if pytest itself is killed with SIGKILL
        and no teardown runs.
        """
        assert self.netns is not None
        bounded = ["timeout", "--kill-after=5", f"{limit:.0f}", *map(str, argv)]
        proc = Proc(name, self.netns.argv(bounded), self.dir / f"{name}.log", env=env)
        self.procs.append(proc)
        return proc

    def proc(self, name: str) -> Proc:
        return next(p for p in self.procs if p.name == name)

    def new_host(self) -> Host:
        host = self.hosts[self._next_host]
        self._next_host += 1
        return host

    def new_universe_host(self) -> Host:
        """A host whose DHCP boot file is its host-config/<mac>/grub2/boot-sb.efi."""
        host = self.universe_hosts[self._next_universe_host]
        self._next_universe_host += 1
        return host

    # -- HTTP from inside the namespace

    def curl(self, url: str, *, form: dict[str, str] | None = None, check: bool = True,
             timeout: float = 90.0) -> tuple[int, str]:
        """(status, body) of a request made inside the namespace; status 0 if it failed."""
        assert self.netns is not None
        argv = ["curl", "-sS", "--max-time", str(int(timeout)), "-H", "Accept: json",
                "-o", "-", "-w", "\n%{http_code}"]
        for key, value in (form or {}).items():
            argv += ["--data-urlencode", f"{key}={value}"]
        out = self.netns.run([*argv, url], check=False, timeout=timeout + 10)
        body, _, code = out.stdout.rpartition("\n")
        status = int(code) if code.strip().isdigit() else 0
        if check and not 200 <= status < 300:
            raise LabError(f"{url} answered {status}: {body.strip() or out.stderr.strip()}")
        return status, body

    def post_json(self, path: str, body: Any, timeout: float = 300.0) -> tuple[int, str]:
        """POST a JSON body to tftproxy's API from inside the namespace."""
        assert self.netns is not None
        data = self.dir / "post.json"
        data.write_text(json.dumps(body))
        out = self.netns.run(["curl", "-sS", "--max-time", str(int(timeout)), "-H",
                              "Content-Type: application/json", "--data-binary", f"@{data}",
                              "-o", "-", "-w", "\n%{http_code}", f"{self.api_url}{path}"],
                             check=False, timeout=timeout + 10)
        body_text, _, code = out.stdout.rpartition("\n")
        return (int(code) if code.strip().isdigit() else 0), body_text

    # -- the mirror and publishing

    def mirror_put(self, relpath: str, data: bytes | Path) -> str:
        """Place a file on the mirror (atomically: nginx never serves half of one); its URL."""
        dest = self.www / relpath
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.tmp")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        if isinstance(data, Path):
            try:
                os.link(data, tmp)  # the kernel is large and never changes: share it
            except OSError:
                shutil.copyfile(data, tmp)
        else:
            tmp.write_bytes(data)
        os.replace(tmp, dest)
        return f"{MIRROR}/{relpath}"

    def publish(self, prefix: str, url: str, expect_sha256: str) -> str:
        """POST /tftp/fetch_boot_file as Foreman does; check the answer and the published file.

        Returns the published name (``prefix-basename``, or ``prefix + basename`` for a
        prefix ending in /).
        """
        status, body = self.curl(f"{self.api_url}/tftp/fetch_boot_file",
                                 form={"prefix": prefix, "path": url}, check=False)
        if status == 202:  # still downloading after fetch_wait: follow the job
            job_url = self.api_url + json.loads(body)["url"]

            def finished() -> dict[str, Any] | None:
                job = json.loads(self.curl(job_url)[1])
                return job if job.get("state") != "running" else None

            result = wait_until(f"fetch job {job_url}", finished, 300, interval=0.5)["result"]
        elif status == 200:
            result = json.loads(body) if body.strip() else {}
        else:
            raise LabError(f"POST /tftp/fetch_boot_file prefix={prefix} path={url} answered "
                           f"{status}: {body.strip()}\n{self.proc_log_tail('tftproxy')}")
        base = url.rsplit("/", 1)[-1]
        name = prefix + base if prefix.endswith("/") else f"{prefix}-{base}"
        if result.get("name") not in (None, name) or result.get("sha256") not in (
                None, expect_sha256):
            raise LabError(f"fetch of {url} answered {result}, expected {name} {expect_sha256}")
        path = self.root / name
        got = sha256_file(path) if path.exists() else None
        if got != expect_sha256:
            raise LabError(f"after the fetch, {path} holds sha256 {got}, not {expect_sha256}")
        return name

    def proc_log_tail(self, name: str, lines: int = 30) -> str:
        for proc in self.procs:
            if proc.name.startswith(name):
                return f"--- {proc.log}:\n{proc.log_tail(lines)}"
        return ""


# -------------------------------------------------------------------------------- machines


@dataclass
class Boot:
    """What one machine did: the marker's fields, the serial console, how long it took."""

    name: str
    firmware: str
    host: Host
    started: float
    seconds: float | None
    marker: dict[str, str] | None
    exited: bool
    serial: str
    serial_path: Path


def accel() -> list[str]:
    """TCG (software emulation), as on CI. TFTPROXY_E2E_ACCEL=kvm speeds up local runs."""
    return ["-accel", os.environ.get("TFTPROXY_E2E_ACCEL", "tcg")]


def timeout_scale() -> float:
    return float(os.environ.get("TFTPROXY_E2E_TIMEOUT_SCALE", "1"))


class Machine:
    """One QEMU guest on a tap in the lab's bridge, network-booting with real firmware."""

    def __init__(self, lab: Lab, name: str, host: Host, firmware: str) -> None:
        assert firmware in ("bios", "uefi", "uefi-sb")
        assert lab.netns is not None
        self.lab = lab
        self.name = name
        self.host = host
        self.firmware = firmware
        self.dir = lab.dir / f"vm-{name}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.serial_path = self.dir / "serial.log"
        self.monitor = self.dir / "monitor.sock"
        if len(str(self.monitor)) > 100:  # a unix socket's path has at most 107 bytes
            self.monitor = Path(tempfile.mkdtemp(prefix="e2e-")) / "monitor.sock"
        self.tap = f"tap{host.ip.rsplit('.', 1)[1]}"
        self.proc: Proc | None = None
        self.started = 0.0
        self.limit = 600.0

    def argv(self) -> list[str]:
        argv = [
            "qemu-system-x86_64", *accel(), "-name", f"tftproxy-e2e-{self.name}",
            "-m", "512", "-smp", "1", "-nodefaults", "-no-user-config",
            "-display", "none", "-vga", "std", "-no-reboot",
            "-serial", f"file:{self.serial_path}",
            "-monitor", f"unix:{self.monitor},server=on,wait=off",
            "-netdev", f"tap,id=n0,ifname={self.tap},script=no,downscript=no",
        ]
        if self.firmware == "bios":
            # SeaBIOS runs the NIC's option ROM: iPXE (Debian's ipxe-qemu, QEMU's default ROM
            # for virtio-net). If the boot fails, SeaBIOS reboots after 1 s and -no-reboot
            # ends QEMU, so a failure shows at once instead of at the timeout.
            # SeaBIOS's serial console (etc/sercon-port = 0x3f8) copies iPXE's screen to the
            # serial log, so its messages ("tftp://...  ok", errors) are there to read.
            sercon = self.dir / "sercon-port"
            sercon.write_bytes(struct.pack("<H", 0x3F8))
            argv += ["-machine", "pc", "-boot", "reboot-timeout=1000",
                     "-fw_cfg", f"name=etc/sercon-port,file={sercon}",
                     "-device", f"virtio-net-pci,netdev=n0,mac={self.host.mac},bootindex=1"]
        else:
            # OVMF with its own network stack (romfile= keeps iPXE's EFI ROM out): the
            # firmware's PXE client is the one that talks to tftproxy first.
            secure = self.firmware == "uefi-sb"
            code = OVMF_CODE_SB if secure else OVMF_CODE
            vars_copy = self.dir / "OVMF_VARS.fd"
            shutil.copyfile(OVMF_VARS_SB if secure else OVMF_VARS, vars_copy)
            if secure:
                # Enforced Secure Boot needs SMM and a write-protected variable store.
                argv += ["-global", "driver=cfi.pflash01,property=secure,value=on"]
            argv += ["-machine", "q35,smm=on" if secure else "q35",
                     "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={code}",
                     "-drive", f"if=pflash,format=raw,unit=1,file={vars_copy}",
                     "-device",
                     f"virtio-net-pci,netdev=n0,mac={self.host.mac},romfile=,bootindex=1"]
        return argv

    def start(self, limit: float = 600.0) -> Machine:
        """Boot; QEMU is ended after ``limit`` seconds (scaled) whatever else happens."""
        self.limit = limit * timeout_scale()
        assert self.lab.netns is not None
        for path in (self.serial_path, self.monitor):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        self.lab.netns.add_tap(self.tap)
        self.started = time.time()
        self.proc = self.lab._spawn(f"qemu-{self.name}", self.argv(), limit=self.limit)
        return self

    def serial(self) -> str:
        try:
            return self.serial_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def marker(self) -> dict[str, str] | None:
        found = MARKER_RE.search(self.serial())
        if not found:
            return None
        return dict(kv.split("=", 1) for kv in found.group(1).split())

    def wait(self, timeout: float) -> Boot:
        """Wait for the marker (or QEMU's end, or the timeout), then for the power-off."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout * timeout_scale()
        marker = None
        while time.monotonic() < deadline:
            marker = self.marker()
            if marker is not None or not self.proc.alive():
                break
            time.sleep(0.2)
        if marker is None:
            marker = self.marker()
        seconds = None
        if marker is not None:
            seconds = time.time() - self.started
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.popen.wait(30)  # /init powers off right after the marker
        else:
            self.screendump()
        exited = not self.proc.alive()
        self.stop()
        self.lab.timings.append(BootTiming(self.name, self.firmware,
                                           round(seconds or (time.time() - self.started), 1),
                                           marker is not None, str(self.lab.dir)))
        return Boot(self.name, self.firmware, self.host, self.started, seconds, marker, exited,
                    self.serial(), self.serial_path)

    def wait_for_text(self, text: str, timeout: float) -> float | None:
        """Seconds until the serial console shows ``text`` (None: it did not, in time)."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout * timeout_scale()
        seen = None
        while time.monotonic() < deadline and self.proc.alive():
            if text in self.serial():
                seen = time.time() - self.started
                break
            time.sleep(0.2)
        if seen is None and text in self.serial():
            seen = time.time() - self.started
        self.lab.timings.append(BootTiming(self.name, self.firmware,
                                           round(seen or (time.time() - self.started), 1),
                                           seen is not None, str(self.lab.dir)))
        self.stop()
        return seen

    def screendump(self) -> None:
        """Best effort: a picture of the screen (iPXE's errors show there) for the post-mortem."""
        if self.proc is None or not self.proc.alive():
            return
        with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX) as s:
            s.settimeout(5)
            s.connect(str(self.monitor))
            s.sendall(f"screendump {self.dir / 'screen.ppm'}\n".encode())
            time.sleep(1)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop(grace=3)
        if self.lab.netns is not None:
            self.lab.netns.del_tap(self.tap)


@contextlib.contextmanager
def machine(lab: Lab, name: str, host: Host, firmware: str) -> Iterator[Machine]:
    vm = Machine(lab, name, host, firmware)
    try:
        yield vm
    finally:
        vm.stop()


def describe_failure(lab: Lab, boot: Boot) -> str:
    """Everything useful when a boot did not produce its marker."""
    serial = "\n".join(boot.serial.splitlines()[-25:])
    transfers = "\n".join(repr(t) for t in lab.capture.transfers(boot.host.ip, boot.started))
    return (f"{boot.firmware} boot {boot.name} gave no marker (QEMU exited: {boot.exited}).\n"
            f"--- serial console (last lines of {boot.serial_path}):\n{serial}\n"
            f"--- TFTP transfers of {boot.host.ip}:\n{transfers or '(none)'}\n"
            f"{lab.proc_log_tail('tftproxy')}\nscreen: {boot.serial_path.parent}/screen.ppm")
