"""Benchmark: the cost of one revalidation round over several hundred boot sets.

`tftproxy serve` holds N boot sets (kernel + initrd each, all from one nginx, as from one
mirror), fetched at start from its prefetch list. A round is `POST /tftp/sync` over every set,
the same dispatcher and transaction the background revalidation runs. Measured per round:
requests nginx logged, CPU seconds of the tftproxy process (/proc/<pid>/stat), wall time;
first with every set up to date, then with a tenth of the sets respun. The peer, in the same
run, is what a cron job around smart-proxy would do: one `curl -z` per file
(`--remote-time --time-cond`), at the same concurrency as the round; its CPU is the children's
rusage. Then the idle cost: tftproxy's CPU over a window with every set scheduled, none due.

    .venv/bin/python -m bench.sync_round [--sets 300] [--idle 31]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml
from tests.helpers.nginx import Nginx

from bench.common import tftproxy_serve

FILES = ("vmlinuz", "initrd.img")
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _cpu_seconds(pid: int) -> float:
    """utime + stime of a process, all its threads (fields 14 and 15 of /proc/<pid>/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _call(method: str, url: str, timeout: float = 600) -> dict:
    req = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    with _DIRECT.open(req, timeout=timeout) as resp:
        return json.loads(resp.read())


def _log_count(nginx: Nginx) -> tuple[int, dict[str, int]]:
    """Requests nginx has logged for the sets' files and their manifests, by status."""
    nginx.log_lines("/")  # settles the log
    by_status: dict[str, int] = {}
    lines = nginx.access_log.read_text().splitlines()
    lines = [line for line in lines if "/__settle__" not in line]
    for line in lines:
        status = line.split()[2]
        by_status[status] = by_status.get(status, 0) + 1
    return len(lines), by_status


def _round(base: str, pid: int, nginx: Nginx) -> dict:
    before_n, before = _log_count(nginx)
    cpu0, t0 = _cpu_seconds(pid), time.perf_counter()
    run = _call("POST", f"{base}/tftp/sync")
    while run["state"] != "done":  # 202 after fetch_wait: follow the run
        time.sleep(0.2)
        run = _call("GET", base + run["url"])
    wall, cpu = time.perf_counter() - t0, _cpu_seconds(pid) - cpu0
    after_n, after = _log_count(nginx)
    return {"wall": wall, "cpu": cpu, "requests": after_n - before_n,
            "by_status": {k: after.get(k, 0) - before.get(k, 0) for k in after
                          if after.get(k, 0) != before.get(k, 0)},
            "unchanged": run["unchanged"], "updated": run["updated"], "failed": run["failed"]}


def _curl_round(dst: Path, urls: list[str], concurrency: int) -> dict:
    def one(url: str) -> None:
        out = dst / url.split("/", 3)[3].replace("/", "_")
        subprocess.run(["curl", "-sS", "--fail", "--remote-time", "--time-cond", str(out),
                        "--output", str(out), url], check=True)

    usage0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, urls))
    wall = time.perf_counter() - t0
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (usage.ru_utime - usage0.ru_utime) + (usage.ru_stime - usage0.ru_stime)
    return {"wall": wall, "cpu": cpu, "requests": len(urls)}


def _show(label: str, r: dict) -> None:
    extra = f"  ({r['unchanged']} unchanged, {r['updated']} updated, {r['failed']} failed; " \
            f"nginx {r['by_status']})" if "updated" in r else ""
    print(f"  {label:34s} {r['requests']:6d} requests  {r['cpu']:6.2f} s CPU  "
          f"{r['wall']:6.2f} s wall{extra}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", type=int, default=300)
    ap.add_argument("--respin", type=float, default=0.1, help="fraction of sets respun")
    ap.add_argument("--idle", type=float, default=31.0,
                    help="seconds of idle measurement (one catalogue refresh is 30 s)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tftproxy-bench-"))
    nginx = Nginx(work / "nginx")
    try:
        prefetch, urls = [], []
        for i in range(args.sets):
            members = []
            for f in FILES:
                nginx.put(f"m{i}/images/pxeboot/{f}", os.urandom(32 * 1024 if f == "vmlinuz"
                                                                else 96 * 1024))
                members.append(nginx.url(f"m{i}/images/pxeboot/{f}"))
            prefetch.append({"prefix": f"boot/m{i}", "urls": members})
            urls += members
        env = {"TFTPROXY_PREFETCH": yaml.safe_dump(prefetch, default_flow_style=True,
                                                   width=1 << 30).strip(),
               "TFTPROXY_MIN_FREE_SPACE": "0", "TFTPROXY_FETCH_WAIT": "5"}
        curl_dir = work / "curl"
        curl_dir.mkdir()
        with tftproxy_serve(work / "root", env) as server:
            t0 = time.perf_counter()
            while True:  # the prefetch at start publishes every set
                sync = _call("GET", f"{server.url}/tftp/status")["sync"]
                if sync["counts"].get("checked", 0) >= args.sets and not sync["running"]:
                    break
                if time.perf_counter() - t0 > 900:
                    raise SystemExit(f"prefetch did not finish: {sync}")
                time.sleep(0.5)
            print(f"prefetch of {args.sets} sets at start: {time.perf_counter() - t0:.1f} s "
                  f"({sync['counts']})")
            _curl_round(curl_dir, urls, 2)  # the peer's copies, so its round is up to date too
            ours = _round(server.url, server.pid, nginx)
            theirs = _curl_round(curl_dir, urls, 2)
            print(f"one round over {args.sets} sets ({len(urls)} files), all up to date, "
                  f"concurrency 2 per host (sync_host_concurrency):")
            _show("tftproxy sync (whole-set checks)", ours)
            _show("curl -z per file", theirs)
            print(f"  tftproxy/curl: CPU {ours['cpu'] / theirs['cpu']:.2f}x, "
                  f"wall {ours['wall'] / theirs['wall']:.2f}x")
            respun = max(1, int(args.sets * args.respin))
            future = time.time() + 5
            for i in range(respun):
                for f in FILES:
                    nginx.put(f"m{i}/images/pxeboot/{f}", os.urandom(32 * 1024 if f == "vmlinuz"
                                                                    else 96 * 1024), future)
            ours = _round(server.url, server.pid, nginx)
            theirs = _curl_round(curl_dir, urls, 2)
            print(f"one round with {respun} sets respun (both files):")
            _show("tftproxy sync", ours)
            _show("curl -z per file", theirs)
            if args.idle > 0:
                cpu0 = _cpu_seconds(server.pid)
                time.sleep(args.idle)
                idle = _cpu_seconds(server.pid) - cpu0
                print(f"idle, {args.sets} sets scheduled, none due: {idle:.2f} s CPU in "
                      f"{args.idle:.0f} s")
    finally:
        nginx.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
