"""A download's rate and time left, from its progress callbacks."""

from __future__ import annotations

import pytest

from tftproxy.jobs.progress import WINDOW, RateMeter


def test_rate_and_eta_follow_the_bytes_of_the_last_seconds() -> None:
    m = RateMeter()
    for i in range(21):  # 100 kB every 0.1 s: 1 MB/s
        m.add(i * 100_000, now=100 + i * 0.1)
    assert m.rate(now=102.0) == pytest.approx(1_000_000)
    # A faster mirror: the rate of the last window, not the average since the start.
    for i in range(1, 2 * int(WINDOW) * 10):
        m.add(2_000_000 + i * 300_000, now=102 + i * 0.1)
    last = 102 + (2 * int(WINDOW) * 10 - 1) * 0.1
    assert m.rate(now=last) == pytest.approx(3_000_000, rel=0.05)


def test_a_stalled_download_falls_to_zero_and_has_no_eta() -> None:
    m = RateMeter()
    for i in range(11):
        m.add(i * 50_000, now=10 + i * 0.1)
    assert m.rate(now=11.0) == pytest.approx(500_000)
    assert 0 < m.rate(now=15.0) < 500_000  # type: ignore[operator]
    assert m.rate(now=11.0 + WINDOW + 1) == 0
    assert m.to_json(500_000, 1_000_000) == {"rate": 0, "eta": None, "percent": 50.0}


def test_a_retry_restarts_the_meter() -> None:
    m = RateMeter()
    for i in range(10):
        m.add(1_000_000 + i * 10_000, now=i * 0.1)
    m.add(0, now=1.0)  # the body starts again
    m.add(20_000, now=1.5)
    assert m.rate(now=1.5) == pytest.approx(40_000)


def test_no_rate_before_two_samples() -> None:
    m = RateMeter()
    assert m.rate(now=0) is None
    m.add(10, now=0)
    assert m.rate(now=0.1) is None
    assert m.eta(10, None) is None
