"""Benchmark: Foreman's "Build PXE Default" burst, and how many upstream checks it costs.

Build PXE Default asks the proxy to fetch every host group's kernel and initrd at once: a few
hundred requests in one burst, many for the same files (host groups share media). Every file
is already published and up to date, as on a proxy that has served these media before. The
target: one upstream check per distinct file, however many requests name it; every answer an
"unchanged" 200. Reported: the burst's wall time, requests per second, and nginx's requests
per file (the peer figure: smart-proxy runs one `curl -z` per request, i.e. one per request).

    .venv/bin/python -m bench.pxe_default_burst [--media 20] [--hostgroups 200] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from tests.helpers.nginx import Nginx

from bench.common import tftproxy_serve

FILES = ("vmlinuz", "initrd.img")


def _plan(media: int, hostgroups: int) -> list[tuple[str, str]]:
    """(prefix, url path) of every request: each host group uses one medium, round robin."""
    out = []
    for g in range(hostgroups):
        m = g % media
        for f in FILES:
            out.append((f"boot/medium{m}", f"m{m}/images/pxeboot/{f}"))
    return out


async def _burst(base: str, nginx: Nginx, plan: list[tuple[str, str]]) -> tuple[float, list]:
    conn = aiohttp.TCPConnector(limit=len(plan))
    async with aiohttp.ClientSession(connector=conn) as session:
        async def one(prefix: str, path: str) -> tuple[int, str]:
            async with session.post(f"{base}/tftp/fetch_boot_file",
                                    data={"prefix": prefix, "path": nginx.url(path)}) as resp:
                body = await resp.json() if resp.status == 200 else {}
                return resp.status, body.get("status", await resp.text())

        start = time.perf_counter()
        answers = await asyncio.gather(*(one(p, u) for p, u in plan))
        return time.perf_counter() - start, answers


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--media", type=int, default=20)
    ap.add_argument("--hostgroups", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--pause", type=float, default=5.0,
                    help="seconds between bursts (Foreman's admins do not click twice a second)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tftproxy-bench-burst-"))
    nginx = Nginx(work / "nginx")
    try:
        plan = _plan(args.media, args.hostgroups)
        distinct = sorted({u for _, u in plan})
        for path in distinct:
            nginx.put(path, os.urandom(256 * 1024))
        with tftproxy_serve(work / "root") as server:
            # Published once beforehand: every request of a burst is an up-to-date check.
            asyncio.run(_burst(server.url, nginx, [(p, u) for p, u in dict.fromkeys(plan)]))
            times, checks = [], []
            for r in range(args.rounds):
                time.sleep(args.pause)
                before = {u: len(nginx.log_lines(f"/{u}")) for u in distinct}
                seconds, answers = asyncio.run(_burst(server.url, nginx, plan))
                bad = [a for a in answers if a != (200, "unchanged")]
                if bad:
                    raise SystemExit(f"round {r + 1}: {len(bad)} answers not an unchanged "
                                     f"200, e.g. {bad[0]}")
                per_file = [len(nginx.log_lines(f"/{u}")) - before[u] for u in distinct]
                times.append(seconds)
                checks.append(max(per_file))
                print(f"  round {r + 1}: {len(plan)} requests for {len(distinct)} files in "
                      f"{seconds:.2f} s ({len(plan) / seconds:.0f} req/s); upstream checks per "
                      f"file: min {min(per_file)}, max {max(per_file)}, total {sum(per_file)}",
                      flush=True)
        t = statistics.median(times)
        print(f"Build PXE Default burst: {len(plan)} requests ({args.hostgroups} host groups x "
              f"{len(FILES)} files over {args.media} media), median {t:.2f} s, "
              f"{len(plan) / t:.0f} req/s")
        worst = max(checks)
        print(f"  upstream checks per distinct file, worst round: {worst} (target 1; "
              f"smart-proxy: {len(plan) // len(distinct)}, one curl -z per request)")
        return int(worst != 1)
    finally:
        nginx.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
