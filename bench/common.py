"""Shared bits of the benchmarks: timing child processes with their peak RSS, medians."""

from __future__ import annotations

import os
import statistics
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass


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
