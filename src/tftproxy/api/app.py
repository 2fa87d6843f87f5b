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

from tftproxy._addr import parse_listen
from tftproxy.api import bootfiles, httpboot, logs, monitor, openapi, page, proxy, pxe, sync
from tftproxy.api.auth import Authorizer
from tftproxy.api.connections import ConnectionGuard, ConnectionLimits
from tftproxy.api.context import CONTEXT, ApiContext, Health, MetricsRenderer, RecentTransfers
from tftproxy.api.responses import not_allowed, plain_text_errors
from tftproxy.jobs.bootfiles import BootFiles
from tftproxy.settings.model import Settings
from tftproxy.store.aio import AsyncStore
from tftproxy.store.serving import ServedTree

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

MAX_BODY = 1024 * 1024
GUARD: web.AppKey[ConnectionGuard] = web.AppKey("tftproxy-connections", ConnectionGuard)


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Handler


ROUTES: tuple[Route, ...] = (
    *(Route("GET", path, page.status_page) for path in page.PATHS),
    Route("GET", "/features", proxy.features),
    Route("GET", "/version", proxy.version),
    Route("GET", "/v2/features", proxy.features_v2),
    Route("GET", openapi.PATH, openapi.document),
    Route("GET", "/health", monitor.health),
    Route("GET", "/ready", monitor.ready),
    Route("GET", "/metrics", monitor.metrics),
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
    Route("GET", "/logs", logs.logs),
    Route("GET", "/logs/", logs.logs),
    *(Route("GET", prefix + "/{path:.*}", httpboot.serve) for prefix in httpboot.PREFIXES),
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


def _configured_ports(settings: Settings) -> dict[str, int]:
    """Each listener's port as configured (0, "any free port", is known once bound)."""
    ports = {}
    for scheme, on, listen in (("http", settings.http_enabled, settings.listen),
                               ("https", settings.https_enabled, settings.https_listen)):
        port = parse_listen(listen)[0][1] if on else 0
        if port:
            ports[scheme] = port
    return ports


def connection_limits(settings: Settings) -> ConnectionLimits:
    return ConnectionLimits(header_timeout=settings.http_header_timeout,
                            max_connections=settings.http_max_connections,
                            max_per_client=settings.http_max_connections_per_client)


def create_app(settings: Settings, files: BootFiles, store: AsyncStore, *,
               log_buffer: logs.LogBuffer | None = None,
               httpboot_tree: ServedTree | None = None,
               limits: ConnectionLimits | None = None,
               health: Health | None = None,
               metrics: MetricsRenderer | None = None,
               tftp_transfers: RecentTransfers | None = None) -> web.Application:
    """The API application; ``files`` runs the fetch jobs, ``store`` is the tree.

    ``log_buffer`` is what ``GET /logs/`` lists: the handler the process's logging feeds
    (without one, an empty buffer). ``httpboot_tree`` is the tree HTTP boot serves when it
    is not the TFTP root. A listener bound to port 0 reports its port with :func:`bound`.
    Listeners made with :class:`GuardedSite` and ``app[GUARD]`` apply ``limits`` to
    connections. ``health`` is what ``/ready`` reports (ready at once without one),
    ``metrics`` renders ``/metrics``; ``tftp_transfers`` gives the status page the TFTP
    workers' last transfers.
    """
    app = web.Application(client_max_size=MAX_BODY)
    buffer = log_buffer or logs.LogBuffer(settings.log_buffer, settings.log_buffer_errors)
    if health is None:
        health = Health(recovered=True, listening=True)
    ctx = ApiContext(settings=settings, files=files, store=store, logs=buffer,
                     ports=_configured_ports(settings), httpboot_tree=httpboot_tree,
                     health=health, metrics=metrics, tftp_transfers=tftp_transfers)
    app[CONTEXT] = ctx
    app[GUARD] = guard = ConnectionGuard(limits or connection_limits(settings))
    # Outermost first: the connection guard learns a header is complete, records are tagged
    # with the request's id, every failure becomes plain text, then the trusted_hosts/TLS
    # guard (with the settings in force: a reload replaces them).
    app.middlewares.append(guard.middleware)
    app.middlewares.append(logs.request_ids)
    app.middlewares.append(plain_text_errors)
    app.middlewares.append(Authorizer(lambda: ctx.settings).middleware)
    by_path: dict[str, dict[str, Handler]] = {}
    for route in ROUTES:
        by_path.setdefault(route.path, {})[route.method] = route.handler
    for path in sorted(by_path, key=_parameters):  # a stable sort keeps the table's order
        app.router.add_route("*", path, _dispatcher(by_path[path]))
    return app


def bound(app: web.Application, scheme: str, port: int) -> None:
    """Note the port a listener was bound to (for ``/v2/features``' httpboot ports)."""
    app[CONTEXT].ports.setdefault(scheme, port)
