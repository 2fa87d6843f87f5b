"""systemd's readiness protocol (sd_notify): a datagram to ``$NOTIFY_SOCKET``.

``READY=1`` once the service answers, ``RELOADING=1`` around a SIGHUP reload, ``STOPPING=1``
when draining starts, ``WATCHDOG=1`` while the event loop runs (with ``WatchdogSec=``),
``STATUS=`` for ``systemctl status``. Without ``$NOTIFY_SOCKET`` (not started by systemd) every
call does nothing. Written here rather than through a library: it is one sendto().
"""

from __future__ import annotations

import contextlib
import os
import socket
import time


def _address() -> str | None:
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return None
    # An abstract socket is written with a leading "@".
    return "\0" + path[1:] if path.startswith("@") else path


def notify(*assignments: str) -> bool:
    """Send ``KEY=value`` lines to systemd; False when there is no one to tell."""
    address = _address()
    if address is None:
        return False
    data = "\n".join(assignments).encode("utf-8", "replace")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        try:
            sock.sendto(data, address)
        except OSError:
            return False
    return True


def watchdog_interval() -> float | None:
    """How often to send ``WATCHDOG=1`` (half the period systemd gave), or None."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    with contextlib.suppress(ValueError):
        period = int(usec) / 1e6
        if period > 0:
            return period / 2
    return None


def monotonic_usec() -> str:
    """``MONOTONIC_USEC=`` of now, which systemd wants with ``RELOADING=1``."""
    return f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}"
