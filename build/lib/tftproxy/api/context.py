"""What every route handler works with: one object under one application key."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web

from tftproxy.jobs.bootfiles import BootFiles
from tftproxy.settings.model import Settings
from tftproxy.store.aio import AsyncStore

# The exposition text of /metrics and its content type; it does file work (off the loop).
MetricsRenderer = Callable[[], tuple[bytes, str]]


@dataclass
class Health:
    """What readiness depends on; ``serve`` keeps it current."""

    recovered: bool = False
    listening: bool = False
    draining: bool = False
    # Further checks: each returns what is wrong, or None.
    checks: list[Callable[[], str | None]] = field(default_factory=list)

    def problems(self) -> list[str]:
        out = []
        if not self.recovered:
            out.append("the store has not finished crash recovery")
        if not self.listening:
            out.append("the listeners are not all up")
        if self.draining:
            out.append("tftproxy is shutting down")
        out += [p for check in self.checks if (p := check()) is not None]
        return out


@dataclass
class ApiContext:
    # Replaced as a whole by a reload (SIGHUP): handlers read it per request.
    settings: Settings
    files: BootFiles
    store: AsyncStore
    health: Health = field(default_factory=Health)
    metrics: MetricsRenderer | None = None


CONTEXT: web.AppKey[ApiContext] = web.AppKey("tftproxy", ApiContext)


def context(request: web.Request) -> ApiContext:
    return request.app[CONTEXT]
