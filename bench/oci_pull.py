"""Benchmark: one large boot file from a local docker-registry, tftproxy against curl.

`tftproxy fetch oci+http://...#big.bin` (resolve the tag, read the manifest, stream the layer
hashed and size-checked, fsync, publish) against `curl -o` of the same blob URL followed by
`sync -d` (the same durability), and against `tftproxy fetch` of the same bytes over plain
HTTP from nginx (what the OCI path costs over a plain download). Runs alternate so the
machine's noise hits all alike; the figures are median ratios within one run. Each tftproxy
run gets a new root: a full download, not a layer already in the store.

    .venv/bin/python -m bench.oci_pull [--size-mib 512] [--runs 5]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.helpers.nginx import Nginx
from tests.helpers.registry import Pusher, Registry

from bench.common import Run, median, timed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mib", type=int, default=512)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tftproxy-bench-", dir="/var/tmp"))
    registry = Registry(work / "registry")
    nginx = Nginx(work / "nginx")
    try:
        data = os.urandom(1024 * 1024) * args.size_mib
        Pusher(registry, work / "push").push("bench/netboot", "1", {"big.bin": data})
        layer = "sha256:" + hashlib.sha256(data).hexdigest()
        nginx.put("big.bin", data)
        del data
        tftproxy = [sys.executable, "-m", "tftproxy", "fetch"]
        out = work / "out.bin"
        results: dict[str, list[Run]] = {"tftproxy oci": [], "tftproxy http": [],
                                         "curl+fsync": []}
        env = {**os.environ, "TFTPROXY_MIN_FREE_SPACE": "0"}
        for i in range(args.runs):
            cmds = {
                "tftproxy oci": [*tftproxy, "--root", str(work / f"oci-{i}"), "boot/b",
                                 registry.url("bench/netboot:1", "big.bin")],
                "tftproxy http": [*tftproxy, "--root", str(work / f"http-{i}"), "boot/b",
                                  nginx.url("big.bin")],
                "curl+fsync": ["sh", "-c", f"curl -sS --fail -o {out} "
                               f"http://{registry.host}/v2/bench/netboot/blobs/{layer} "
                               f"&& sync -d {out}"],
            }
            for tool, cmd in cmds.items():
                subprocess.run(["sync"], check=False)  # untimed: no tool pays another's writes
                run = timed(cmd, env=env)
                if run.returncode != 0:
                    print(f"{tool} failed", file=sys.stderr)
                    return 1
                results[tool].append(run)
            for d in (work / f"oci-{i}", work / f"http-{i}"):
                shutil.rmtree(d, ignore_errors=True)
            out.unlink(missing_ok=True)
        med = {t: median([r.seconds for r in rs]) for t, rs in results.items()}
        print(f"\n{args.size_mib} MiB layer from docker-registry on loopback, "
              f"{args.runs} alternating runs each:")
        for tool, runs in results.items():
            # No peak RSS here: a child's counts the bench's own pages from before its exec.
            secs = ", ".join(f"{r.seconds:.2f}" for r in runs)
            print(f"  {tool:14s} median {med[tool]:6.2f} s ({args.size_mib / med[tool]:7.1f} "
                  f"MiB/s)  runs: {secs}")
        print(f"  ratio tftproxy oci / curl+fsync: {med['tftproxy oci'] / med['curl+fsync']:.3f}")
        print(f"  ratio tftproxy oci / tftproxy http: "
              f"{med['tftproxy oci'] / med['tftproxy http']:.3f}")
    finally:
        nginx.stop()
        registry.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
