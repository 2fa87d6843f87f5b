"""Benchmark: lock-step TFTP throughput on loopback, tftproxy against in.tftpd and dnsmasq.

One curl fetches one file (50 MB by default) at each blksize from each server in turn,
rotating the order every round so the machine's noise hits all three alike; the figures that
matter are the ratios of the medians, all measured in this one run. Target: tftproxy >= 0.5x
in.tftpd at blksize 1468.

    .venv/bin/python -m bench.tftp_lockstep [--size-mb 50] [--runs 5] [--blksize 512 1468]
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import tempfile
from pathlib import Path

from bench.common import median, timed
from bench.tftp_common import Peer, bench_tree, check_bytes, dnsmasq, in_tftpd, need, ours

FETCH_TIMEOUT = 600


def fetch(curl: str, peer: Peer, name: str, blksize: int, out: str) -> float:
    run = timed(["timeout", str(FETCH_TIMEOUT), curl, "-sS", "--tftp-blksize", str(blksize),
                 "-o", out, f"tftp://{peer.host}:{peer.port}/{name}"])
    if run.returncode != 0:
        raise SystemExit(f"curl from {peer.name} failed ({run.returncode})")
    return run.seconds


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mb", type=int, default=50)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--blksize", type=int, nargs="+", default=[512, 1468])
    args = ap.parse_args()
    curl = need("curl")
    work = Path(tempfile.mkdtemp(prefix="tftproxy-bench-tftp-", dir="/var/tmp"))
    try:
        size = args.size_mb * 1_000_000
        root, digest = bench_tree(work, "big.bin", size)
        with contextlib.ExitStack() as stack:
            peers = [stack.enter_context(ours(root)), stack.enter_context(in_tftpd(root)),
                     stack.enter_context(dnsmasq(root))]
            check_bytes(peers, lambda p, out: fetch(curl, p, "big.bin", 1468, out), digest, work)
            speeds: dict[tuple[str, int], list[float]] = {}
            for blksize in args.blksize:
                for r in range(args.runs):
                    for peer in peers[r % 3:] + peers[: r % 3]:
                        seconds = fetch(curl, peer, "big.bin", blksize, "/dev/null")
                        speeds.setdefault((peer.name, blksize), []).append(size / 1e6 / seconds)
        print(f"\nlock-step, {args.size_mb} MB over loopback, curl, {args.runs} runs "
              f"(median MB/s; all runs)")
        for blksize in args.blksize:
            for name in ("tftproxy", "in.tftpd", "dnsmasq"):
                runs = speeds[(name, blksize)]
                print(f"  blksize {blksize:5d} {name:9s} {median(runs):7.1f}   "
                      + " ".join(f"{v:.1f}" for v in runs))
        print("ratios (tftproxy / peer, medians of this run):")
        verdict = 0
        for blksize in args.blksize:
            ours_mbs = median(speeds[("tftproxy", blksize)])
            for name in ("in.tftpd", "dnsmasq"):
                ratio = ours_mbs / median(speeds[(name, blksize)])
                note = ""
                if name == "in.tftpd" and blksize == 1468:
                    note = "  target >= 0.5: " + ("met" if ratio >= 0.5 else "MISSED")
                    verdict |= ratio < 0.5
                print(f"  blksize {blksize:5d} vs {name:9s} {ratio:5.2f}x{note}")
        return int(verdict)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
