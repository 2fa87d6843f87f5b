"""Benchmark: up-to-date refetch requests through the API against one `curl -z` per file.

smart-proxy answers every fetch_boot_file by running
`curl --fail --remote-time --time-cond DST --output DST URL`; tftproxy answers it with one
conditional request on a kept-alive connection. Both are checked against the same nginx,
in the same run, at the same client concurrency.

    .venv/bin/python -m bench.refetch_rate [--requests 1000] [--files 100] [--concurrency 1 8]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import aiohttp
from tests.helpers.nginx import Nginx

from bench.common import tftproxy_serve


def _prefix(url: str) -> str:
    """One boot set per file, as one medium per prefix in Foreman: boot/f<i>."""
    return "boot/" + url.rsplit("/", 2)[-2]


async def _ours(base: str, urls: list[str], total: int, concurrency: int) -> float:
    sem = asyncio.Semaphore(concurrency)
    statuses: dict[str, int] = {}

    async with aiohttp.ClientSession() as session:
        async def one(i: int) -> None:
            async with sem, session.post(f"{base}/tftp/fetch_boot_file",
                                         data={"prefix": _prefix(urls[i % len(urls)]),
                                               "path": urls[i % len(urls)]},
                                         headers={"Accept": "json"}) as resp:
                body = await resp.json()
                statuses[body["status"]] = statuses.get(body["status"], 0) + 1

        start = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(total)))
        elapsed = time.perf_counter() - start
    if set(statuses) != {"unchanged"}:
        raise SystemExit(f"expected only 'unchanged' answers, got {statuses}")
    return elapsed


def _curl(dst_dir: Path, urls: list[str], total: int, concurrency: int) -> float:
    def one(i: int) -> None:
        url = urls[i % len(urls)]
        dst = dst_dir / _prefix(url).replace("/", "-")
        subprocess.run(["curl", "-sS", "--fail", "--remote-time", "--time-cond", str(dst),
                        "--output", str(dst), url], check=True)

    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, range(total)))
    return time.perf_counter() - start


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--files", type=int, default=100)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tftproxy-bench-"))
    nginx = Nginx(work / "nginx")
    try:
        urls = []
        for i in range(args.files):
            nginx.put(f"f{i}/vmlinuz", os.urandom(64 * 1024))
            urls.append(nginx.url(f"f{i}/vmlinuz"))
        curl_dir = work / "curl"
        curl_dir.mkdir()
        with tftproxy_serve(work / "root") as server:
            base = server.url
            # Warm both: every file published once, so every later request is up to date.
            asyncio.run(_publish_all(base, urls))
            _curl(curl_dir, urls, len(urls), 4)
            for conc in args.concurrency:
                ours, curls = [], []
                for _ in range(args.rounds):  # alternating, so noise hits both alike
                    ours.append(asyncio.run(_ours(base, urls, args.requests, conc)))
                    curls.append(_curl(curl_dir, urls, args.requests, conc))
                t_ours, t_curl = statistics.median(ours), statistics.median(curls)
                print(f"{args.requests} up-to-date refetches of {args.files} files, "
                      f"concurrency {conc}, median of {args.rounds} alternating rounds:")
                print(f"  tftproxy API : {t_ours:6.2f} s  {args.requests / t_ours:8.0f} req/s")
                print(f"  curl -z each : {t_curl:6.2f} s  {args.requests / t_curl:8.0f} req/s")
                print(f"  throughput ratio tftproxy/curl: {t_curl / t_ours:.1f}x "
                      f"(target >= 10x)")
        codes = [s for _, s, _ in nginx.log_lines("/f0/vmlinuz")]
        print(f"  nginx saw for one file: {codes.count(200)} x 200, {codes.count(304)} x 304")
    finally:
        nginx.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


async def _publish_all(base: str, urls: list[str]) -> None:
    async with aiohttp.ClientSession() as session:
        for url in urls:
            async with session.post(f"{base}/tftp/fetch_boot_file",
                                    data={"prefix": _prefix(url), "path": url}) as resp:
                if resp.status != 200:
                    raise SystemExit(f"warm-up fetch failed: {await resp.text()}")


if __name__ == "__main__":
    sys.exit(main())
