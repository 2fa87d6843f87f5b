"""Limits a server sets itself: open descriptors, and how many log lines a flood may cost."""

from __future__ import annotations

import contextlib
import logging
import resource
import time


def raise_fd_limit(wanted: int) -> int:
    """Raise the soft limit on open descriptors towards ``wanted`` (never above the hard
    limit, never lowering it); returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class LogBudget:
    """At most ``rate`` log lines a second, in bursts of up to ``burst``.

    A server logs a line per transfer, per refusal, per malformed request; a flood of them
    would otherwise write a line per datagram or connection and fill the disk the logs live
    on. What is over the budget is counted and reported in one line (on ``log``) once lines
    are allowed again.
    """

    def __init__(self, log: logging.Logger, rate: float = 20.0, burst: int = 200) -> None:
        self.log = log
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._last = time.monotonic()
        self.suppressed = 0

    def allow(self) -> bool:
        now = time.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        if self._tokens < 1:
            self.suppressed += 1
            return False
        self._tokens -= 1
        if self.suppressed:
            self.log.warning("%d log lines suppressed (more than %g a second)",
                             self.suppressed, self.rate)
            self.suppressed = 0
        return True
