"""When a boot set is revalidated next: the rules, pure (times and a random number in).

* An up-to-date or updated set is checked again after ``interval``, stretched or shrunk at
  random by up to ``jitter`` (a fraction), so sets published together drift apart and a
  mirror never sees all of them at once.
* A set nobody asked for in ``idle_after`` seconds is idle: checked every ``idle_interval``
  instead (never, when that is 0). Prefetched sets are never idle: the admin asked for them.
* After a failure the delay is ``retry``, doubling with each further failure up to
  ``backoff_max``, and shrunk at random by up to ``jitter`` (so the cap holds): a failing
  or flapping upstream sees fewer and fewer requests, never a storm. A success resets it.
* A set seen for the first time is due one interval after it was last checked (by a
  request); if that is past, at a random moment within the first ``jitter`` of an
  interval, so a first start with hundreds of sets spreads them out.
"""

from __future__ import annotations

from tftproxy.jobs.options import SyncOptions


def is_idle(asked_at: float, now: float, options: SyncOptions, *, prefetched: bool) -> bool:
    if prefetched or options.idle_after <= 0:
        return False
    return now - asked_at > options.idle_after


def base_interval(idle: bool, options: SyncOptions) -> float:
    """The interval between successful checks; 0 means the set is not revalidated."""
    if options.interval <= 0:
        return 0.0
    return options.idle_interval if idle else options.interval


def backoff_delay(failures: int, options: SyncOptions, u: float) -> float:
    """The delay after ``failures`` (>= 1) consecutive failures; ``u`` is uniform in [0, 1)."""
    exponent = min(max(failures - 1, 0), 60)  # 2**60 s is past any cap: no overflow
    delay = min(options.retry * 2.0**exponent, options.backoff_max)
    return delay * (1.0 - options.jitter * u)


def next_check(now: float, *, failures: int, idle: bool, options: SyncOptions,
               u: float) -> float | None:
    """When to check a set again after a check that ended at ``now``; None: not scheduled."""
    base = base_interval(idle, options)
    if base <= 0:
        return None
    if failures > 0:
        return now + backoff_delay(failures, options, u)
    return now + base * (1.0 + options.jitter * (2.0 * u - 1.0))


def first_check(now: float, last_checked: float, *, idle: bool, options: SyncOptions,
                u: float) -> float | None:
    """When to check a set first seen now, last checked (by a request) at ``last_checked``."""
    base = base_interval(idle, options)
    if base <= 0:
        return None
    due = last_checked + base * (1.0 + options.jitter * (2.0 * u - 1.0))
    if due > now:
        return due
    return now + base * options.jitter * u
