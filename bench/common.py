"""Shared bits of the benchmarks: timing child processes with their peak RSS, medians."""

from __future__ import annotations

import contextlib
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Run:
    seconds: float
    max_rss_kib: int
    returncode: int


def timed(cmd: Sequence[str], env: dict[str, str] | None = None) -> Run:
    """Wall time and peak RSS (from wait4) of one child process."""
    start = time.perf_counter()
    proc = subprocess.Popen(list(cmd), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0 and proc.stderr is not None:
        print(proc.stderr.read().decode(errors="replace")[-2000:])
    return Run(elapsed, int(usage.ru_maxrss), proc.returncode)


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def drop_caches_best_effort() -> None:
    # Fair cold-ish runs when allowed (root); harmless elsewhere.
    try:
        subprocess.run(["sync"], check=False)
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("1\n")
    except OSError:
        pass


@dataclass(frozen=True)
class Served:
    url: str
    pid: int

    def peak_rss_mib(self) -> float:
        """The server's peak resident memory so far (VmHWM)."""
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        return float("nan")


@contextlib.contextmanager
def tftproxy_serve(root: Path, env: dict[str, str] | None = None) -> Iterator[Served]:
    """`tftproxy serve` on a free loopback port, for the length of the block."""
    from tests.helpers.nginx import free_port

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tftproxy", "serve", "--root", str(root), "--listen",
         f"127.0.0.1:{port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, **(env or {})})
    try:
        for _ in range(400):
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                if proc.poll() is not None:
                    raise SystemExit("tftproxy serve exited at start") from None
                time.sleep(0.05)
        else:
            raise SystemExit("tftproxy serve did not start listening")
        yield Served(f"http://127.0.0.1:{port}", proc.pid)
    finally:
        proc.terminate()
        proc.wait(10)
