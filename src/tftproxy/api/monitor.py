"""``/health`` (liveness), ``/ready`` (readiness) and ``/metrics`` (Prometheus): open to all,
like ``/features``, so probes and scrapers need no client certificate."""

from __future__ import annotations

import asyncio

from aiohttp import web

from tftproxy.api.context import context
from tftproxy.api.responses import text_response


async def health(request: web.Request) -> web.StreamResponse:
    """The process answers: its event loop runs (a stuck loop answers nothing)."""
    return text_response(200, "ok")


async def ready(request: web.Request) -> web.StreamResponse:
    """200 when the store is recovered, every listener is up, the TFTP workers run and the
    service is not shutting down; 503 naming what is not."""
    problems = context(request).health.problems()
    if problems:
        return text_response(503, "Not ready: " + "; ".join(problems))
    return text_response(200, "ready")


async def metrics(request: web.Request) -> web.StreamResponse:
    render = context(request).metrics
    if render is None:
        return text_response(404, "Not found: /metrics is turned off (setting metrics: false)")
    body, content_type = await asyncio.get_running_loop().run_in_executor(None, render)
    return web.Response(body=body, headers={"Content-Type": content_type})
