"""The API application: every route in one table, one context object, two middlewares.

Routes are registered path by path, each path once with a handler per method, so a method a
path does not have is a 405 naming those it does have. smart-proxy's paths overlap
(``/tftp/{mac}`` also matches ``/tftp/serverName``); fixed paths are registered before those
with parameters, and among those the ones with fewer parameters first, so the most specific
path always answers, whatever order the table lists them in.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from tftproxy.api import bootfiles, httpboot, openapi, proxy, pxe, sync
from tftproxy.api.auth import Authorizer
from tftproxy.api.context import CONTEXT, ApiContext
from tftproxy.api.responses import not_allowed, plain_text_errors
from tftproxy.jobs.bootfiles import BootFiles
from tftproxy.settings.model import Settings
from tftproxy.store.aio import AsyncStore

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

MAX_BODY = 1024 * 1024


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Handler


ROUTES: tuple[Route, ...] = (
    Route("GET", "/features", proxy.features),
    Route("GET", "/version", proxy.version),
    Route("GET", "/v2/features", proxy.features_v2),
    Route("GET", openapi.PATH, openapi.document),
    Route("POST", "/tftp/fetch_boot_file", bootfiles.fetch_boot_file),
    Route("POST", "/tftp/fetch_and_process", bootfiles.fetch_and_process),
    Route("GET", "/tftp/fetch_boot_file/{job_id}", bootfiles.fetch_job_status),
    Route("POST", "/tftp/prune", bootfiles.prune),
    Route("GET", "/tftp/status", bootfiles.status),
    Route("POST", "/tftp/sync", sync.sync),
    Route("GET", "/tftp/sync/{run_id}", sync.sync_status),
    Route("GET", "/tftp/serverName", pxe.server_name),
    Route("POST", "/tftp/create_default", pxe.create_default_legacy),
    Route("POST", "/tftp/{variant}/create_default", pxe.create_default),
    Route("POST", "/tftp/{mac}", pxe.create_legacy),
    Route("DELETE", "/tftp/{mac}", pxe.delete_legacy),
    Route("GET", "/tftp/{variant}/{mac}", pxe.read),
    Route("POST", "/tftp/{variant}/{mac}", pxe.create),
    Route("DELETE", "/tftp/{variant}/{mac}", pxe.delete),
    Route("GET", httpboot.PREFIX + "/{path:.*}", httpboot.serve),
)


def _parameters(path: str) -> int:
    return path.count("{")


def _dispatcher(methods: dict[str, Handler]) -> Handler:
    allowed = set(methods)

    async def dispatch(request: web.Request) -> web.StreamResponse:
        method = "GET" if request.method == "HEAD" else request.method
        handler = methods.get(method)
        if handler is None:
            return not_allowed(request, allowed)
        return await handler(request)

    return dispatch


def create_app(settings: Settings, files: BootFiles, store: AsyncStore) -> web.Application:
    """The API application; ``files`` runs the fetch jobs, ``store`` is the tree."""
    app = web.Application(client_max_size=MAX_BODY)
    app[CONTEXT] = ApiContext(settings=settings, files=files, store=store)
    # Outermost first: every failure becomes plain text, then the trusted_hosts/TLS guard.
    app.middlewares.append(plain_text_errors)
    app.middlewares.append(Authorizer(settings).middleware)
    by_path: dict[str, dict[str, Handler]] = {}
    for route in ROUTES:
        by_path.setdefault(route.path, {})[route.method] = route.handler
    for path in sorted(by_path, key=_parameters):  # a stable sort keeps the table's order
        app.router.add_route("*", path, _dispatcher(by_path[path]))
    return app
