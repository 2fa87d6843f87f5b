"""``tftproxy serve``: runs the HTTP API (and the TFTP server when configured) until stopped."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

from aiohttp import web

from tftproxy.api import create_app
from tftproxy.api.listeners import api_listeners
from tftproxy.bootfiles import BootFiles
from tftproxy.config import Settings

log = logging.getLogger(__name__)


async def run_server(settings: Settings, ready: asyncio.Event | None = None) -> int:
    """Serve until SIGINT/SIGTERM; staging leftovers of a previous crash are cleaned first."""
    listeners = api_listeners(settings)  # first: unusable TLS files stop us before any work
    files = BootFiles(settings)
    files.recover()
    app = create_app(settings, files)
    runner = web.AppRunner(app, access_log=log, handle_signals=False)
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        for lst in listeners:
            site = web.TCPSite(runner, lst.host, lst.port, reuse_address=True,
                               ssl_context=lst.ssl_context)
            await site.start()
            log.info("API on %s, TFTP root %s", lst.url, settings.tftproot)
        if ready is not None:
            ready.set()
        await stop.wait()
    finally:
        await runner.cleanup()
        await files.close()
    return 0
