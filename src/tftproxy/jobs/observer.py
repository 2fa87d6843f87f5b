"""What the jobs tell an observer (metrics): each fetch request's end, verification failures."""

from __future__ import annotations

from typing import Protocol

from tftproxy.jobs.results import FetchResult


class JobObserver(Protocol):
    """Every method must be cheap and never raise: it runs on the event loop."""

    def fetch_started(self) -> None: ...

    def fetch_finished(self, result: FetchResult, seconds: float) -> None: ...

    def verification_failed(self, reason: str) -> None:
        """A download did not match its distribution's checksums (or none could be read
        where ``verify: require`` needs one)."""
