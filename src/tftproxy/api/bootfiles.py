"""``POST /tftp/fetch_boot_file``, its job status route, ``/tftp/prune`` and ``/tftp/status``.

The request waits up to ``fetch_wait`` seconds: Foreman learns the result (200 JSON, or a
non-2xx plain-text error) instead of smart-proxy's blind 200; a longer download answers 202
with the job's status URL.
"""

from __future__ import annotations

import math

from aiohttp import web

from tftproxy.api.context import context
from tftproxy.api.params import read_params
from tftproxy.api.responses import error_response, text_response
from tftproxy.errors import InputError, JobNotFound, TftproxyError
from tftproxy.jobs.results import failure_text
from tftproxy.jobs.status import status_report

CONTEXT = "TFTP: Failed to fetch boot file"


async def fetch_boot_file(request: web.Request) -> web.StreamResponse:
    ctx = context(request)
    try:
        params = await read_params(request)
        path = params.get("path", "")
        job = await ctx.files.request(params.get("prefix", ""), path)
    except TftproxyError as exc:
        return error_response(CONTEXT, exc)
    result = await job.wait(ctx.settings.fetch_wait)
    if result is None:
        body = job.to_json()
        return web.json_response(body, status=202, headers={"Location": body["url"]})
    if result.ok:
        return web.json_response(result.to_json())
    return text_response(502, failure_text(path, result))


async def fetch_job_status(request: web.Request) -> web.StreamResponse:
    job = context(request).files.job(request.match_info["job_id"])
    if job is None:
        return error_response("TFTP: fetch job not found",
                              JobNotFound("unknown id or expired"))
    return web.json_response(job.to_json())


async def prune(request: web.Request) -> web.StreamResponse:
    """Clean-up with ``age`` as the grace period (the route proposed upstream)."""
    raw = request.query.get("age")
    try:
        age = float(raw) if raw is not None else None
    except ValueError:
        age = None
    if age is None or not math.isfinite(age) or age <= 0:
        return error_response("TFTP: prune", InputError(
            f"age must be a positive number of seconds, got {raw!r}"))
    dry_run = request.query.get("dry_run", "0").lower() in ("1", "true")
    report = await context(request).store.collect(age, dry_run=dry_run)
    return web.json_response(report.to_json())


async def status(request: web.Request) -> web.StreamResponse:
    ctx = context(request)
    report = await ctx.store.call(status_report)
    report["sync"] = ctx.files.sync.summary()
    return web.json_response(report)
