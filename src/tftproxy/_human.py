"""Numbers for people: sizes, rates, durations and ages, as the CLI and the status page
print them (one way everywhere, so a size reads the same in a terminal and a browser)."""

from __future__ import annotations

import datetime
import math


def size(n: float | None) -> str:
    """A byte count in binary units: ``512 B``, ``1.5 MiB``; ``-`` when unknown."""
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def rate(bytes_per_second: float | None) -> str:
    return "-" if bytes_per_second is None else f"{size(bytes_per_second)}/s"


def duration(seconds: float | None) -> str:
    """``42 s``, ``3 min 5 s``, ``2 h 10 min``, ``3 d 4 h``; ``-`` when unknown."""
    if seconds is None or not math.isfinite(seconds):
        return "-"
    s = round(max(seconds, 0.0))
    if s < 60:
        return f"{s} s"
    for unit, span, sub, subspan in (("min", 60, "s", 1), ("h", 3600, "min", 60),
                                     ("d", 86400, "h", 3600)):
        if s < span * (60 if unit != "h" else 24) or unit == "d":
            major, rest = divmod(s, span)
            minor = rest // subspan
            return f"{major} {unit} {minor} {sub}" if minor else f"{major} {unit}"
    raise AssertionError("unreachable")


def parse_time(text: str | None) -> float | None:
    """Epoch seconds of an ISO 8601 time as the status report writes it."""
    if not text:
        return None
    try:
        return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def age(when: str | float | None, now: float) -> str:
    """How long ago (``5 min ago``) or how far ahead (``in 2 h``); ``never`` when unset."""
    stamp = parse_time(when) if isinstance(when, str) else when
    if stamp is None:
        return "never"
    delta = now - stamp
    if abs(delta) < 1:
        return "now"
    return f"{duration(delta)} ago" if delta > 0 else f"in {duration(-delta)}"
