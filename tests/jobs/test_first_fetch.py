"""A host that boots while its files are fetched for the first time waits for them.

Foreman takes a 202 as done, so a host may boot while its kernel's first version is still
downloading. Our servers hold its requests, as for a refresh, and answer with the whole file
the moment it is published: real clients (curl over TFTP and HTTP, tftp-hpa) against the API
in this process and a TFTP worker in its own process, fed by an upstream that pauses.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.api.conftest import curl
from tests.helpers.upstream import Reply, Upstream
from tests.tftp.clients import curl_get, tftp_hpa_get, wait_for
from tftproxy.assemble import start_tftp
from tftproxy.settings.model import Settings
from tftproxy.store import BootStore
from tftproxy.store.serving import ServedTree
from tftproxy.tftp.workers import TftpHandle

DATA = os.urandom(3_000_000)
NAME = "boot/first-vmlinuz"
HOLD = 30.0


@pytest.fixture
def tftp_worker(root: Path) -> Iterator[TftpHandle]:
    """Our TFTP server in a worker process of its own, reading the records from disk."""
    settings = Settings(tftproot=root, tftp_listen=["127.0.0.1:0"], refresh_hold=HOLD)
    handle = start_tftp(settings, ServedTree(BootStore(root).layout, 900.0))
    yield handle
    handle.close()


async def _http_get(url: str, out: Path) -> tuple[int, str]:
    """curl over HTTP into a file: (exit status, HTTP status)."""
    proc = await asyncio.create_subprocess_exec(
        "curl", "-sS", "--max-time", "60", "-o", str(out), "-w", "%{http_code}", url,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    stdout, _ = await proc.communicate()
    return proc.returncode or 0, stdout.decode()


async def _post(api, upstream: Upstream) -> dict:
    proxy = await api(fetch_wait=0.3, refresh_hold=HOLD)
    status, _, body = await proxy.fetch_boot_file("boot/first", upstream.url("/vmlinuz"))
    assert status == 202, body  # Foreman takes this as done, and the host may boot now
    return {"proxy": proxy, "job": body}


async def test_clients_asking_during_the_first_fetch_get_the_whole_file(
        api, upstream: Upstream, tftp_worker: TftpHandle, tmp_path: Path) -> None:
    gate = threading.Event()
    upstream.routes["/vmlinuz"] = lambda s: Reply(body=DATA, pause_at=65536, pause=gate)
    started = await _post(api, upstream)
    proxy = started["proxy"]
    port = tftp_worker.addresses[0][1]
    assert not (proxy.settings.tftproot / NAME).exists()

    curl_tftp = asyncio.create_task(asyncio.to_thread(curl_get, port, NAME, tmp_path / "c"))
    hpa = asyncio.create_task(asyncio.to_thread(tftp_hpa_get, port, NAME, tmp_path / "h"))
    http = asyncio.create_task(_http_get(f"{proxy.base}/httpboot/{NAME}", tmp_path / "w"))
    # Both TFTP requests are held by the worker (not answered "file not found"), and the
    # HTTP request waits too, while the download is stuck.
    assert await asyncio.to_thread(wait_for, lambda: tftp_worker.counters()["held"] >= 2)
    await asyncio.sleep(0.5)
    assert not (curl_tftp.done() or hpa.done() or http.done())
    async with proxy.session.get(f"{proxy.base}/tftp/status") as resp:
        states = {f["name"]: f["state"] for f in (await resp.json())["files"]}
    assert states == {NAME: "fetching (first version)"}

    gate.set()
    released = time.monotonic()
    done_curl, done_hpa, done_http = await asyncio.wait_for(
        asyncio.gather(curl_tftp, hpa, http), 60)
    assert time.monotonic() - released < HOLD / 2, "answered on publication, not at the limit"
    assert done_curl.returncode == 0, done_curl.stderr
    assert done_hpa.returncode == 0, done_hpa.stdout
    assert (tmp_path / "c").read_bytes() == DATA
    assert (tmp_path / "h").read_bytes() == DATA
    assert done_http == (0, "200")
    assert (tmp_path / "w").read_bytes() == DATA
    job = await proxy.files.job(started["job"]["id"]).outcome()
    assert job.status == "published" and job.sha256 == hashlib.sha256(DATA).hexdigest()


async def test_a_failed_first_fetch_releases_the_waiting_clients_at_once(
        api, upstream: Upstream, tftp_worker: TftpHandle, tmp_path: Path) -> None:
    gate = threading.Event()
    upstream.routes["/vmlinuz"] = lambda s: Reply(body=DATA, pause_at=65536, pause=gate,
                                                  cut_at=100_000, then="close")
    started = await _post(api, upstream)
    proxy = started["proxy"]
    port = tftp_worker.addresses[0][1]
    curl_tftp = asyncio.create_task(asyncio.to_thread(curl_get, port, NAME, tmp_path / "c"))
    http = asyncio.create_task(curl(f"{proxy.base}/httpboot/{NAME}", "--max-time", "60"))
    assert await asyncio.to_thread(wait_for, lambda: tftp_worker.counters()["held"] >= 1)
    gate.set()
    released = time.monotonic()
    done_curl, done_http = await asyncio.wait_for(asyncio.gather(curl_tftp, http), 60)
    assert time.monotonic() - released < HOLD / 2
    assert done_curl.returncode == 68, done_curl.stderr  # CURLE_TFTP_NOTFOUND: ERROR 1
    assert (done_http.status, done_http.body) == (404, "Not found")
    result = await proxy.files.job(started["job"]["id"]).outcome()
    assert result.status == "failed" and "nothing published" in (result.message or "")
    # Nothing is left: no record, no name, no mark that would hold the next request.
    store = BootStore(proxy.settings.tftproot)
    assert store.records.records() == []
    assert not store.serving.is_refreshing(NAME)
    assert not os.path.lexists(proxy.settings.tftproot / NAME)
