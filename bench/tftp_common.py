"""TFTP servers to race on loopback (ours and the peers) and what the benchmarks read of them.

Every server runs as root on 127.x.y.z with a fresh port (dnsmasq only knows port 69, so it
gets an address of its own); every wait is bounded. CPU and memory count the server's whole
process tree. in.tftpd forks a process per transfer and ignores SIGCHLD, so its children's
CPU time never reaches its own counters: a :class:`Sampler` reads every process of the tree
every 10 ms and keeps the last value seen (in.tftpd's figure may miss up to 10 ms per
transfer, an underestimate in its favour).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
ATFTPD = HERE / ".cache" / "atftpd" / "usr" / "sbin" / "atftpd"
CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass
class Peer:
    name: str
    host: str
    port: int
    proc: subprocess.Popen[bytes]

    def pids(self) -> list[int]:
        """The server's processes: the one we started and its live children."""
        out = [self.proc.pid]
        with contextlib.suppress(OSError):
            children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
            out += [int(p) for p in children.split()]
        return out

    def peak_rss_mib(self) -> float:
        """Sum of the peak resident sets (VmHWM) of the server's live processes."""
        total = 0
        for pid in self.pids():
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        total += int(line.split()[1])
        return total / 1024


def _proc_cpu_ticks(pid: int) -> int | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[11]) + int(fields[12])  # utime, stime


def _proc_rss_kib(pid: int) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class Sampler:
    """CPU seconds and peak memory of a server's process tree while the block runs."""

    INTERVAL = 0.01

    def __init__(self, peer: Peer) -> None:
        self.peer = peer
        self._last: dict[int, int] = {}
        self._first: dict[int, int] = {}
        self.peak_rss_mib = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        rss = 0
        for pid in self.peer.pids():
            ticks = _proc_cpu_ticks(pid)
            if ticks is None:
                continue
            self._first.setdefault(pid, ticks)
            self._last[pid] = ticks
            rss += _proc_rss_kib(pid)
        self.peak_rss_mib = max(self.peak_rss_mib, rss / 1024)

    def _run(self) -> None:
        while not self._stop.wait(self.INTERVAL):
            self._sample()

    @property
    def cpu_seconds(self) -> float:
        # Processes alive at the start count from there; the others from zero.
        return sum(t - self._first.get(pid, 0) if pid in self._started_with else t
                   for pid, t in self._last.items()) / CLK_TCK

    def __enter__(self) -> Sampler:
        self._sample()
        self._started_with = set(self._first)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._sample()
        self._stop.set()
        self._thread.join()


def need(tool: str) -> str:
    path = shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/sbin")
    if path is None:
        sys.exit(f"{tool} is not installed: run scripts/system-deps")
    return path


def free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def loopback_address() -> str:
    """A random 127/8 address, so a peer stuck on port 69 collides with nobody."""
    return f"127.{random.randint(64, 250)}.{random.randint(1, 250)}.{random.randint(2, 250)}"


def wait_ready(host: str, port: int, limit: float = 15.0) -> None:
    """Until the server answers a request for a missing name (its ERROR 1)."""
    deadline = time.monotonic() + limit
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(0.2)
        while time.monotonic() < deadline:
            s.sendto(b"\x00\x01bench-readiness-probe\x00octet\x00", (host, port))
            try:
                s.recvfrom(1024)
                return
            except TimeoutError:
                continue
    raise SystemExit(f"no TFTP server answered on {host}:{port}")


@contextlib.contextmanager
def _running(name: str, cmd: list[str], host: str, port: int,
             env: dict[str, str] | None = None) -> Iterator[Peer]:
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, env={**os.environ, **(env or {})})
    try:
        wait_ready(host, port)
        yield Peer(name, host, port, proc)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def ours(root: Path, workers: int = 1) -> contextlib.AbstractContextManager[Peer]:
    """``tftproxy tftpd``: the same code path as production (its log goes to /dev/null)."""
    host = "127.0.0.1"
    port = free_port(host)
    # Every bench client is 127.0.0.1: the per-host limit would otherwise cap the storm.
    return _running("tftproxy", [sys.executable, "-m", "tftproxy", "tftpd", "--root", str(root),
                                 "--listen", f"{host}:{port}", "--workers", str(workers)],
                    host, port, env={"TFTPROXY_TFTP_MAX_PER_CLIENT": "1000"})


def in_tftpd(root: Path) -> contextlib.AbstractContextManager[Peer]:
    host = "127.0.0.1"
    port = free_port(host)
    return _running("in.tftpd", [need("in.tftpd"), "-L", "-s", "-u", "root",
                                 "-a", f"{host}:{port}", str(root)], host, port)


def dnsmasq(root: Path) -> contextlib.AbstractContextManager[Peer]:
    host = loopback_address()
    return _running("dnsmasq", [need("dnsmasq"), "--no-daemon", "--port=0", "--enable-tftp",
                                f"--tftp-root={root}", f"--listen-address={host}",
                                "--bind-interfaces", "--user=root", "--group=root",
                                "--no-resolv", "--no-hosts", "--conf-file=/dev/null",
                                "--tftp-max=1000", "--quiet-tftp", "--log-facility=/dev/null",
                                "--pid-file="], host, 69)


def atftpd(root: Path) -> contextlib.AbstractContextManager[Peer]:
    if not ATFTPD.exists():
        sys.exit(f"{ATFTPD} is missing: run scripts/system-deps")
    host = "127.0.0.1"
    port = free_port(host)
    return _running("atftpd", [str(ATFTPD), "--daemon", "--no-fork", "--user", "root.root",
                               "--port", str(port), "--bind-address", host,
                               "--logfile", "/dev/null", "--maxthread", "1000", str(root)],
                    host, port)


def make_file(path: Path, size: int) -> None:
    if path.exists() and path.stat().st_size == size:
        return
    with open(path, "wb") as f:
        left = size
        while left:
            chunk = os.urandom(min(left, 1 << 20))
            f.write(chunk)
            left -= len(chunk)


def bench_tree(work: Path, name: str, size: int) -> tuple[Path, str]:
    """A TFTP root under ``work`` holding ``name``, ``size`` random bytes; (root, sha256)."""
    root = work / "root"
    root.mkdir(exist_ok=True)
    make_file(root / name, size)
    digest = hashlib.sha256((root / name).read_bytes()).hexdigest()
    return root, digest


def check_bytes(peers: list[Peer], fetch_to: Callable[[Peer, str], object], digest: str,
                work: Path) -> None:
    """Every server's bytes first: the speed of a wrong answer is worth nothing."""
    check = work / "check"
    for peer in peers:
        fetch_to(peer, str(check))
        if hashlib.sha256(check.read_bytes()).hexdigest() != digest:
            raise SystemExit(f"{peer.name} sent different bytes")
        check.unlink()
