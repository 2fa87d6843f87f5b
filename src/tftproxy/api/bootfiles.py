"""``POST /tftp/fetch_boot_file`` and the job status route.

The request waits up to ``fetch_wait`` seconds: Foreman learns the result (200 JSON, or a
non-2xx plain-text error it shows to the user) instead of smart-proxy's blind 200; a longer
download answers 202 with the job's status URL.
"""

from __future__ import annotations

import asyncio
import math

from aiohttp import web

from tftproxy.api.keys import BOOTFILES_KEY
from tftproxy.api.params import ParamError, read_params
from tftproxy.bootfiles import BadRequest, BootFiles, failure_text, status_report
from tftproxy.gc import collect

routes = web.RouteTableDef()

CONTEXT = "TFTP: Failed to fetch boot file"


def _files(request: web.Request) -> BootFiles:
    return request.app[BOOTFILES_KEY]


def _text(status: int, text: str) -> web.Response:
    return web.Response(status=status, text=text + "\n", content_type="text/plain")


@routes.post("/tftp/fetch_boot_file")
async def fetch_boot_file(request: web.Request) -> web.StreamResponse:
    files = _files(request)
    try:
        params = await read_params(request)
    except ParamError as exc:
        return _text(exc.status, f"{CONTEXT}: {exc.reason}")
    prefix, path = params.get("prefix", ""), params.get("path", "")
    try:
        job = files.request(prefix, path)
    except BadRequest as exc:
        return _text(400, f"{CONTEXT}: {exc}")
    result = await job.wait(files.settings.fetch_wait)
    if result is None:
        body = job.to_json()
        return web.json_response(body, status=202, headers={"Location": body["url"]})
    if result.ok:
        return web.json_response(result.to_json())
    return _text(502, failure_text(path, result))


@routes.post("/tftp/prune")
async def prune(request: web.Request) -> web.StreamResponse:
    """Clean-up with ``age`` as the grace period (the route proposed upstream)."""
    raw = request.query.get("age")
    try:
        age = float(raw) if raw is not None else None
    except ValueError:
        age = None
    if age is None or not math.isfinite(age) or age <= 0:
        return _text(400, f"TFTP: prune: age must be a positive number of seconds, got {raw!r}")
    dry_run = request.query.get("dry_run", "0").lower() in ("1", "true")
    files = _files(request)
    report = await asyncio.to_thread(collect, files.store, age, dry_run=dry_run)
    return web.json_response(report.to_json())


@routes.get("/tftp/status")
async def status(request: web.Request) -> web.StreamResponse:
    files = _files(request)
    return web.json_response(await asyncio.to_thread(status_report, files.store.root))


@routes.get("/tftp/fetch_boot_file/{job_id}")
async def fetch_job_status(request: web.Request) -> web.StreamResponse:
    job = _files(request).job(request.match_info["job_id"])
    if job is None:
        return _text(404, "TFTP: fetch job not found: unknown id or expired")
    return web.json_response(job.to_json())
