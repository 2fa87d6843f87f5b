"""Benchmark: 50 concurrent requests for one 200 MB file share one download.

Counts what nginx's access log shows: one full-body GET is the target, where smart-proxy
would skip 49 requests silently (or, with wget -c, fight over one file).

    .venv/bin/python -m bench.coalesce [--clients 50] [--size-mib 200]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from tests.helpers.nginx import Nginx

from bench.common import tftproxy_serve


async def _storm(base: str, url: str, clients: int) -> tuple[float, collections.Counter[str]]:
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        async def one() -> str:
            async with session.post(f"{base}/tftp/fetch_boot_file",
                                    data={"prefix": "boot/c", "path": url},
                                    headers={"Accept": "json"}) as resp:
                body = await resp.json() if resp.status in (200, 202) else {}
                return f"{resp.status} {body.get('status') or body.get('state')}"

        start = time.perf_counter()
        answers = await asyncio.gather(*(one() for _ in range(clients)))
        return time.perf_counter() - start, collections.Counter(answers)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--size-mib", type=int, default=200)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tftproxy-bench-", dir="/var/tmp"))
    nginx = Nginx(work / "nginx")
    try:
        with open(nginx.www / "initrd.img", "wb") as f:
            block = os.urandom(1024 * 1024)
            for _ in range(args.size_mib):
                f.write(block)
        with tftproxy_serve(work / "root", {"TFTPROXY_FETCH_WAIT": "120"}) as server:
            elapsed, answers = asyncio.run(_storm(server.url, nginx.url("initrd.img"),
                                                  args.clients))
        log = nginx.log_lines("/initrd.img")
        full = [entry for entry in log if entry[1] == 200 and entry[2] == args.size_mib << 20]
        print(f"{args.clients} concurrent requests for one {args.size_mib} MiB file "
              f"answered in {elapsed:.2f} s: {dict(answers)}")
        print(f"nginx access log: {len(log)} request(s), {len(full)} full download(s) "
              f"(target: 1)")
    finally:
        nginx.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
