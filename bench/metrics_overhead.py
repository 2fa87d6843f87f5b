"""Benchmark: what metrics cost. `tftproxy serve` with metrics on (and Prometheus-like scrapes
of /metrics every second during the run) against metrics off, same machine, same run.

Two workloads, each alternating on/off runs on freshly started servers, medians compared:
a TFTP storm (curl clients over loopback, 2 workers) and API fetches of a large file from
local nginx (a new name each run, so each is a full download). Target: on within 3% of off.

    .venv/bin/python -m bench.metrics_overhead [--runs 5] [--clients 40] [--size-mb 10]
                                              [--fetch-mib 256]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from tests.helpers.nginx import Nginx

from bench.common import median, tftproxy_serve
from bench.tftp_common import bench_tree, free_port, need, wait_ready

_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@contextlib.contextmanager
def scraping(url: str | None) -> Iterator[list[int]]:
    """GET /metrics every second while the block runs (what a Prometheus would do)."""
    done: list[int] = []
    stop = threading.Event()

    def loop() -> None:
        while url is not None and not stop.wait(1.0):
            with _DIRECT.open(url + "/metrics", timeout=5) as resp:
                done.append(len(resp.read()))

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield done
    finally:
        stop.set()
        thread.join(10)


def serve_env(metrics: bool, tftp_port: int | None = None) -> dict[str, str]:
    env = {"TFTPROXY_METRICS": "true" if metrics else "false", "TFTPROXY_MIN_FREE_SPACE": "0",
           "TFTPROXY_FETCH_WAIT": "600", "TFTPROXY_GC_INTERVAL": "0"}
    if tftp_port is not None:
        env |= {"TFTPROXY_TFTP_LISTEN": f"127.0.0.1:{tftp_port}", "TFTPROXY_TFTP_WORKERS": "2"}
    return env


def tftp_storm(root: Path, metrics: bool, clients: int, out: Path, digest: str) -> float:
    curl = need("curl")
    port = free_port("127.0.0.1")
    with tftproxy_serve(root, serve_env(metrics, port)) as served:
        wait_ready("127.0.0.1", port)
        for f in out.iterdir():
            f.unlink()
        with scraping(served.url if metrics else None) as scrapes:
            start = time.perf_counter()
            procs = [subprocess.Popen([curl, "-sS", "--max-time", "600", "-o",
                                       str(out / f"c{i}"), f"tftp://127.0.0.1:{port}/boot.img"])
                     for i in range(clients)]
            for p in procs:
                p.wait()
            seconds = time.perf_counter() - start
        if metrics and not scrapes:
            raise SystemExit("no scrape of /metrics succeeded during the run")
    for i in range(clients):
        if hashlib.sha256((out / f"c{i}").read_bytes()).hexdigest() != digest:
            raise SystemExit("a TFTP download came back wrong")
    return seconds


def api_fetch(work: Path, nginx_url: str, metrics: bool, run: int) -> float:
    root = work / f"fetch-root-{run}-{metrics}"
    with tftproxy_serve(root, serve_env(metrics)) as served, \
            scraping(served.url if metrics else None):
        subprocess.run(["sync"], check=False)
        start = time.perf_counter()
        done = subprocess.run(["curl", "-sS", "--fail-with-body", "-o", "/dev/null",
                               "-d", f"prefix=boot/r{run}", "-d", f"path={nginx_url}",
                               f"{served.url}/tftp/fetch_boot_file"])
        seconds = time.perf_counter() - start
    shutil.rmtree(root, ignore_errors=True)
    if done.returncode != 0:
        raise SystemExit("an API fetch failed")
    return seconds


def report(name: str, on: list[float], off: list[float]) -> float:
    ratio = median(on) / median(off)
    verdict = "met" if ratio <= 1.03 else "MISSED"
    print(f"{name}: metrics on median {median(on):.3f} s, off {median(off):.3f} s; "
          f"on/off time ratio {ratio:.3f} (target <= 1.03: {verdict})")
    print(f"  on:  {', '.join(f'{s:.3f}' for s in on)}")
    print(f"  off: {', '.join(f'{s:.3f}' for s in off)}")
    return ratio


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--clients", type=int, default=40)
    ap.add_argument("--size-mb", type=int, default=10)
    ap.add_argument("--fetch-mib", type=int, default=256)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tftproxy-bench-metrics-", dir="/var/tmp"))
    out = Path(tempfile.mkdtemp(prefix="tftproxy-metrics-", dir="/dev/shm"))
    nginx = Nginx(work / "nginx")
    try:
        root, digest = bench_tree(work, "boot.img", args.size_mb * 1_000_000)
        times: dict[bool, list[float]] = {True: [], False: []}
        for r in range(args.runs):
            for metrics in ((True, False) if r % 2 == 0 else (False, True)):
                times[metrics].append(tftp_storm(root, metrics, args.clients, out, digest))
        print(f"\nTFTP storm, {args.clients} clients x {args.size_mb} MB, 2 workers, "
              f"{args.runs} alternating runs:")
        tftp = report("  TFTP", times[True], times[False])
        big = nginx.www / "big.bin"
        with open(big, "wb") as f:
            block = hashlib.sha256(b"x").digest() * (1 << 15)  # 1 MiB, not all zeros
            for _ in range(args.fetch_mib):
                f.write(block)
        times = {True: [], False: []}
        for r in range(args.runs):
            for metrics in ((True, False) if r % 2 == 0 else (False, True)):
                times[metrics].append(api_fetch(work, nginx.url("big.bin"), metrics, r))
        print(f"\nAPI fetch of {args.fetch_mib} MiB from nginx, {args.runs} alternating runs:")
        fetch = report("  fetch", times[True], times[False])
        return int(tftp > 1.03 or fetch > 1.03)
    finally:
        nginx.stop()
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
