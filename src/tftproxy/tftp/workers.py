"""TFTP worker processes: started, supervised (restarted when one dies) and stopped.

The listening sockets are bound in the parent, so a bad address fails the caller at once and
requests queue in the kernel while a worker starts or is restarted; each worker gets them by
descriptor, with its slot of the shared counters and a control pipe: JSON lines tell it to
drain, take new limits or a new log level, or reopen its log file (see
:mod:`tftproxy.tftp.server`); EOF stops it. Workers log where the parent does, themselves.
Workers import only the store's serving face and the TFTP server (never the settings:
pydantic alone would double their memory).
"""

from __future__ import annotations

import contextlib
import json
import logging
import mmap
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence

import tftproxy.logs as logs
from tftproxy._addr import format_hostport
from tftproxy._limits import raise_fd_limit
from tftproxy.store.layout import Layout
from tftproxy.store.serving import ServedTree
from tftproxy.tftp.counters import COUNTER_NAMES, Counters, read_counters
from tftproxy.tftp.recent import TransferRing, read_recent
from tftproxy.tftp.server import ServerConfig, TftpServer
from tftproxy.tftp.udp import bind_listener, listen_address

log = logging.getLogger("tftproxy.tftp")


def fd_budget(config: ServerConfig) -> int:
    """Descriptors a worker may need: two per transfer (socket, file) and some spare."""
    return 2 * config.max_transfers + 64


def _worker_main(spec_text: str) -> int:
    """Entry point of a worker process (see :class:`TftpHandle`)."""
    spec = json.loads(spec_text)
    logs.configure(logs.LogConfig.from_json(spec["log"]), worker=True)
    # Ctrl-C reaches the whole process group; the parent decides when workers stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    config = ServerConfig.from_json(spec["config"])
    raise_fd_limit(fd_budget(config))
    sockets = [socket.socket(fileno=fd) for fd in spec["listen_fds"]]
    counters_map = mmap.mmap(spec["counters_fd"], 0)
    os.close(spec["counters_fd"])
    counters = Counters(counters_map, spec["slot"])
    counters.reset_gauges()
    recent_map = mmap.mmap(spec["recent_fd"], 0)
    os.close(spec["recent_fd"])
    tree = ServedTree(Layout.at(spec["root"]), float(spec["pin_window"]))
    server = TftpServer(tree, sockets, config, counters, control_fd=spec["control_fd"],
                        recent=TransferRing(recent_map, spec["slot"]))
    signal.signal(signal.SIGTERM, lambda *_: server.stop())
    try:
        server.serve_forever()
    finally:
        server.close()
    return 0


class TftpHandle:
    """TFTP worker processes serving a tree; :meth:`close` stops them all.

    The listening sockets are bound here, in the parent, so a bad address fails the caller
    at once and requests queue in the kernel while a worker starts or is restarted.
    """

    def __init__(self, tree: ServedTree, addresses: Sequence[str], workers: int = 1,
                 config: ServerConfig | None = None, *, local_worker: bool = False,
                 log_config: logs.LogConfig | None = None) -> None:
        self.tree = tree
        self.log_config = log_config or logs.LogConfig(
            level=logging.getLogger().getEffectiveLevel())
        self.restarts = 0
        # Worker 0 runs in the caller's process (see local_server) instead of a child.
        self.local_worker = local_worker
        self.config = config or ServerConfig()
        self.workers = workers
        self._closing = threading.Event()
        self._hurry = threading.Event()
        self._sockets: list[list[socket.socket]] = [[] for _ in range(workers)]
        self.addresses: list[tuple[str, int]] = []
        self._procs: list[subprocess.Popen[bytes] | None] = [None] * workers
        self._controls: list[int] = [-1] * workers
        self._restarts: list[float] = []
        self._counters: mmap.mmap | None = None
        self._counters_fd = -1
        self._recent: mmap.mmap | None = None
        self._recent_fd = -1
        self._supervisor: threading.Thread | None = None
        self.final_counters: dict[str, int] | None = None
        try:
            for text in addresses:
                host, port = listen_address(text)
                try:
                    first = bind_listener(host, port, reuseport=workers > 1)
                except OSError as exc:
                    raise OSError(exc.errno, f"cannot serve TFTP on {text}: "
                                             f"{exc.strerror or exc}") from None
                self._sockets[0].append(first)
                bound = first.getsockname()
                self.addresses.append((bound[0], bound[1]))
                for i in range(1, workers):
                    self._sockets[i].append(bind_listener(host, bound[1], reuseport=True))
            self._counters_fd = os.memfd_create("tftproxy-counters", os.MFD_CLOEXEC)
            os.ftruncate(self._counters_fd, Counters.SLOT_BYTES * workers)
            self._counters = mmap.mmap(self._counters_fd, 0)
            self._recent_fd = os.memfd_create("tftproxy-recent", os.MFD_CLOEXEC)
            os.ftruncate(self._recent_fd, TransferRing.SLOT_BYTES * workers)
            self._recent = mmap.mmap(self._recent_fd, 0)
            for i in range(1 if local_worker else 0, workers):
                self._spawn(i)
        except BaseException:
            self.close()
            raise
        self._supervisor = threading.Thread(target=self._supervise, name="tftp-supervisor",
                                            daemon=True)
        self._supervisor.start()

    def _spawn(self, i: int) -> None:
        control_r, control_w = os.pipe2(os.O_CLOEXEC)
        listen_fds = [s.fileno() for s in self._sockets[i]]
        spec = {
            "root": str(self.tree.root),
            "pin_window": self.tree.pin_window,
            "listen_fds": listen_fds,
            "counters_fd": self._counters_fd,
            "recent_fd": self._recent_fd,
            "slot": i,
            "control_fd": control_r,
            "config": self.config.to_json(),
            "log": self.log_config.to_json(),
        }
        try:
            proc = subprocess.Popen(
                [sys.executable, "-c",
                 "import sys; from tftproxy.tftp.workers import _worker_main; "
                 "sys.exit(_worker_main(sys.argv[1]))", json.dumps(spec)],
                pass_fds=[*listen_fds, self._counters_fd, self._recent_fd, control_r],
                stdin=subprocess.DEVNULL,
            )
        except BaseException:
            os.close(control_w)
            raise
        finally:
            os.close(control_r)
        self._procs[i] = proc
        self._controls[i] = control_w

    def _supervise(self) -> None:
        while not self._closing.wait(0.5):
            for i, proc in enumerate(self._procs):
                if proc is None or proc.poll() is None or self._closing.is_set():
                    continue
                now = time.monotonic()
                self._restarts = [t for t in self._restarts if now - t < 60] + [now]
                with contextlib.suppress(OSError):
                    os.close(self._controls[i])
                self._controls[i] = -1
                if len(self._restarts) > 5 * self.workers:
                    log.error("TFTP worker %d exited with %s; too many restarts, giving up",
                              i, proc.returncode)
                    self._procs[i] = None
                    continue
                log.warning("TFTP worker %d exited with %s; restarting it", i, proc.returncode)
                self.restarts += 1
                try:
                    self._spawn(i)
                except OSError as exc:
                    log.error("cannot restart TFTP worker %d: %s", i, exc)
                    self._procs[i] = None

    def local_server(self) -> TftpServer:
        """Worker 0, for the calling thread to run (with ``local_worker=True``)."""
        if not self.local_worker or self._counters is None or self._recent is None:
            raise RuntimeError("this handle has no local worker")
        return TftpServer(self.tree, self._sockets[0], self.config,
                          Counters(self._counters, 0), recent=TransferRing(self._recent, 0))

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._procs if p is not None]

    def alive(self) -> int:
        """How many worker processes are running."""
        return sum(1 for p in self._procs if p is not None and p.poll() is None)

    def send(self, message: dict[str, object]) -> None:
        """A control message to every worker (see :mod:`tftproxy.tftp.server`)."""
        line = (json.dumps(message) + "\n").encode()
        for fd in self._controls:
            if fd >= 0:
                with contextlib.suppress(OSError):  # a dead worker: the supervisor's job
                    os.write(fd, line)

    def reconfigure(self, config: ServerConfig) -> None:
        """New limits for new transfers, in every worker (and in those started later)."""
        self.config = config
        self.send({"op": "config", "config": config.to_json()})

    def set_log_config(self, config: logs.LogConfig) -> None:
        """Where and from which level the workers log (a reload)."""
        if config != self.log_config:
            self.log_config = config
            self.send({"op": "log", "config": config.to_json()})

    def reopen_logs(self) -> None:
        self.send({"op": "reopen_logs"})

    def drain(self, timeout: float) -> None:
        """Stop taking requests, let the transfers in progress finish for up to ``timeout``
        seconds, then stop the workers (what still runs ends with an ERROR to its client)."""
        self._closing.set()  # no restarts from here on
        self.send({"op": "drain"})
        deadline = time.monotonic() + timeout
        for proc in self._procs:
            while (proc is not None and proc.poll() is None and not self._hurry.is_set()
                   and time.monotonic() < deadline):
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(min(0.1, max(0.0, deadline - time.monotonic())))
        self.close()

    def hurry(self) -> None:
        """End a :meth:`drain` now: what still runs is stopped."""
        self._hurry.set()

    def counters(self) -> dict[str, int]:
        """Totals over all workers (``active`` is the number of transfers in progress)."""
        if self._counters is not None:
            return read_counters(self._counters, self.workers)
        return self.final_counters or dict.fromkeys(COUNTER_NAMES, 0)

    def recent(self) -> list[dict[str, object]]:
        """The last transfers of every worker, newest first (empty once closed)."""
        if self._recent is None:
            return []
        return read_recent(self._recent, self.workers)

    def close(self, timeout: float = 5.0) -> None:
        """Stop the workers (transfers in progress end) and release the addresses."""
        self._closing.set()
        supervisor = self._supervisor
        if supervisor is not None and supervisor is not threading.current_thread():
            supervisor.join()
        for i, fd in enumerate(self._controls):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)  # EOF on the control pipe: the worker's cue to stop
                self._controls[i] = -1
        deadline = time.monotonic() + timeout
        for i, proc in enumerate(self._procs):
            if proc is None:
                continue
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            self._procs[i] = None
        for group in self._sockets:
            for s in group:
                s.close()
            group.clear()
        if self._counters is not None:
            self.final_counters = read_counters(self._counters, self.workers)
            self._counters.close()
            self._counters = None
        if self._counters_fd >= 0:
            os.close(self._counters_fd)
            self._counters_fd = -1
        if self._recent is not None:
            self._recent.close()
            self._recent = None
        if self._recent_fd >= 0:
            os.close(self._recent_fd)
            self._recent_fd = -1

    def __enter__(self) -> TftpHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


Reload = Callable[[], tuple[ServerConfig, int]]


def serve_foreground(tree: ServedTree, addresses: Sequence[str], workers: int,
                     config: ServerConfig, *, drain_timeout: float = 20.0,
                     log_config: logs.LogConfig | None = None,
                     reload: Reload | None = None) -> int:
    """Serve over TFTP in this process until SIGINT/SIGTERM (``tftproxy tftpd``).

    This process is worker 0; ``workers - 1`` child processes share the addresses. SIGTERM
    drains (a second one, or ``drain_timeout`` seconds, stops at once); SIGHUP applies what
    ``reload`` returns (new limits and log level); SIGUSR1 reopens the log file.
    """
    raise_fd_limit(fd_budget(config))
    try:
        handle = TftpHandle(tree, addresses, workers, config, local_worker=True,
                        log_config=log_config)
    except OSError as exc:
        log.error("%s", exc.strerror or exc)
        return 1
    with handle:
        server = handle.local_server()
        timer: list[threading.Timer] = []
        deadline = [0.0]

        def on_term(*_: object) -> None:
            if timer:
                server.stop()
                return
            log.info("stopping: draining TFTP for up to %g s", drain_timeout)
            deadline[0] = time.monotonic() + drain_timeout
            server.drain()
            handle.send({"op": "drain"})
            timer.append(threading.Timer(drain_timeout, server.stop))
            timer[0].daemon = True
            timer[0].start()

        def on_hup(*_: object) -> None:
            if reload is None:
                log.info("SIGHUP: nothing to reload")
                return
            try:
                new, level = reload()
            except Exception as exc:
                log.error("reload failed, settings unchanged: %s", exc)
                return
            server.config = new
            handle.reconfigure(new)
            logs.set_level(level)
            handle.set_log_config(logs.LogConfig(handle.log_config.target, level))
            log.info("reloaded: TFTP limits and log level %s", logs.level_name(level))

        def on_usr1(*_: object) -> None:
            logs.reopen()
            handle.reopen_logs()

        signal.signal(signal.SIGINT, lambda *_: server.stop())
        signal.signal(signal.SIGTERM, on_term)
        signal.signal(signal.SIGHUP, on_hup)
        signal.signal(signal.SIGUSR1, on_usr1)
        for host, port in handle.addresses:
            log.info("TFTP on %s, %d worker(s), root %s", format_hostport(host, port),
                     workers, tree.root)
        try:
            server.serve_forever()
        finally:
            server.close()
            for t in timer:
                t.cancel()
        if timer:
            # The local worker is done: the others get what is left of the drain time.
            handle.drain(max(0.0, deadline[0] - time.monotonic()))
    return 0
