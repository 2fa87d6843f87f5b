"""``tftproxy serve``: runs the HTTP API (and the TFTP server when configured) until stopped."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

from aiohttp import web

from tftproxy import assemble
from tftproxy.api.app import create_app
from tftproxy.api.listeners import api_listeners
from tftproxy.jobs.bootfiles import BootFiles
from tftproxy.settings.model import Settings
from tftproxy.tftp.workers import TftpHandle

log = logging.getLogger(__name__)


async def _clean_periodically(files: BootFiles, settings: Settings) -> None:
    """The same clean-up as `tftproxy gc`, every gc_interval seconds."""
    while True:
        await asyncio.sleep(settings.gc_interval)
        try:
            await files.store.collect(settings.gc_grace)
        except OSError as exc:
            log.warning("periodic clean-up failed: %s", exc)


async def run_server(settings: Settings, ready: asyncio.Event | None = None) -> int:
    """Serve until SIGINT/SIGTERM; staging leftovers of a previous crash are cleaned first."""
    listeners = api_listeners(settings)  # first: unusable TLS files stop us before any work
    tree = await asyncio.to_thread(assemble.store, settings)
    files = assemble.boot_files(settings, tree)
    await files.recover()
    app = create_app(settings, files, files.store)
    runner = web.AppRunner(app, access_log=log, handle_signals=False)
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
            site = web.TCPSite(runner, lst.host, lst.port, reuse_address=True,
                               ssl_context=lst.ssl_context)
            await site.start()
            log.info("API on %s, TFTP root %s", lst.url, settings.tftproot)
        if settings.gc_interval > 0:
            cleaner = asyncio.create_task(_clean_periodically(files, settings))
        # Once serving: the prefetch list, then sets kept current (stopped by files.close()).
        files.sync.start()
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
