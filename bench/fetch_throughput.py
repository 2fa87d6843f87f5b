"""Benchmark: fetching a large file from local nginx, tftproxy against `curl -o` and `wget`.

Two ways for tftproxy: `tftproxy fetch` (a new Python process each time, so it pays the
interpreter's start and imports) and `POST /tftp/fetch_boot_file` to a running `tftproxy serve`
(how Foreman uses it). Runs alternate (fetch, api, curl, wget, fetch, ...) so that the
machine's noise hits all alike; the figure that matters is the median ratio against curl in
the same run. tftproxy computes sha256, fsyncs and publishes; curl and wget only write
(their data is flushed by an untimed `sync` before the next run, so no tool pays for
another's writeback).

    .venv/bin/python -m bench.fetch_throughput [--size-mib 1024] [--runs 5]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.helpers.nginx import Nginx

from bench.common import Run, median, tftproxy_serve, timed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mib", type=int, nargs="+", default=[1024])
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tftproxy-bench-", dir="/var/tmp"))
    nginx = Nginx(work / "nginx")
    tftproxy = [sys.executable, "-m", "tftproxy"]
    stack = contextlib.ExitStack()
    server = stack.enter_context(tftproxy_serve(work / "api-root", {
        "TFTPROXY_FETCH_WAIT": "600", "TFTPROXY_MIN_FREE_SPACE": "0"}))
    try:
        for size in args.size_mib:
            src = nginx.www / f"big-{size}.bin"
            with open(src, "wb") as f:
                block = os.urandom(1024 * 1024)
                for _ in range(size):
                    f.write(block)
            url = nginx.url(src.name)
            results: dict[str, list[Run]] = {"tftproxy": [], "api": [], "curl": [],
                                             "curl+fsync": [], "wget": []}
            for i in range(args.runs):
                root = work / f"root-{i}"
                out = work / "out.bin"
                cmds = {
                    "tftproxy": [*tftproxy, "fetch", "--root", str(root), "boot/b", url],
                    # A new name each run: a full download (the content store keeps one copy).
                    "api": ["curl", "-sS", "--fail-with-body", "-o", str(work / "api.out"),
                            "-d", f"prefix=boot/a{i}",
                            "-d", f"path={url}", f"{server.url}/tftp/fetch_boot_file"],
                    "curl": ["curl", "-sS", "--fail", "-o", str(out), url],
                    # The same durability as tftproxy's publish: the data is on disk.
                    "curl+fsync": ["sh", "-c", f"curl -sS --fail -o {out} {url} && sync -d {out}"],
                    "wget": ["wget", "-q", "-O", str(out), url],
                }
                for tool, cmd in cmds.items():
                    # Untimed: the previous tool's unflushed writes must not land on this one.
                    subprocess.run(["sync"], check=False)
                    run = timed(cmd)
                    if run.returncode != 0:
                        answer = (work / "api.out").read_text() if tool == "api" else ""
                        print(f"{tool} failed {answer}", file=sys.stderr)
                        return 1
                    results[tool].append(run)
                    shutil.rmtree(root, ignore_errors=True)
                    out.unlink(missing_ok=True)
            med = {t: median([r.seconds for r in rs]) for t, rs in results.items()}
            rss = {t: max(r.max_rss_kib for r in rs) / 1024 for t, rs in results.items()}
            rss["api"] = server.peak_rss_mib()  # the server's, not its curl client's
            print(f"\n{size} MiB from nginx on loopback, {args.runs} alternating runs each:")
            for tool in results:
                secs = ", ".join(f"{r.seconds:.2f}" for r in results[tool])
                print(f"  {tool:10s} median {med[tool]:6.2f} s  ({size / med[tool]:7.1f} MiB/s)"
                      f"  peak RSS {rss[tool]:6.1f} MB   runs: {secs}")
            print(f"  ratio tftproxy fetch/curl (median wall time): "
                  f"{med['tftproxy'] / med['curl']:.3f}  (target <= 1.15)")
            print(f"  ratio API fetch/curl (median wall time): {med['api'] / med['curl']:.3f}")
            print(f"  with the same durability: tftproxy fetch/curl+fsync "
                  f"{med['tftproxy'] / med['curl+fsync']:.3f}, API fetch/curl+fsync "
                  f"{med['api'] / med['curl+fsync']:.3f}")
            print(f"  ratio tftproxy/wget (median wall time): {med['tftproxy'] / med['wget']:.3f}")
            print(f"  tftproxy fetch peak RSS: {rss['tftproxy']:.1f} MB; tftproxy serve peak RSS "
                  f"so far: {server.peak_rss_mib():.1f} MB (target <= 100 MB)")
            src.unlink()
    finally:
        stack.close()
        nginx.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
