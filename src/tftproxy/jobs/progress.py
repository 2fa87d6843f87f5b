"""A download's rate and time left, from the progress callbacks it already makes.

The rate is measured over the last :data:`WINDOW` seconds rather than since the start: a
mirror that slows down (or a job that waited for a lock before its first byte) shows the
rate it has now, which is what the time left depends on.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

WINDOW = 10.0
# One sample per interval bounds the memory of a job whatever the callback rate.
_INTERVAL = 0.25


class RateMeter:
    """Bytes per second over a sliding window, and the seconds left at that rate."""

    def __init__(self) -> None:
        self._samples: deque[tuple[float, int]] = deque(maxlen=int(WINDOW / _INTERVAL) + 2)

    def add(self, done: int, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        s = self._samples
        if s and done < s[-1][1]:
            s.clear()  # a retry starts the body again: its rate starts again too
        if len(s) > 1 and now - s[-2][0] < _INTERVAL:
            s[-1] = (now, done)  # the latest bytes, without a sample per callback
        else:
            s.append((now, done))
        while len(s) > 2 and now - s[1][0] > WINDOW:
            s.popleft()

    def rate(self, now: float | None = None) -> float | None:
        """Bytes per second, or None before two samples a moment apart.

        A stalled body makes no callbacks: the time since the last one counts as time
        without bytes, so the rate of a stalled download falls to zero instead of staying
        at what it was."""
        now = time.monotonic() if now is None else now
        s = [(t, n) for t, n in self._samples if now - t <= WINDOW] or list(self._samples)[-1:]
        if not s:
            return None
        if now - s[-1][0] > _INTERVAL:
            s.append((now, s[-1][1]))
        if len(s) < 2 or s[-1][0] - s[0][0] < 0.2:
            return None
        return (s[-1][1] - s[0][1]) / (s[-1][0] - s[0][0])

    def eta(self, done: int, total: int | None) -> float | None:
        """Seconds left, when the total is known and bytes are arriving."""
        rate = self.rate()
        if total is None or not rate or rate <= 0:
            return None
        return max(0.0, (total - done) / rate)

    def to_json(self, done: int, total: int | None) -> dict[str, Any]:
        rate, eta = self.rate(), self.eta(done, total)
        return {"rate": None if rate is None else round(rate),
                "eta": None if eta is None else round(eta, 1),
                "percent": None if not total else round(min(done / total, 1.0) * 100, 1)}
