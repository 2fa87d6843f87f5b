"""``tftproxy serve`` as a process, over HTTP and HTTPS, and the Foreman-rules client in Ruby."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import pytest

from tests.api.certs import Pki
from tests.helpers.nginx import free_port, wait_listening

CLIENT = Path(__file__).with_name("foreman_client.rb")
# What smart-proxy (PR #958) announces for its tftp module, and tftproxy with it.
ARCHIVE_CAPABILITIES = ["bootloader_archive_iso", "bootloader_archive_tgz",
                        "bootloader_universe", "bootloader_universe_boot_files"]


@dataclass
class Served:
    """A running ``tftproxy serve`` and how Foreman reaches it."""

    url: str
    root: Path
    ports: dict[str, int]
    ssl: dict[str, Path] | None
    log: Path
    _client: subprocess.Popen[str] | None = None

    def foreman(self, *calls: dict[str, Any]) -> list[dict[str, Any]]:
        """Run the calls with the Foreman-rules client (one Ruby process kept for the test)."""
        if self._client is None:
            ruby = shutil.which("ruby")
            if ruby is None:
                pytest.fail("ruby is not installed: run scripts/system-deps")
            cmd = [ruby, str(CLIENT), self.url]
            if self.ssl is not None:
                cmd += ["--ssl-ca", str(self.ssl["ca"]), "--ssl-cert", str(self.ssl["cert"]),
                        "--ssl-key", str(self.ssl["key"])]
            self._client = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                            text=True)
        client = self._client
        assert client.stdin is not None and client.stdout is not None
        results = []
        for call in calls:
            client.stdin.write(json.dumps(call) + "\n")
            client.stdin.flush()
            line = client.stdout.readline()  # rest-client's own timeout (60 s) bounds each call
            assert line, f"the Foreman client died (exit {client.poll()})"
            results.append(json.loads(line))
        return results

    def close(self) -> None:
        if self._client is not None:
            assert self._client.stdin is not None
            self._client.stdin.close()
            self._client.wait(30)

    def request(self, method: str, path: str, data: dict[str, str] | None = None,
                *, certificate: bool = True) -> tuple[int, str]:
        """A raw request as Foreman sends it (form body, Accept: json): (status, body).

        Over HTTPS with Foreman's client certificate, unless ``certificate`` is False.
        """
        parts = urlsplit(self.url)
        assert parts.hostname is not None and parts.port is not None
        conn: http.client.HTTPConnection
        if self.ssl is not None:
            ctx = ssl.create_default_context(cafile=str(self.ssl["ca"]))
            if certificate:
                ctx.load_cert_chain(str(self.ssl["cert"]), str(self.ssl["key"]))
            conn = http.client.HTTPSConnection(parts.hostname, parts.port, context=ctx,
                                               timeout=60)
        else:
            conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
        headers = {"Accept": "application/json"}
        body = None
        if data is not None:
            body = urlencode(data)
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        try:
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            return resp.status, resp.read().decode("utf-8", "replace")
        finally:
            conn.close()

    def value(self, call: dict[str, Any]) -> Any:
        [result] = self.foreman(call)
        assert "error" not in result, result
        return result["value"]


@pytest.fixture
def serve(tmp_path: Path, pki: Pki) -> Iterator[Callable[..., Served]]:
    """``serve(scheme, **settings)``: tftproxy serve with both listeners; Foreman uses
    ``scheme`` (over HTTPS with its client certificate, as it always presents one)."""
    procs: list[subprocess.Popen[bytes]] = []
    served: list[Served] = []

    def start(scheme: str = "http", **settings: Any) -> Served:
        base = tmp_path / f"serve{len(procs)}"
        root = base / "tftpboot"
        root.mkdir(parents=True)
        ports = {"http": free_port(), "https": free_port()}
        values = {"tftproot": str(root), "listen": f"127.0.0.1:{ports['http']}",
                  "https_listen": f"127.0.0.1:{ports['https']}",
                  "ssl_certificate": str(pki.server.cert),
                  "ssl_private_key": str(pki.server.key), "ssl_ca_file": str(pki.ca.cert),
                  "min_free_space": 0, "retries": 0, "stall_timeout": 5,
                  "tftp_connect_timeout": 2,
                  # Each call's own upstream check (tests/jobs/test_fresh_for.py: the window).
                  "fresh_for": 0, **settings}
        config = base / "tftproxy.yml"
        config.write_text("".join(f"{k}: {json.dumps(v)}\n" for k, v in values.items()))
        log = base / "serve.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("TFTPROXY_")}
        with log.open("wb") as out:
            proc = subprocess.Popen([sys.executable, "-m", "tftproxy", "serve", "--config",
                                     str(config)], stdout=out, stderr=subprocess.STDOUT,
                                    env=env)
        procs.append(proc)
        wait_listening(proc, ports[scheme], "tftproxy serve", 20, log.read_text)
        ssl = None
        if scheme == "https":
            ssl = {"ca": pki.ca.cert, "cert": pki.trusted.cert, "key": pki.trusted.key}
        host = "localhost" if scheme == "https" else "127.0.0.1"
        served.append(Served(f"{scheme}://{host}:{ports[scheme]}", root, ports, ssl, log))
        return served[-1]

    yield start
    for one in served:
        one.close()
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
