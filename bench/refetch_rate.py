"""Benchmark: up-to-date refetch requests through the API against one `curl -z` per file.

smart-proxy answers every fetch_boot_file by running
`curl --fail --remote-time --time-cond DST --output DST URL`; tftproxy answers it with one
conditional request on a kept-alive connection, or, within ``fresh_for`` seconds of the
last successful check of the same file (1 s by default), with that check's result. Both are
run against the same nginx, in the same run, at the same client concurrency, with
``fresh_for`` 1 (the default) and 0 (every request checked upstream); wrk (Debian) drives the
API. The upstream requests each side caused are counted from nginx's log.

    .venv/bin/python -m bench.refetch_rate [--requests 1000] [--files 100] [--concurrency 1 8]
        [--fresh-for 1 0]
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


_WRK_SCRIPT = """
local urls = {%s}
local i = 0
local bad = 0
request = function()
  i = i + 1
  local u = urls[(i %% #urls) + 1]
  return wrk.format("POST", "/tftp/fetch_boot_file",
    {["Content-Type"] = "application/x-www-form-urlencoded", ["Accept"] = "json"},
    "prefix=" .. u[1] .. "&path=" .. u[2])
end
response = function(status, headers, body)
  -- "published" is the warm-up's own answer, reused within fresh_for of it
  if status ~= 200 or not (string.find(body, '"status": "unchanged"', 1, true)
                           or string.find(body, '"status": "published"', 1, true)) then
    bad = bad + 1
  end
end
done = function(summary, latency, requests)
  io.write(string.format("REQUESTS %%d BAD %%d\\n", summary.requests, bad))
end
"""


def _ours(work: Path, base: str, urls: list[str], total: int,
          concurrency: int) -> tuple[float, int]:
    """Seconds for ``total`` requests at the rate wrk measured (wrk runs for a duration), and
    how many requests wrk made in all.

    wrk, a C load generator, drives the API so that the client's own CPU does not count
    against the server on this 2-core machine; every answer is checked to be "unchanged".
    """
    script = work / "refetch.lua"
    entries = ", ".join(f'{{"{_prefix(u)}", "{u}"}}' for u in urls)
    script.write_text(_WRK_SCRIPT % entries)
    duration = max(2, round(total / 400))
    out = subprocess.run(
        ["wrk", "-t1", f"-c{concurrency}", f"-d{duration}s", "-s", str(script),
         f"{base}/tftp/fetch_boot_file"], capture_output=True, text=True, check=True).stdout
    done = [line.split() for line in out.splitlines() if line.startswith("REQUESTS")]
    requests, bad = int(done[0][1]), int(done[0][3])
    # The rate is what counts: wrk ran for a duration, ``total`` only scales it.
    if bad or requests < 200:
        raise SystemExit(f"wrk: {requests} requests, {bad} not an 'unchanged' 200:\n{out}")
    rate = float(next(line.split()[1] for line in out.splitlines()
                      if line.startswith("Requests/sec:")))
    return total / rate, requests


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
    ap.add_argument("--fresh-for", type=float, nargs="+", default=[1.0, 0.0],
                    help="the fresh_for settings to run tftproxy with (s)")
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
        _curl(curl_dir, urls, len(urls), 4)
        for fresh in args.fresh_for:
            env = {"TFTPROXY_FRESH_FOR": str(fresh)}
            with tftproxy_serve(work / "root", env) as server:
                base = server.url
                # Every file published once, so every later request is up to date.
                asyncio.run(_publish_all(base, urls))
                for conc in args.concurrency:
                    ours, curls, per_request = [], [], []
                    for _ in range(args.rounds):  # alternating, so noise hits both alike
                        before = _upstream_requests(nginx, urls)
                        seconds, made = _ours(work, base, urls, args.requests, conc)
                        ours.append(seconds)
                        per_request.append((_upstream_requests(nginx, urls) - before) / made)
                        curls.append(_curl(curl_dir, urls, args.requests, conc))
                    t_ours, t_curl = statistics.median(ours), statistics.median(curls)
                    print(f"fresh_for {fresh:g}: {args.requests} up-to-date refetches of "
                          f"{args.files} files, concurrency {conc}, median of {args.rounds} "
                          f"alternating rounds:")
                    print(f"  tftproxy API : {t_ours:6.2f} s  {args.requests / t_ours:8.0f} "
                          f"req/s  upstream requests per API request: "
                          f"{statistics.median(per_request):.3f}")
                    print(f"  curl -z each : {t_curl:6.2f} s  {args.requests / t_curl:8.0f} "
                          f"req/s  (one upstream request each)")
                    print(f"  throughput ratio tftproxy/curl: {t_curl / t_ours:.1f}x "
                          f"(target >= 10x)")
    finally:
        nginx.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


def _upstream_requests(nginx: Nginx, urls: list[str]) -> int:
    prefix = len(nginx.url(""))
    return sum(len(nginx.log_lines("/" + u[prefix:])) for u in urls)


async def _publish_all(base: str, urls: list[str]) -> None:
    async with aiohttp.ClientSession() as session:
        for url in urls:
            async with session.post(f"{base}/tftp/fetch_boot_file",
                                    data={"prefix": _prefix(url), "path": url}) as resp:
                if resp.status != 200:
                    raise SystemExit(f"warm-up fetch failed: {await resp.text()}")


if __name__ == "__main__":
    sys.exit(main())
