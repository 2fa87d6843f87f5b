"""An upstream that writes raw bytes on each connection: headers trickled, status lines
broken, 1xx forever. Real sockets; every connection is bounded in time."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable

Script = Callable[[socket.socket], None]


class RawUpstream:
    """Accepts on a loopback port and runs ``script(conn)`` for every connection."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.connections = 0
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self._sock.settimeout(0.2)
        self.port = self._sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._run, args=(conn,), daemon=True).start()

    def _run(self, conn: socket.socket) -> None:
        conn.settimeout(30)
        with contextlib.suppress(OSError), conn:
            conn.recv(65536)  # the request
            self.script(conn)

    def stopped(self) -> bool:
        return self._stop.is_set()

    def close(self) -> None:
        self._stop.set()
        self._sock.close()
        self._thread.join(5)


def trickle(data: bytes, every: float, stop: Callable[[], bool]) -> Script:
    """Send ``data`` one byte per ``every`` seconds."""

    def run(conn: socket.socket) -> None:
        for i in range(len(data)):
            if stop():
                return
            conn.sendall(data[i:i + 1])
            time.sleep(every)

    return run
