"""vsftpd from Debian on a loopback port: real SIZE, MDTM, passive transfers and 550s."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

from tests.helpers.nginx import find_program, free_port, stop_process


class Vsftpd:
    """A private vsftpd serving ``files`` to anonymous users; ``rate`` caps bytes per second.

    Its log (``RETR`` lines) shows which downloads really happened.
    """

    def __init__(self, base: Path, rate: int = 0) -> None:
        self.base = base
        self.files = base / "pub"
        self.files.mkdir(parents=True, exist_ok=True)
        empty = base / "empty"
        empty.mkdir(exist_ok=True)
        for d in (base, self.files, empty):
            os.chmod(d, 0o755)  # vsftpd refuses a root its anonymous user could write
        self.port = free_port()
        self.log = base / "vsftpd.log"
        conf = base / "vsftpd.conf"
        conf.write_text("\n".join([
            "listen=YES", "listen_ipv6=NO", "listen_address=127.0.0.1",
            f"listen_port={self.port}", "background=NO",
            "anonymous_enable=YES", "no_anon_password=YES", f"anon_root={self.files}",
            "local_enable=NO", "write_enable=NO", "pasv_enable=YES",
            "pasv_address=127.0.0.1", "connect_from_port_20=NO",
            f"secure_chroot_dir={empty}", "seccomp_sandbox=NO",
            f"anon_max_rate={rate}", "xferlog_enable=YES", "log_ftp_protocol=YES",
            "xferlog_std_format=NO", f"vsftpd_log_file={self.log}", "",
        ]))
        self.proc = subprocess.Popen([find_program("vsftpd", "vsftpd"), str(conf)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    if s.recv(64).startswith(b"220"):
                        break
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                self.stop()
                raise RuntimeError(f"vsftpd did not start: {err}")
            time.sleep(0.05)

    def url(self, path: str) -> str:
        return f"ftp://127.0.0.1:{self.port}/{path}"

    def put(self, path: str, data: bytes, mtime: float | None = None) -> None:
        target = self.files / path
        target.parent.mkdir(parents=True, exist_ok=True)
        for parent in target.relative_to(self.files).parents:
            os.chmod(self.files / parent, 0o755)
        target.write_bytes(data)
        os.chmod(target, 0o644)
        if mtime is not None:
            os.utime(target, (mtime, mtime))

    def retrs(self, path: str) -> int:
        """How many times ``path`` was asked for with RETR."""
        if not self.log.exists():
            return 0
        return sum(1 for line in self.log.read_text(errors="replace").splitlines()
                   if f'"RETR {path}"' in line)

    def stop(self) -> None:
        stop_process(self.proc)
