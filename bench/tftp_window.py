"""Benchmark: RFC 7440 windows on loopback, tftproxy against atftpd, both with the atftp client.

Fetches one file (50 MB by default) at windowsize 16 and 64, for each blksize given (1468,
the usual EDK2 choice, and atftp's default 512), alternating servers every round; the ratios
of the medians are measured in this one run. Target: tftproxy >= 1.0x atftpd.

    .venv/bin/python -m bench.tftp_window [--size-mb 50] [--runs 5] [--windowsize 16 64]
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import tempfile
from pathlib import Path

from bench.common import median, timed
from bench.tftp_common import Peer, atftpd, bench_tree, check_bytes, need, ours

FETCH_TIMEOUT = 600


def fetch(atftp: str, peer: Peer, name: str, windowsize: int, blksize: int, out: str) -> float:
    run = timed(["timeout", str(FETCH_TIMEOUT), atftp, "--option", f"windowsize {windowsize}",
                 "--option", f"blksize {blksize}", "-g", "-r", name, "-l", out, peer.host,
                 str(peer.port)])
    if run.returncode != 0:
        raise SystemExit(f"atftp from {peer.name} failed ({run.returncode})")
    return run.seconds


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mb", type=int, default=50)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--windowsize", type=int, nargs="+", default=[16, 64])
    ap.add_argument("--blksize", type=int, nargs="+", default=[1468, 512])
    args = ap.parse_args()
    atftp = need("atftp")
    work = Path(tempfile.mkdtemp(prefix="tftproxy-bench-tftp-", dir="/var/tmp"))
    try:
        size = args.size_mb * 1_000_000
        root, digest = bench_tree(work, "big.bin", size)
        with contextlib.ExitStack() as stack:
            peers = [stack.enter_context(ours(root)), stack.enter_context(atftpd(root))]
            check_bytes(peers, lambda p, out: fetch(atftp, p, "big.bin", args.windowsize[0],
                                                    args.blksize[0], out), digest, work)
            speeds: dict[tuple[str, int, int], list[float]] = {}
            for blksize in args.blksize:
                for windowsize in args.windowsize:
                    for r in range(args.runs):
                        for peer in peers[r % 2:] + peers[: r % 2]:
                            seconds = fetch(atftp, peer, "big.bin", windowsize, blksize,
                                            "/dev/null")
                            speeds.setdefault((peer.name, blksize, windowsize), []).append(
                                size / 1e6 / seconds)
        print(f"\nwindowed, {args.size_mb} MB over loopback, atftp client, {args.runs} runs "
              f"(median MB/s; all runs)")
        verdict = 0
        for blksize in args.blksize:
            for windowsize in args.windowsize:
                medians = {}
                for name in ("tftproxy", "atftpd"):
                    runs = speeds[(name, blksize, windowsize)]
                    medians[name] = median(runs)
                    print(f"  blksize {blksize:5d} windowsize {windowsize:3d} {name:9s} "
                          f"{medians[name]:7.1f}   " + " ".join(f"{v:.1f}" for v in runs))
                ratio = medians["tftproxy"] / medians["atftpd"]
                verdict |= ratio < 1.0
                print(f"  -> ratio tftproxy / atftpd {ratio:5.2f}x  target >= 1.0: "
                      + ("met" if ratio >= 1.0 else "MISSED"))
        return int(verdict)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
