"""/metrics, /health and /ready of a real `tftproxy serve`, scraped by a real Prometheus
(Debian's) on loopback, and checked by promtool."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.nginx import Nginx, free_port
from tests.helpers.service import Serve
from tests.tftp.clients import curl_get, publish, wait_for
from tftproxy.store import BootStore

_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: run scripts/system-deps (Debian package "
                    "prometheus)")
    return path


class Prometheus:
    def __init__(self, base: Path, target: str) -> None:
        base.mkdir()
        self.port = free_port()
        config = base / "prometheus.yml"
        config.write_text(f"""
global: {{scrape_interval: 1s, scrape_timeout: 1s}}
scrape_configs:
  - job_name: tftproxy
    static_configs: [{{targets: ['{target}']}}]
""")
        with open(base / "log", "wb") as err:
            self.proc = subprocess.Popen(
                [_tool("prometheus"), f"--config.file={config}",
                 f"--storage.tsdb.path={base / 'data'}",
                 f"--web.listen-address=127.0.0.1:{self.port}"],
                stdout=subprocess.DEVNULL, stderr=err)

    def query(self, expr: str) -> list[dict]:
        url = (f"http://127.0.0.1:{self.port}/api/v1/query?"
               + urllib.parse.urlencode({"query": expr}))
        try:
            with _DIRECT.open(url, timeout=5) as resp:
                return json.load(resp)["data"]["result"]
        except OSError:
            return []

    def value(self, expr: str) -> float | None:
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else None

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(20)


@pytest.fixture
def served(tmp_path: Path, store: BootStore) -> Iterator[Serve]:
    service = Serve(tmp_path / "svc", store.root, {"tftp_workers": 2})
    yield service
    service.stop(signal.SIGKILL)


def test_prometheus_scrapes_every_worker_and_the_fetches(tmp_path: Path, store: BootStore,
                                                        served: Serve, nginx: Nginx) -> None:
    data = os.urandom(100_000)
    publish(store, "boot/kernel", data)
    assert served.tftp_port is not None
    for i in range(6):  # spread over both workers by the kernel's SO_REUSEPORT hash
        assert curl_get(served.tftp_port, "boot/kernel", tmp_path / f"k{i}").returncode == 0
    assert curl_get(served.tftp_port, "boot/missing", tmp_path / "m").returncode != 0
    nginx.put("os/images/pxeboot/vmlinuz", os.urandom(5_000))
    ok = {"prefix": "boot/c", "path": nginx.url("os/images/pxeboot/vmlinuz")}
    assert served.post("/tftp/fetch_boot_file", ok)[0] == 200
    assert served.post("/tftp/fetch_boot_file", ok)[0] == 200  # up to date: a 304
    bad = {"prefix": "boot/c", "path": nginx.url("os/nope/vmlinuz")}
    assert served.post("/tftp/fetch_boot_file", bad)[0] == 502
    # A revalidation of the set (a 304 more): counted as a fetch job and as a sync outcome.
    assert served.post("/tftp/sync", {"prefix": "boot/c"})[0] == 200

    prom = Prometheus(tmp_path / "prom", f"127.0.0.1:{served.api_port}")
    try:
        assert wait_for(lambda: prom.value('up{job="tftproxy"}') == 1.0, 60), \
            (tmp_path / "prom" / "log").read_text()[-2000:]
        v = prom.value
        assert v('tftproxy_tftp_transfers_total{outcome="complete"}') == 6
        assert v("tftproxy_tftp_sent_bytes_total") == 6 * len(data)
        assert v('tftproxy_tftp_refused_total{reason="not_found"}') == 1
        assert v("tftproxy_tftp_transfer_latency_seconds_count") == 6
        assert v('tftproxy_tftp_transfer_latency_seconds_bucket{le="+Inf"}') == 6
        assert v("tftproxy_tftp_workers") == 2
        assert v("tftproxy_tftp_active_transfers") == 0
        assert v('tftproxy_fetches_total{outcome="published"}') == 1
        assert v('tftproxy_fetches_total{outcome="unchanged"}') == 2
        assert v('tftproxy_fetches_total{outcome="failed"}') == 1
        assert v('tftproxy_upstream_responses_total{code="304",kind="download"}') == 2
        assert v('tftproxy_sync_revalidations_total{outcome="unchanged"}') == 1
        assert v('tftproxy_sync_revalidations_total{outcome="failed"}') == 0
        assert v('tftproxy_upstream_responses_total{code="404",kind="download"}') == 1
        assert v('tftproxy_upstream_responses_total{code="404",kind="manifest"}') >= 1
        assert v("tftproxy_fetch_downloaded_bytes_total") == 5_000
        assert v('tftproxy_fetch_duration_seconds_count{outcome="published"}') == 1
        assert v("tftproxy_store_objects") == 2 and v("tftproxy_store_names") == 2
        assert v("tftproxy_store_filesystem_free_bytes") > 0
        assert v("tftproxy_ready") == 1
        # Every worker counts: the sum Prometheus sees is not one worker's share.
        shares = [w for w in served.log_text().splitlines() if "'boot/kernel' octet" in w]
        assert len(shares) == 6
    finally:
        prom.stop()


def test_promtool_accepts_the_exposition(served: Serve, tmp_path: Path) -> None:
    status, body = served.get("/metrics")
    assert status == 200
    assert "tftproxy_tftp_transfer_latency_seconds_bucket" in body
    check = subprocess.run([_tool("promtool"), "check", "metrics"], input=body,
                           capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stdout + check.stderr
    assert check.stdout + check.stderr == ""  # not even a lint warning


def test_health_and_readiness(served: Serve) -> None:
    assert served.get("/health") == (200, "ok")
    assert served.get("/ready") == (200, "ready")
    # A worker killed: not ready until the supervisor has started another.
    [first, *_] = _worker_pids(served.proc.pid)
    os.kill(first, signal.SIGKILL)
    assert wait_for(lambda: served.get("/ready")[0] == 503, 5)
    status, body = served.get("/ready")
    assert status == 503 and "TFTP workers running" in body
    assert wait_for(lambda: served.get("/ready")[0] == 200, 10)


def _worker_pids(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(c) for c in children]


def test_metrics_can_be_turned_off(tmp_path: Path, store: BootStore) -> None:
    served = Serve(tmp_path / "svc", store.root, {"metrics": False}, tftp=False)
    try:
        status, body = served.get("/metrics")
        assert status == 404 and "metrics: false" in body
        assert served.get("/ready")[0] == 200
    finally:
        served.stop()
