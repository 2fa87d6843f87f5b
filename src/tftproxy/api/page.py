"""The status page at ``/`` and ``/status``: what an admin wants to see, in a browser.

Server-rendered HTML (Jinja2, autoescaped: names and URLs come from requests and upstreams),
readable without JavaScript, refreshing itself by ``<meta http-equiv=refresh>`` (faster
while a download runs). Who may read it is the ``status_page`` setting (``api/auth``).

Everything comes from where ``GET /tftp/status`` takes it (the store, through its threads),
plus the running downloads, the log buffer's errors, the TFTP workers' shared ring of recent
transfers and HTTP boot's. What clean-up would free needs a walk of the whole tree: it runs
as a clean-up dry run on the store's threads, at most once per :data:`GC_EVERY` seconds,
and a page never waits for it longer than :data:`GC_WAIT` (it says "being computed" and the
next refresh shows it).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from importlib import resources
from typing import Any

import jinja2
from aiohttp import web

from tftproxy import __version__, _human
from tftproxy.api.bootfiles import downloads
from tftproxy.api.context import ApiContext, context
from tftproxy.jobs.status import status_report

PATHS = ("/", "/status")
GC_EVERY = 60.0
GC_WAIT = 1.0
FAILURES = 20
TRANSFERS = 30
REFRESH_BUSY = 3
REFRESH_IDLE = 30

# Read and compiled at import, never on the event loop.
_ENV = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined,
                          trim_blocks=True, lstrip_blocks=True)
_ENV.filters.update(size=_human.size, rate=_human.rate, duration=_human.duration)
_TEMPLATE = _ENV.from_string(
    resources.files("tftproxy.api").joinpath("templates/status.html").read_text("utf-8"))


async def _gc_preview(ctx: ApiContext) -> dict[str, Any] | None:
    """The last dry run if fresh; else one started (or joined), waited for briefly."""
    cache = ctx.page_cache
    task: asyncio.Task[dict[str, Any]] | None = cache.get("gc_task")
    fresh = cache.get("gc_at", 0.0) > time.monotonic() - GC_EVERY
    if task is None or (task.done() and not fresh):
        task = asyncio.ensure_future(_dry_run(ctx))
        cache["gc_task"], cache["gc_at"] = task, time.monotonic()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.shield(task), GC_WAIT)
    if not task.done() or task.cancelled() or task.exception() is not None:
        return cache.get("gc_last")
    cache["gc_last"] = task.result()
    return task.result()


async def _dry_run(ctx: ApiContext) -> dict[str, Any]:
    return (await ctx.store.collect(ctx.settings.gc_grace, dry_run=True)).to_json()


def _failures(ctx: ApiContext) -> list[dict[str, Any]]:
    errors = [r for r in ctx.logs.records() if r["level"] in ("ERROR", "FATAL")]
    return errors[::-1][:FAILURES]


def _transfers(ctx: ApiContext) -> list[dict[str, Any]]:
    tftp = ctx.tftp_transfers() if ctx.tftp_transfers is not None else []
    both = [*tftp, *ctx.http_transfers]
    both.sort(key=lambda t: t["end"], reverse=True)
    return both[:TRANSFERS]


async def status_page(request: web.Request) -> web.StreamResponse:
    ctx = context(request)
    report = await ctx.store.call(status_report)
    # No store yet (nothing fetched): nothing to clean, and a dry run would make none.
    gc = None if report["disk"] is None else await _gc_preview(ctx)
    running = downloads(ctx)
    now = time.time()
    html = _TEMPLATE.render(
        version=__version__, report=report, downloads=running, gc=gc,
        failures=_failures(ctx), transfers=_transfers(ctx),
        sync=ctx.files.sync.summary(), refresh=REFRESH_BUSY if running else REFRESH_IDLE,
        now=now, age=lambda when: _human.age(when, now),
        clock=lambda stamp: time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp)))
    return web.Response(text=html, content_type="text/html", charset="utf-8",
                        headers={"Cache-Control": "no-store"})
