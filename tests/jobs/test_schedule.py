"""The revalidation schedule's rules: jitter within bounds, backoff that doubles to its cap,
idle sets checked less often, a first start spread out."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tftproxy.jobs.options import SyncOptions
from tftproxy.jobs.schedule import backoff_delay, first_check, is_idle, next_check

OPTS = SyncOptions(interval=3600.0, jitter=0.1, retry=60.0, backoff_max=3000.0,
                   idle_after=86400.0, idle_interval=86400.0)
NOW = 1_700_000_000.0


@given(st.floats(0.0, 0.999999))
def test_a_good_check_is_followed_by_one_interval_give_or_take_the_jitter(u: float) -> None:
    due = next_check(NOW, failures=0, idle=False, options=OPTS, u=u)
    assert due is not None
    assert 3600 * 0.9 <= due - NOW <= 3600 * 1.1


def test_backoff_doubles_from_retry_up_to_its_cap() -> None:
    delays = [backoff_delay(n, OPTS, 0.0) for n in range(1, 10)]
    assert delays == [60, 120, 240, 480, 960, 1920, 3000, 3000, 3000]
    # An absurd run of failures neither overflows nor passes the cap.
    assert backoff_delay(10_000, OPTS, 0.0) == 3000


@given(st.integers(1, 200), st.floats(0.0, 0.999999))
def test_jitter_never_lifts_a_backoff_over_its_cap(failures: int, u: float) -> None:
    delay = backoff_delay(failures, OPTS, u)
    assert 0 < delay <= OPTS.backoff_max
    assert delay >= min(OPTS.retry * 2 ** min(failures - 1, 60), OPTS.backoff_max) * 0.9


def test_a_failed_check_is_retried_after_the_backoff_not_the_interval() -> None:
    assert next_check(NOW, failures=3, idle=False, options=OPTS, u=0.0) == NOW + 240


def test_idle_sets_wait_longer_and_prefetched_sets_are_never_idle() -> None:
    asked = NOW - 2 * 86400
    assert is_idle(asked, NOW, OPTS, prefetched=False)
    assert not is_idle(asked, NOW, OPTS, prefetched=True)
    assert not is_idle(NOW - 3600, NOW, OPTS, prefetched=False)
    assert next_check(NOW, failures=0, idle=True, options=OPTS, u=0.5) == NOW + 86400
    never = SyncOptions(interval=3600.0, idle_interval=0.0)
    assert next_check(NOW, failures=0, idle=True, options=never, u=0.5) is None
    assert not is_idle(0.0, NOW, SyncOptions(idle_after=0.0), prefetched=False)


def test_no_interval_schedules_nothing() -> None:
    off = SyncOptions(interval=0.0)
    assert next_check(NOW, failures=0, idle=False, options=off, u=0.5) is None
    assert next_check(NOW, failures=2, idle=False, options=off, u=0.5) is None
    assert first_check(NOW, NOW - 10, idle=False, options=off, u=0.5) is None


@pytest.mark.parametrize("u", [0.0, 0.25, 0.999])
def test_a_set_seen_first_is_due_an_interval_after_its_last_check(u: float) -> None:
    due = first_check(NOW, NOW - 600, idle=False, options=OPTS, u=u)
    assert due is not None and NOW + 3600 * 0.9 - 600 <= due <= NOW + 3600 * 1.1 - 600


def test_overdue_sets_at_a_first_start_spread_over_the_jitter_window() -> None:
    dues = [first_check(NOW, 0.0, idle=False, options=OPTS, u=i / 100) for i in range(100)]
    assert all(d is not None and NOW <= d < NOW + 360 for d in dues)
    assert len({round(d or 0) for d in dues}) > 50
