"""What every route handler works with: one object under one application key."""

from __future__ import annotations

from dataclasses import dataclass, field

from aiohttp import web

from tftproxy.jobs.archive import Archives
from tftproxy.jobs.bootfiles import BootFiles
from tftproxy.settings.model import Settings
from tftproxy.store.aio import AsyncStore


@dataclass(frozen=True)
class ApiContext:
    settings: Settings
    files: BootFiles
    store: AsyncStore
    archives: Archives = field(init=False)

    def __post_init__(self) -> None:
        # Archive requests of this app: they run as jobs of ``files``.
        object.__setattr__(self, "archives", Archives(self.files))


CONTEXT: web.AppKey[ApiContext] = web.AppKey("tftproxy", ApiContext)


def context(request: web.Request) -> ApiContext:
    return request.app[CONTEXT]
