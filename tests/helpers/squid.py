"""Debian's squid on a loopback port, as the shared cache in front of several proxies."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.helpers.nginx import find_program, free_port, wait_listening


class Squid:
    """A memory-only squid configured as docs/deployment.md says for boot files: every hit
    revalidated with the origin (``refresh_pattern . 0 0% 0``), and the proxies' own
    If-None-Match kept from the origin, so that squid revalidates with its validators and
    stores a respin once instead of forwarding each proxy's stale ETag."""

    def __init__(self) -> None:
        binary = find_program("squid", "squid")
        # squid drops to its own user: its files live where that user may go.
        base = Path(tempfile.mkdtemp(prefix="tftproxy-squid-", dir="/var/tmp"))
        os.chmod(base, 0o777)
        self.base = base
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        conf = base / "squid.conf"
        conf.write_text(f"""
http_port 127.0.0.1:{self.port}
pid_filename {base}/squid.pid
cache_mem 256 MB
maximum_object_size_in_memory 64 MB
maximum_object_size 64 MB
access_log stdio:{base}/access.log
cache_log {base}/cache.log
coredump_dir {base}
http_access allow localhost
http_access deny all
refresh_pattern . 0 0% 0
request_header_access If-None-Match deny all
shutdown_lifetime 0 seconds
""")
        self.proc = subprocess.Popen([binary, "-N", "-f", str(conf)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        log = base / "cache.log"
        try:
            wait_listening(self.proc, self.port, "squid", 30,
                           lambda: log.read_text() if log.exists() else "no cache.log")
        except RuntimeError:
            self.close()
            raise

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)
