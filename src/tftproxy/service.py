"""``tftproxy serve``: runs the HTTP API (and the TFTP server when configured) until stopped."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from dataclasses import replace

from aiohttp import web

from tftproxy import __version__, assemble
from tftproxy._limits import raise_fd_limit
from tftproxy.api.app import GUARD, bound, connection_limits, create_app
from tftproxy.api.connections import ConnectionLimits, GuardedSite, server_logger
from tftproxy.api.listeners import Listener, api_listeners
from tftproxy.api.logs import LogBuffer
from tftproxy.jobs.bootfiles import BootFiles
from tftproxy.settings.model import Settings
from tftproxy.store.ownership import ownership_problem
from tftproxy.tftp.workers import TftpHandle

log = logging.getLogger(__name__)

# Descriptors kept for everything but API connections: lock files, staging and record files,
# upstream connections, the store's threads, the TFTP workers' pipes.
FD_RESERVE = 400


async def _clean_periodically(files: BootFiles, settings: Settings) -> None:
    """The same clean-up as `tftproxy gc`, every gc_interval seconds."""
    while True:
        await asyncio.sleep(settings.gc_interval)
        try:
            await files.store.collect(settings.gc_grace)
        except OSError as exc:
            log.warning("periodic clean-up failed: %s", exc)


def _connection_limits(settings: Settings) -> ConnectionLimits:
    """The API's connection limits, the cap kept below what the descriptor limit allows.

    Each connection may hold two descriptors (its socket, a file it sends); the store, its
    locks, downloads and the TFTP workers' pipes need the rest.
    """
    limits = connection_limits(settings)
    fds = raise_fd_limit(2 * limits.max_connections + FD_RESERVE)
    usable = max(16, (fds - FD_RESERVE) // 2)
    if usable < limits.max_connections:
        log.warning("http_max_connections %d lowered to %d: the descriptor limit is %d",
                    limits.max_connections, usable, fds)
        limits = replace(limits, max_connections=usable)
    return limits


async def run_server(settings: Settings, ready: asyncio.Event | None = None) -> int:
    """Serve until SIGINT/SIGTERM; staging leftovers of a previous crash are cleaned first."""
    listeners = api_listeners(settings)  # first: unusable TLS files stop us before any work
    version, version_from = await asyncio.to_thread(assemble.smart_proxy_version, settings)
    settings = settings.model_copy(update={"smart_proxy_version": version})
    # What GET /logs/ lists: every record this process logs, beside wherever logs are written.
    log_buffer = LogBuffer(settings.log_buffer, settings.log_buffer_errors)
    logging.getLogger().addHandler(log_buffer)
    try:
        return await _serve(settings, listeners, log_buffer, ready,
                            f"reporting smart-proxy version {version} to Foreman (from "
                            f"{version_from})")
    finally:
        logging.getLogger().removeHandler(log_buffer)


async def _serve(settings: Settings, listeners: list[Listener], log_buffer: LogBuffer,
                 ready: asyncio.Event | None, version_note: str) -> int:
    log.info("tftproxy %s starting, %s", __version__, version_note)
    tree = await asyncio.to_thread(assemble.store, settings)
    problem = await asyncio.to_thread(ownership_problem, tree.layout)
    if problem is not None:
        log.error("%s", problem)
    files = assemble.boot_files(settings, tree)
    await files.recover()
    httpboot = await asyncio.to_thread(assemble.httpboot_tree, settings)
    app = create_app(settings, files, files.store, log_buffer=log_buffer,
                     httpboot_tree=httpboot, limits=_connection_limits(settings))
    runner = web.AppRunner(app, access_log=log, handle_signals=False,
                           keepalive_timeout=settings.http_keepalive_timeout,
                           logger=server_logger())
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    tftp: TftpHandle | None = None
    cleaner: asyncio.Task[None] | None = None
    try:
        if settings.tftp_listen:
            # Worker processes of their own: the API's event loop never delays a block. Started
            # before anything is served, so binding and spawning here blocks no request.
            tftp = assemble.start_tftp(settings, tree.serving)
            for host, port in tftp.addresses:
                log.info("TFTP on %s:%d, %d worker(s)", host, port, settings.tftp_workers)
        for lst in listeners:
            site = GuardedSite(runner, app[GUARD], lst.host, lst.port,
                               ssl_context=lst.ssl_context)
            await site.start()
            bound(app, lst.scheme, runner.addresses[-1][1])
            log.info("API on %s, TFTP root %s", lst.url, settings.tftproot)
        if settings.gc_interval > 0:
            cleaner = asyncio.create_task(_clean_periodically(files, settings))
        if ready is not None:
            ready.set()
        await stop.wait()
    finally:
        if cleaner is not None:
            cleaner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await cleaner
        if tftp is not None:
            await asyncio.to_thread(tftp.close)
        await runner.cleanup()
        await files.close()
    return 0
