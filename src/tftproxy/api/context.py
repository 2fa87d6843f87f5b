"""What every route handler works with: one object under one application key."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web

from tftproxy.jobs.archive import Archives
from tftproxy.jobs.bootfiles import BootFiles
from tftproxy.settings.model import Settings
from tftproxy.store.aio import AsyncStore
from tftproxy.store.serving import ServedTree

if TYPE_CHECKING:
    from tftproxy.api.logs import LogBuffer

# The exposition text of /metrics and its content type; it does file work (off the loop).
MetricsRenderer = Callable[[], tuple[bytes, str]]
# The TFTP workers' last transfers, newest first (read from their shared memory).
RecentTransfers = Callable[[], list[dict[str, Any]]]
# HTTP boot transfers kept for the status page, like each TFTP worker's ring.
HTTP_TRANSFERS = 64


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
    logs: LogBuffer
    # The port each listener (http, https) serves on, once bound: what /v2/features tells
    # Foreman for HTTP boot URLs.
    ports: dict[str, int] = field(default_factory=dict)
    # The tree /httpboot/ and /EFI/ serve when httpboot_root_dir is not the TFTP root.
    httpboot_tree: ServedTree | None = None
    health: Health = field(default_factory=Health)
    metrics: MetricsRenderer | None = None
    tftp_transfers: RecentTransfers | None = None
    http_transfers: deque[dict[str, Any]] = field(
        default_factory=lambda: deque(maxlen=HTTP_TRANSFERS))
    # What the status page computed last, and when: a clean-up dry run walks the tree.
    page_cache: dict[str, Any] = field(default_factory=dict)
    archives: Archives = field(init=False)

    def __post_init__(self) -> None:
        # Archive requests of this app: they run as jobs of ``files``.
        object.__setattr__(self, "archives", Archives(self.files))


CONTEXT: web.AppKey[ApiContext] = web.AppKey("tftproxy", ApiContext)


def context(request: web.Request) -> ApiContext:
    return request.app[CONTEXT]
