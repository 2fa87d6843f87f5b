"""``POST /tftp/fetch_boot_file`` and ``/tftp/fetch_and_process``, the job status route,
``/tftp/prune`` and ``/tftp/status``.

The request waits up to ``fetch_wait`` seconds: Foreman learns the result (200 JSON, or a
non-2xx plain-text error) instead of smart-proxy's blind 200; a longer download answers 202
with the job's status URL. Foreman shows a failure's status line only, and a 202 is done to
it: the job logs every failure as an error, which Foreman lists through ``GET /logs/``.
"""

from __future__ import annotations

import math
from typing import Any

from aiohttp import web

from tftproxy.api.context import ApiContext, context
from tftproxy.api.params import InvalidJson, read_json_params
from tftproxy.api.responses import error_response, text_response
from tftproxy.errors import BadParameters, InputError, JobNotFound, TftproxyError
from tftproxy.jobs.extract_spec import parse_extract
from tftproxy.jobs.registry import Job
from tftproxy.jobs.results import failure_text
from tftproxy.jobs.status import status_report

CONTEXT = "TFTP: Failed to fetch boot file"
PROCESS = "TFTP: Failed to fetch and process boot file"


async def fetch_boot_file(request: web.Request) -> web.StreamResponse:
    """Foreman's form ``prefix``/``path``; the JSON of ``fetch_and_process`` is accepted too
    (Foreman's bootloader-universe client posts it here)."""
    ctx = context(request)
    params = await _params(request, CONTEXT)
    if isinstance(params, web.Response):
        return params
    if "extract" in params or ("destination" in params and "prefix" not in params):
        return await _process(ctx, params)
    try:
        prefix, path = _text(params, "prefix"), _text(params, "path")
        job = await ctx.files.request(prefix, path)
    except TftproxyError as exc:
        return error_response(CONTEXT, exc)
    return await _answer(ctx, job, path)


async def fetch_and_process(request: web.Request) -> web.StreamResponse:
    """smart-proxy PR #958: ``{"extract": {...}}`` (an archive and members of it) or
    ``{"source", "destination"}`` (one file under an exact name)."""
    params = await _params(request, PROCESS)
    if isinstance(params, web.Response):
        return params
    return await _process(context(request), params)


async def _params(request: web.Request, what: str) -> dict[str, Any] | web.Response:
    """The request's parameters, or the answer to a body that cannot be read."""
    try:
        return await read_json_params(request)
    except InvalidJson as exc:
        return text_response(415, str(exc))  # smart-proxy's text, without a context
    except TftproxyError as exc:
        return error_response(what, exc)


def _text(params: dict[str, Any], key: str) -> str:
    value = params.get(key, "")
    if not isinstance(value, str):
        raise BadParameters(f"parameter {key} must be a string")
    return value


async def _process(ctx: ApiContext, params: dict[str, Any]) -> web.StreamResponse:
    try:
        if "extract" in params:
            spec = parse_extract(params["extract"])
            job = await ctx.archives.request(spec)
            source = spec.source
        else:
            source, destination = _text(params, "source"), _text(params, "destination")
            if not source:
                raise InputError("Cannot fetch boot file, missing source")
            if not destination or destination.endswith("/"):
                raise InputError(f"TFTP destination must be a file path: {destination!r}")
            job = await ctx.files.request_named(destination, source)
    except TftproxyError as exc:
        return error_response(PROCESS, exc)
    return await _answer(ctx, job, source)


async def _answer(ctx: ApiContext, job: Job, source: str) -> web.StreamResponse:
    """Success once published (200 JSON), a 202 with the job if it takes longer than
    fetch_wait, or the failure as plain text (502)."""
    result = await job.wait(ctx.settings.fetch_wait)
    if result is None:
        body = job.to_json()
        return web.json_response(body, status=202, headers={"Location": body["url"]})
    if result.ok:
        return web.json_response(result.to_json())
    return text_response(502, failure_text(source, result))


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
    report["downloads"] = downloads(ctx)
    return web.json_response(report)


def downloads(ctx: ApiContext) -> list[dict[str, Any]]:
    """The fetches running in this process, oldest first, with their rate and time left."""
    return [job.to_json() for job in sorted(ctx.files.registry.active(),
                                            key=lambda j: j.started)]
