"""Figures the hostile-input suite measures, printed at the end of the run.

Each test adds what it tried and what it saw (packets, requests, escapes, 5xx, crashes, RSS
and descriptors before and after); ``conftest.py`` prints the table in pytest's summary and
writes it to ``.cache/hostile-figures.json`` for the closing note.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

FIGURES: dict[str, dict[str, Any]] = {}
OUT = Path(__file__).resolve().parents[2] / ".cache" / "hostile-figures.json"


def record(section: str, **values: Any) -> None:
    """Add (or overwrite) figures of one attack."""
    FIGURES.setdefault(section, {}).update(values)


def process_usage(pid: int) -> dict[str, int]:
    """Resident memory (KiB) and open descriptors of a process, from /proc."""
    rss = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
    return {"rss_kib": rss, "fds": len(os.listdir(f"/proc/{pid}/fd"))}


def write_out() -> None:
    if not FIGURES:
        return
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(FIGURES, indent=1, sort_keys=True) + "\n")


def lines() -> list[str]:
    out = []
    for section in sorted(FIGURES):
        values = ", ".join(f"{k}={v}" for k, v in FIGURES[section].items())
        out.append(f"{section}: {values}")
    return out
