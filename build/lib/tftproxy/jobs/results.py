"""What a fetch job answers: its result, and the wire forms the API and CLI show."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Literal

ResultStatus = Literal["published", "unchanged", "ignored", "failed"]


def iso_time(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


@dataclass(frozen=True)
class FetchResult:
    status: ResultStatus
    name: str
    source: str
    size: int | None = None
    sha256: str | None = None
    final_url: str | None = None
    message: str | None = None
    set: str | None = None
    generation: int | None = None

    @property
    def ok(self) -> bool:
        return self.status != "failed"

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"name": self.name, "status": self.status, "source": self.source}
        if self.ok:
            data.update(size=self.size, sha256=self.sha256)
            if self.final_url and self.final_url != self.source:
                data["final_url"] = self.final_url
            if self.set is not None:
                data["set"] = self.set
                data["generation"] = self.generation
        else:
            data["error"] = self.message
        return data


def failed(name: str, url: str, reason: str, *, kept: bool) -> FetchResult:
    """A failure, saying whether the previous version stays published."""
    suffix = "previous version kept" if kept else "nothing published"
    return FetchResult(status="failed", name=name, source=url, message=f"{reason}; {suffix}")


def failure_text(url: str, result: FetchResult) -> str:
    """The plain-text line that names a failed fetch (API bodies, logs)."""
    return f"TFTP: Failed to fetch boot file: {url}: {result.message}"
