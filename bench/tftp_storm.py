"""Benchmark: a boot storm, 100 concurrent TFTP clients each fetching one 20 MB file.

tftproxy (2 worker processes, one per core) against in.tftpd (a process per transfer), same
storm, alternating, each run on a freshly started server. Every download is checked against
the file's sha256. Reports aggregate throughput, server CPU seconds per GB served and the
server's peak memory (sum of VmHWM over its processes). Targets: all complete and correct,
throughput >= 1.0x in.tftpd, CPU per GB <= 1.0x, tftproxy RSS <= 100 MB.

The clients compete with the server for the same two cores, and in.tftpd's hundred processes
get more of the scheduler than two workers do; ``--split-cpus`` makes it fair: every server
process on CPU 0 (in.tftpd's children inherit it), every client on CPU 1. ``--client atftp
--windowsize 4`` is what OVMF asks for (RFC 7440); in.tftpd does not implement windowsize
and answers lock-step, as it would answer the firmware.

    .venv/bin/python -m bench.tftp_storm [--clients 100] [--size-mb 20] [--runs 3]
        [--split-cpus] [--client curl|atftp] [--windowsize N] [--workers N]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.common import median
from bench.tftp_common import Peer, Sampler, bench_tree, in_tftpd, need, ours

STORM_TIMEOUT = 900.0


@dataclass
class Storm:
    seconds: float
    mbs: float
    cpu_per_gb: float
    rss_mib: float
    ok: int


SERVER_CPUS, CLIENT_CPUS = {0}, {1}


def client_command(client: str, peer: Peer, blksize: int, windowsize: int,
                   out: Path) -> list[str]:
    if client == "atftp":
        return [need("atftp"), "--option", f"blksize {blksize}", "--option",
                f"windowsize {windowsize}", "-g", "-r", "boot.img", "-l", str(out), peer.host,
                str(peer.port)]
    return [need("curl"), "-sS", "--tftp-blksize", str(blksize), "-o", str(out),
            f"tftp://{peer.host}:{peer.port}/boot.img"]


def pin_server(peer: Peer) -> None:
    """Every process of the server on SERVER_CPUS (forked children inherit it)."""
    for pid in peer.pids():
        with contextlib.suppress(OSError):
            os.sched_setaffinity(pid, SERVER_CPUS)


def storm(peer: Peer, client: str, clients: int, size: int, out: Path, digest: str,
          blksize: int, windowsize: int, split: bool) -> Storm:
    for f in out.iterdir():
        f.unlink()
    if split:
        pin_server(peer)
    pin = (lambda: os.sched_setaffinity(0, CLIENT_CPUS)) if split else None
    with Sampler(peer) as sampler:
        start = time.perf_counter()
        procs = [subprocess.Popen(client_command(client, peer, blksize, windowsize,
                                                 out / f"c{i}"),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  preexec_fn=pin)
                 for i in range(clients)]
        deadline = start + STORM_TIMEOUT
        for p in procs:
            try:
                p.wait(max(1.0, deadline - time.perf_counter()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        seconds = time.perf_counter() - start
        # Let in.tftpd's last children finish their final ACK wait inside the sample.
        settle = time.monotonic() + 5
        while len(peer.pids()) > 1 and peer.name == "in.tftpd" and time.monotonic() < settle:
            time.sleep(0.02)
    cpu = sampler.cpu_seconds
    # Per-process peaks (VmHWM) where the processes live on, sampled sums otherwise.
    rss = max(sampler.peak_rss_mib, peer.peak_rss_mib())
    ok = sum(1 for i, p in enumerate(procs) if p.returncode == 0
             and hashlib.sha256((out / f"c{i}").read_bytes()).hexdigest() == digest)
    total_gb = clients * size / 1e9
    return Storm(seconds, clients * size / 1e6 / seconds, cpu / total_gb, rss, ok)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=100)
    ap.add_argument("--size-mb", type=int, default=20)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--blksize", type=int, default=1468)
    ap.add_argument("--client", choices=("curl", "atftp"), default="curl")
    ap.add_argument("--windowsize", type=int, default=1,
                    help="RFC 7440 window the clients ask for (atftp only; 4 is OVMF's)")
    ap.add_argument("--split-cpus", action="store_true",
                    help="servers on CPU 0, clients on CPU 1 (a fair race on 2 cores)")
    args = ap.parse_args()
    if args.windowsize > 1 and args.client != "atftp":
        ap.error("--windowsize needs --client atftp (curl asks for no window)")
    if args.split_cpus and len(os.sched_getaffinity(0)) < 2:
        ap.error("--split-cpus needs two CPUs")
    work = Path(tempfile.mkdtemp(prefix="tftproxy-bench-storm-", dir="/var/tmp"))
    # Downloads land in RAM, so the clients' disk writes do not slow whichever server is on.
    out = Path(tempfile.mkdtemp(prefix="tftproxy-storm-", dir="/dev/shm"))
    try:
        size = args.size_mb * 1_000_000
        root, digest = bench_tree(work, "boot.img", size)
        servers: list[tuple[str, Callable[[], contextlib.AbstractContextManager[Peer]]]] = [
            ("tftproxy", lambda: ours(root, args.workers)),
            ("in.tftpd", lambda: in_tftpd(root)),
        ]
        results: dict[str, list[Storm]] = {"tftproxy": [], "in.tftpd": []}
        for r in range(args.runs):
            for name, start in servers[r % 2:] + servers[: r % 2]:
                with start() as peer:
                    result = storm(peer, args.client, args.clients, size, out, digest,
                                   args.blksize, args.windowsize, args.split_cpus)
                results[name].append(result)
                print(f"  run {r + 1} {name:9s} {result.mbs:6.1f} MB/s in {result.seconds:5.1f} s,"
                      f" {result.cpu_per_gb:5.1f} CPU s/GB, peak RSS {result.rss_mib:6.1f} MiB,"
                      f" {result.ok}/{args.clients} correct", flush=True)
        layout = "servers on CPU 0, clients on CPU 1" if args.split_cpus else "shared CPUs"
        print(f"\nboot storm: {args.clients} clients x {args.size_mb} MB, {args.client} blksize "
              f"{args.blksize} windowsize {args.windowsize}, {args.workers} worker(s), {layout}, "
              f"{args.runs} runs, medians")
        med = {}
        for name, runs in results.items():
            med[name] = Storm(median([s.seconds for s in runs]), median([s.mbs for s in runs]),
                              median([s.cpu_per_gb for s in runs]),
                              max(s.rss_mib for s in runs), min(s.ok for s in runs))
            m = med[name]
            print(f"  {name:9s} {m.mbs:6.1f} MB/s, {m.cpu_per_gb:5.1f} CPU s/GB, "
                  f"peak RSS {m.rss_mib:6.1f} MiB (max), {m.ok}/{args.clients} correct (min)")
        ratio = med["tftproxy"].mbs / med["in.tftpd"].mbs
        cpu_ratio = med["tftproxy"].cpu_per_gb / med["in.tftpd"].cpu_per_gb
        all_ok = all(s.ok == args.clients for runs in results.values() for s in runs)
        print(f"  throughput tftproxy / in.tftpd {ratio:4.2f}x  target >= 1.0: "
              + ("met" if ratio >= 1.0 else "MISSED"))
        print(f"  CPU per GB tftproxy / in.tftpd {cpu_ratio:4.2f}x  target <= 1.0: "
              + ("met" if cpu_ratio <= 1.0 else "MISSED"))
        print(f"  tftproxy peak RSS {med['tftproxy'].rss_mib:.1f} MiB  target <= 100: "
              + ("met" if med["tftproxy"].rss_mib <= 100 else "MISSED"))
        print("  every download complete and correct: " + ("yes" if all_ok else "NO"))
        return int(ratio < 1.0 or cpu_ratio > 1.0 or med["tftproxy"].rss_mib > 100
                   or not all_ok)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
