"""``POST /tftp/sync`` and ``GET /tftp/sync/{run_id}``: revalidate boot sets now.

What Foreman's users ask for as "Sync boot files": every set (or the set of one ``prefix``)
is checked upstream with conditional requests and a respin is published as one new
generation, before any host is put in build mode. The request waits up to ``fetch_wait``
seconds, like ``fetch_boot_file``: 200 JSON listing each set (unchanged, or updated from
one generation to another); if a set failed, 502 with a plain-text line naming each failed
set (its last good generation is kept); still running, 202 with the run's status URL.
"""

from __future__ import annotations

from aiohttp import web

from tftproxy.api.context import context
from tftproxy.api.params import read_params
from tftproxy.api.responses import error_response, text_response
from tftproxy.errors import JobNotFound, TftproxyError
from tftproxy.jobs.sync import SyncRun

CONTEXT = "TFTP: Failed to sync boot files"


def failure_text(run: SyncRun) -> str:
    """The plain-text line that names a run's failed sets (API bodies)."""
    failed = run.failed
    detail = "; ".join(f"{o.set}: {o.message}" for o in failed)
    return (f"{CONTEXT}: {len(failed)} of {len(run.sets)} boot set(s) failed: {detail} "
            f"(details at {run.to_json()['url']})")


async def sync(request: web.Request) -> web.StreamResponse:
    ctx = context(request)
    try:
        prefix = (await read_params(request)).get("prefix")
        run = await ctx.files.sync.sync([] if prefix is None else [prefix])
    except TftproxyError as exc:
        return error_response(CONTEXT, exc)
    done = await run.wait(ctx.settings.fetch_wait)
    body = run.to_json()
    if not done:
        return web.json_response(body, status=202, headers={"Location": body["url"]})
    if run.failed:
        return text_response(502, failure_text(run))
    return web.json_response(body)


async def sync_status(request: web.Request) -> web.StreamResponse:
    run = context(request).files.sync.run(request.match_info["run_id"])
    if run is None:
        return error_response("TFTP: sync run not found", JobNotFound("unknown id or expired"))
    return web.json_response(run.to_json())
