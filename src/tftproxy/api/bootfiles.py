"""``POST /tftp/fetch_boot_file`` and the job status route.

The request waits up to ``fetch_wait`` seconds: Foreman learns the result (200 JSON, or a
non-2xx plain-text error it shows to the user) instead of smart-proxy's blind 200; a longer
download answers 202 with the job's status URL.
"""

from __future__ import annotations

from aiohttp import web

from tftproxy.api.keys import BOOTFILES_KEY
from tftproxy.api.params import ParamError, read_params
from tftproxy.bootfiles import BadRequest, BootFiles, failure_text

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


@routes.get("/tftp/fetch_boot_file/{job_id}")
async def fetch_job_status(request: web.Request) -> web.StreamResponse:
    job = _files(request).job(request.match_info["job_id"])
    if job is None:
        return _text(404, "TFTP: fetch job not found: unknown id or expired")
    return web.json_response(job.to_json())
