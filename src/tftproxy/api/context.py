"""What every route handler works with: one object under one application key."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from tftproxy.jobs.bootfiles import BootFiles
from tftproxy.settings.model import Settings
from tftproxy.store.aio import AsyncStore


@dataclass(frozen=True)
class ApiContext:
    settings: Settings
    files: BootFiles
    store: AsyncStore


CONTEXT: web.AppKey[ApiContext] = web.AppKey("tftproxy", ApiContext)


def context(request: web.Request) -> ApiContext:
    return request.app[CONTEXT]
