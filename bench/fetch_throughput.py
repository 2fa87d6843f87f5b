"""Benchmark: `tftproxy fetch` of a large file from local nginx against `curl -o` and `wget`.

Runs alternate (tftproxy, curl, wget, tftproxy, ...) so that the machine's noise hits all
three alike; the figure that matters is the median ratio against curl in the same run.
tftproxy computes sha256, fsyncs and publishes; curl and wget only write the file.

    .venv/bin/python -m bench.fetch_throughput [--size-mib 1024] [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

from tests.helpers.nginx import Nginx

from bench.common import Run, median, timed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mib", type=int, nargs="+", default=[1024])
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tftproxy-bench-", dir="/var/tmp"))
    nginx = Nginx(work / "nginx")
    tftproxy = [sys.executable, "-m", "tftproxy"]
    try:
        for size in args.size_mib:
            src = nginx.www / f"big-{size}.bin"
            with open(src, "wb") as f:
                block = os.urandom(1024 * 1024)
                for _ in range(size):
                    f.write(block)
            url = nginx.url(src.name)
            results: dict[str, list[Run]] = {"tftproxy": [], "curl": [], "wget": []}
            for i in range(args.runs):
                root = work / f"root-{i}"
                out = work / "out.bin"
                cmds = {
                    "tftproxy": [*tftproxy, "fetch", "--root", str(root), "boot/b", url],
                    "curl": ["curl", "-sS", "--fail", "-o", str(out), url],
                    "wget": ["wget", "-q", "-O", str(out), url],
                }
                for tool, cmd in cmds.items():
                    run = timed(cmd)
                    if run.returncode != 0:
                        print(f"{tool} failed", file=sys.stderr)
                        return 1
                    results[tool].append(run)
                    shutil.rmtree(root, ignore_errors=True)
                    out.unlink(missing_ok=True)
            med = {t: median([r.seconds for r in rs]) for t, rs in results.items()}
            rss = {t: max(r.max_rss_kib for r in rs) / 1024 for t, rs in results.items()}
            print(f"\n{size} MiB from nginx on loopback, {args.runs} alternating runs each:")
            for tool in results:
                secs = ", ".join(f"{r.seconds:.2f}" for r in results[tool])
                print(f"  {tool:9s} median {med[tool]:6.2f} s  ({size / med[tool]:7.1f} MiB/s)"
                      f"  peak RSS {rss[tool]:6.1f} MB   runs: {secs}")
            print(f"  ratio tftproxy/curl (median wall time): {med['tftproxy'] / med['curl']:.3f}"
                  f"  (target <= 1.15)")
            print(f"  ratio tftproxy/wget (median wall time): {med['tftproxy'] / med['wget']:.3f}")
            print(f"  tftproxy peak RSS: {rss['tftproxy']:.1f} MB (target <= 100 MB)")
            src.unlink()
    finally:
        nginx.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
