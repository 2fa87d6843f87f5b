"""Numbers for people, and verification in a word: what the CLI and the page print."""

from __future__ import annotations

import pytest

from tftproxy import _human
from tftproxy.jobs.status import verification_word


@pytest.mark.parametrize(("n", "text"), [
    (0, "0 B"), (1023, "1023 B"), (1024, "1.0 KiB"), (1536, "1.5 KiB"),
    (83553906688, "77.8 GiB"), (270553174016, "252.0 GiB"), (5 * 2**40, "5.0 TiB"),
    (None, "-"),
])
def test_sizes(n: int | None, text: str) -> None:
    assert _human.size(n) == text


@pytest.mark.parametrize(("seconds", "text"), [
    (0.4, "0 s"), (59, "59 s"), (60, "1 min"), (65, "1 min 5 s"), (3599, "59 min 59 s"),
    (3600, "1 h"), (5100, "1 h 25 min"), (86400, "1 d"), (3 * 86400 + 7200, "3 d 2 h"),
    (None, "-"), (float("inf"), "-"),
])
def test_durations(seconds: float | None, text: str) -> None:
    assert _human.duration(seconds) == text


def test_ages_past_and_future() -> None:
    now = 1_800_000_000.0
    assert _human.age(now - 300, now) == "5 min ago"
    assert _human.age(now + 7200, now) == "in 2 h"
    assert _human.age("2027-01-15T08:00:00Z", _human.parse_time("2027-01-15T08:00:42Z") or 0) \
        == "42 s ago"
    assert _human.age(None, now) == "never" and _human.age("garbage", now) == "never"
    assert _human.rate(1_572_864) == "1.5 MiB/s" and _human.rate(None) == "-"


@pytest.mark.parametrize(("how", "word"), [
    ("sha256 matches .treeinfo at http://m/os/.treeinfo", "verified"),
    ("md5 matches md5sum.txt in boot.iso", "verified (md5)"),
    ("sha256 is the layer's digest in manifest sha256:ab", "digest"),
    ("verification off", "off"),
    ("no checksum manifest found (looked for .treeinfo ...)", "no manifest"),
    ("images/x is not listed with a sha256 in SHA256SUMS at http://m/", "unlisted"),
    ("http://o/x is outside the tree of .treeinfo at http://m/", "unlisted"),
    ("adopted, not verified", "adopted"), ("alias of grubx64.efi", "alias"),
    (None, "not checked"), ("not checked", "not checked"), ("something new", "unverified"),
])
def test_verification_in_a_word(how: str | None, word: str) -> None:
    assert verification_word(how) == word
