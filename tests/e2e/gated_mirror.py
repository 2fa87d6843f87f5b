"""A mirror whose downloads stall half-way until the test opens the gate (run in the lab).

    python gated_mirror.py PORT DIRECTORY GATE_FILE

Serves DIRECTORY on 127.0.0.1:PORT. A file under ``gated/`` is sent up to its middle, then
nothing more until GATE_FILE exists (polled; at most ``LIMIT`` seconds), then the rest: a
first fetch that is still running while a machine boots. Everything else is sent at once.
"""

from __future__ import annotations

import http.server
import os
import sys
import time
from pathlib import Path

LIMIT = 600.0


class Handler(http.server.BaseHTTPRequestHandler):
    root: Path
    gate: Path

    def do_GET(self) -> None:
        rel = self.path.split("?", 1)[0].lstrip("/")
        path = (self.root / rel).resolve()
        if not path.is_file() or self.root.resolve() not in path.parents:
            self.send_error(404)
            return
        data = path.read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()
        half = len(data) // 2 if rel.startswith("gated/") else len(data)
        self.wfile.write(data[:half])
        self.wfile.flush()
        deadline = time.monotonic() + LIMIT
        while half < len(data) and not self.gate.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        self.wfile.write(data[half:])

    def log_message(self, format: str, *args: object) -> None:
        sys.stderr.write(f"{time.time():.3f} {self.address_string()} {format % args}\n")


def main() -> None:
    port, root, gate = int(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    Handler.root, Handler.gate = root, gate
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    print(f"gated mirror on 127.0.0.1:{port}, pid {os.getpid()}", file=sys.stderr, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
