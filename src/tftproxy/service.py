"""``tftproxy serve``: the HTTP API (and the TFTP server when configured) as a service.

Signals, as an admin of smart-proxy or any daemon expects:

* SIGHUP reloads the settings from the same sources and applies what can change while
  running (log level and file, trusted hosts, fetch and TFTP limits, clean-up timing...),
  logging each change; a setting that needs a restart is named and kept. A settings error
  is logged and changes nothing: SIGHUP never stops the service.
* SIGTERM (and SIGINT) drains: the listeners close, TFTP workers stop reading requests, and
  running transfers and fetches get ``drain_timeout`` seconds to finish; then the rest end
  (TFTP clients get an ERROR, aborted fetches put the previous version back), each logged.
  A second SIGTERM ends the wait.
* SIGUSR1 reopens the log file (logrotate's ``postrotate``), in the workers too.

Under systemd (``Type=notify``) it reports READY=1 once it serves, RELOADING=1 around a
reload, STOPPING=1 when draining starts and WATCHDOG=1 while its loop runs and its TFTP
workers live.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Callable, Coroutine
from dataclasses import replace
from typing import Any

from aiohttp import web

from tftproxy import __version__, _notify, assemble, logs
from tftproxy._limits import raise_fd_limit
from tftproxy.api.access import ACCESS_LOG, AccessLogger
from tftproxy.api.app import GUARD, bound, connection_limits, create_app
from tftproxy.api.connections import ConnectionLimits, GuardedSite, server_logger
from tftproxy.api.context import CONTEXT, Health
from tftproxy.api.listeners import Listener, api_listeners
from tftproxy.api.logs import LogBuffer
from tftproxy.jobs.bootfiles import BootFiles
from tftproxy.metrics import Metrics
from tftproxy.settings.model import Settings
from tftproxy.store.ownership import ownership_problem
from tftproxy.store.setup import check_writable
from tftproxy.tftp.workers import TftpHandle

log = logging.getLogger(__name__)

# Descriptors kept for everything but API connections: lock files, staging and record files,
# upstream connections, the store's threads, the TFTP workers' pipes.
FD_RESERVE = 400

# Settings a running service takes on SIGHUP; every other one needs a restart.
RELOADABLE = frozenset({
    "log_file", "log_level", "trusted_hosts", "forward_verify", "feature_enabled",
    "tftp_servername", "fetch_wait", "stall_timeout", "fetch_timeout", "tftp_connect_timeout",
    "max_redirects", "retries", "retry_backoff", "http_proxy", "max_file_size",
    "min_free_space", "refresh_mode", "job_retention", "fresh_for", "verify", "gc_grace",
    "gc_interval",
    "refresh_hold", "tftp_timeout", "tftp_retries", "tftp_max_blksize", "tftp_max_windowsize",
    "tftp_max_transfers", "drain_timeout", "min_rate", "rate_window", "tftp_max_per_client",
    "tftp_first_retries", "tftp_http_download_preflight", "max_unpacked_size", "status_page",
})

Reload = Callable[[], Settings]


def changes(old: Settings, new: Settings) -> dict[str, tuple[object, object]]:
    """Every setting whose value differs, with its old and new value."""
    a, b = old.model_dump(mode="json"), new.model_dump(mode="json")
    return {k: (a[k], b[k]) for k in a if a[k] != b[k]}


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


def _with_version(settings: Settings) -> tuple[Settings, str]:
    """The settings with the smart-proxy version reported to Foreman decided, and where it
    came from (file work: off the event loop)."""
    version, version_from = assemble.smart_proxy_version(settings)
    return settings.model_copy(update={"smart_proxy_version": version}), version_from


class Service:
    """One ``serve``: its parts, its signals and its stop."""

    def __init__(self, settings: Settings, reload: Reload | None = None) -> None:
        self.settings = settings
        self._reload = reload
        self.health = Health()
        self.tftp: TftpHandle | None = None
        self.files: BootFiles | None = None
        self.runner: web.AppRunner | None = None
        # What GET /logs/ lists: every record this process logs, beside wherever logs go.
        self.log_buffer = LogBuffer(settings.log_buffer, settings.log_buffer_errors)
        self._stop = asyncio.Event()
        self._stopping_now = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------- run

    async def run(self, ready: asyncio.Event | None = None) -> int:
        listeners = api_listeners(self.settings)  # first: unusable TLS files stop us early
        logs.add_handler(self.log_buffer)
        try:
            return await self._run(listeners, ready)
        finally:
            logs.remove_handler(self.log_buffer)

    async def _run(self, listeners: list[Listener], ready: asyncio.Event | None) -> int:
        settings, version_from = await asyncio.to_thread(_with_version, self.settings)
        self.settings = settings
        log.info("tftproxy %s starting, reporting smart-proxy version %s to Foreman (from %s)",
                 __version__, settings.smart_proxy_version, version_from)
        # The tree must be ours to write, or the error names the fix (tftproxy setup).
        await asyncio.to_thread(check_writable, settings.tftproot)
        tree = await asyncio.to_thread(assemble.store, settings)
        # What another user made in it (a fetch run as root): reported with its fix.
        problem = await asyncio.to_thread(ownership_problem, tree.layout)
        if problem is not None:
            log.error("%s", problem)
        metrics = Metrics(tree.layout) if settings.metrics else None
        files = self.files = assemble.boot_files(settings, tree, metrics)
        if metrics is not None:
            metrics.add_sync(lambda: dict(files.sync.counts))
        await files.recover()
        self.health.recovered = True
        httpboot = await asyncio.to_thread(assemble.httpboot_tree, settings)
        app = create_app(settings, files, files.store, log_buffer=self.log_buffer,
                         httpboot_tree=httpboot, limits=_connection_limits(settings),
                         health=self.health,
                         metrics=metrics.render if metrics is not None else None,
                         tftp_transfers=self._tftp_transfers)
        runner = self.runner = web.AppRunner(app, handle_signals=False,
                                             access_log_class=AccessLogger,
                                             access_log=ACCESS_LOG,
                                             keepalive_timeout=settings.http_keepalive_timeout,
                                             logger=server_logger())
        await runner.setup()
        self._handle_signals()
        try:
            if settings.tftp_listen:
                # Worker processes of their own: the API's event loop never delays a block.
                # Started before anything is served, so binding and spawning here blocks no
                # request.
                tftp = self.tftp = assemble.start_tftp(settings, tree.serving)
                self.health.checks.append(self._tftp_problem)
                if metrics is not None:
                    metrics.add_tftp(tftp.counters, tftp.alive, lambda: tftp.restarts)
                for host, port in tftp.addresses:
                    log.info("TFTP on %s:%d, %d worker(s)", host, port, settings.tftp_workers)
            for lst in listeners:
                site = GuardedSite(runner, app[GUARD], lst.host, lst.port,
                                   ssl_context=lst.ssl_context)
                await site.start()
                bound(app, lst.scheme, runner.addresses[-1][1])
                log.info("API on %s, TFTP root %s", lst.url, settings.tftproot)
            self.health.listening = True
            if metrics is not None:
                metrics.ready.set_function(lambda: 0 if self.health.problems() else 1)
            self._spawn(self._clean_periodically())
            # Once serving: the prefetch list, then sets kept current (stopped by the drain).
            files.sync.start()
            interval = _notify.watchdog_interval()
            if interval is not None:
                self._spawn(self._watchdog(interval))
            _notify.notify("READY=1", f"STATUS=serving {', '.join(lst.url for lst in listeners)}")
            if ready is not None:
                ready.set()
            await self._stop.wait()
            await self._drain()
        finally:
            for task in list(self._tasks):
                task.cancel()
            for task in list(self._tasks):
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            if self.tftp is not None:
                await asyncio.to_thread(self.tftp.close)
            await runner.cleanup()
            await files.close()
        return 0

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _tftp_transfers(self) -> list[dict[str, Any]]:
        return self.tftp.recent() if self.tftp is not None else []

    def _tftp_problem(self) -> str | None:
        tftp = self.tftp
        if tftp is not None and tftp.alive() < tftp.workers - (1 if tftp.local_worker else 0):
            return f"{tftp.alive()} of {tftp.workers} TFTP workers running"
        return None

    async def _clean_periodically(self) -> None:
        """The same clean-up as `tftproxy gc`, every gc_interval seconds (0: never)."""
        assert self.files is not None
        while True:
            interval = self.settings.gc_interval
            await asyncio.sleep(interval if interval > 0 else 3600)
            if self.settings.gc_interval <= 0:
                continue
            try:
                await self.files.store.collect(self.settings.gc_grace)
            except OSError as exc:
                log.warning("periodic clean-up failed: %s", exc)

    async def _watchdog(self, interval: float) -> None:
        told = False
        while True:
            # All TFTP workers gone for good: stay silent, so systemd restarts the service.
            problem = self._tftp_problem()
            if self.tftp is None or self.tftp.alive() > 0:
                _notify.notify("WATCHDOG=1")
            elif not told:
                told = True
                log.error("no TFTP worker is running (%s): stopping the watchdog pings, "
                          "so systemd restarts tftproxy", problem)
            await asyncio.sleep(interval)

    # --------------------------------------------------------------- signals

    def _handle_signals(self) -> None:
        loop = asyncio.get_running_loop()
        handlers = {signal.SIGINT: self._on_term, signal.SIGTERM: self._on_term,
                    signal.SIGHUP: lambda: self._spawn(self.reload()),
                    signal.SIGUSR1: self.reopen_logs}
        for sig, handler in handlers.items():
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, handler)

    def _on_term(self) -> None:
        if self._stop.is_set():
            log.warning("second stop signal: ending what still runs now")
            self._stopping_now.set()
        self._stop.set()

    def reopen_logs(self) -> None:
        logs.reopen()
        if self.tftp is not None:
            self.tftp.reopen_logs()
        log.info("log file reopened")

    async def reload(self) -> None:
        """Apply the settings as they are now in their files and environment (SIGHUP)."""
        if self._reload is None:
            log.info("SIGHUP: no settings source to reload from")
            return
        _notify.notify("RELOADING=1", _notify.monotonic_usec())
        try:
            load = self._reload
            new, _ = await asyncio.to_thread(lambda: _with_version(load()))
        except Exception as exc:
            log.error("reload failed, nothing changed: %s", exc)
            _notify.notify("READY=1", "STATUS=reload failed; previous settings in force")
            return
        old = self.settings
        changed = changes(old, new)
        taken = {k: v for k, v in changed.items() if k in RELOADABLE}
        kept = {k: v for k, v in changed.items() if k not in RELOADABLE}
        merged = old.model_copy(update={k: getattr(new, k) for k in taken})
        self._apply(old, merged)
        for key, (before, after) in kept.items():
            log.warning("reload: %s changed (%r -> %r) but takes effect only after a restart; "
                        "still %r", key, before, after, before)
        if taken:
            log.info("reloaded settings: %s", ", ".join(
                f"{k} {before!r} -> {after!r}" for k, (before, after) in taken.items()))
        else:
            log.info("reloaded settings: nothing changed that a running service takes")
        _notify.notify("READY=1", "STATUS=serving (settings reloaded)")

    def _apply(self, old: Settings, new: Settings) -> None:
        self.settings = new
        if self.runner is not None:
            self.runner.app[CONTEXT].settings = new
        config = assemble.log_config(new)
        if (old.log_file, old.log_level) != (new.log_file, new.log_level):
            if old.log_file != new.log_file:
                logs.configure(config)
            else:
                logs.set_level(config.level)
        if self.files is not None:
            self.files.reconfigure(assemble.job_options(new))
            self.files.fetcher.options = assemble.fetch_options(new)
        if self.tftp is not None:
            self.tftp.reconfigure(assemble.tftp_config(new))
            self.tftp.set_log_config(config)

    # ------------------------------------------------------------------ stop

    async def _drain(self) -> None:
        """Stop accepting, let running work finish for drain_timeout, end the rest."""
        timeout = self.settings.drain_timeout
        _notify.notify("STOPPING=1", f"STATUS=draining for up to {timeout:g} s")
        self.health.draining = True
        log.info("stopping: no new requests; running TFTP transfers and fetches get up to "
                 "%g s to finish", timeout)
        started = time.monotonic()
        if self.runner is not None:
            for site in list(self.runner.sites):
                await site.stop()
        deadline = asyncio.ensure_future(self._stopping_now.wait())
        tftp = self.tftp
        work: list[asyncio.Future[Any]] = []
        if tftp is not None:
            work.append(asyncio.ensure_future(asyncio.to_thread(tftp.drain, timeout)))
        if self.files is not None:
            work.append(asyncio.ensure_future(self.files.drain(timeout)))
        if work:
            await asyncio.wait([*work, deadline], return_when=asyncio.FIRST_COMPLETED)
            if deadline.done() and self.files is not None:
                # A second signal: what still runs ends now.
                await self.files.drain(0)
                if tftp is not None:
                    tftp.hurry()
            await asyncio.gather(*work, return_exceptions=True)
        deadline.cancel()
        aborted = [] if self.files is None else self.files.aborted
        log.info("stopped after %.1f s of draining%s", time.monotonic() - started,
                 f"; aborted fetches: {', '.join(aborted)}" if aborted else "")


async def run_server(settings: Settings, ready: asyncio.Event | None = None,
                     reload: Reload | None = None) -> int:
    """Serve until SIGINT/SIGTERM; staging leftovers of a previous crash are cleaned first."""
    return await Service(settings, reload).run(ready)
