"""The status page, as a browser shows it: Debian's Chromium, headless, against a running
`tftproxy serve` with a download paused half-way, a failed fetch, a TFTP and an HTTP boot
transfer; the test reads the DOM Chromium rendered. Who may read the page is checked over
real HTTP too."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import threading
import time
import urllib.request
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.service import Serve
from tests.helpers.upstream import Reply, Upstream, static
from tests.tftp.clients import tftp_hpa_get, wait_for
from tftproxy.api.context import CONTEXT

CHROMIUM = shutil.which("chromium")
MiB = 1024 * 1024


class Rendered(HTMLParser):
    """The rendered DOM's rows by class (each a list of cell texts) and its progress bars."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.rows: dict[str, list[list[str]]] = {}
        self.progress: list[dict[str, str | None]] = []
        self.sections: dict[str, str] = {}
        self._row: list[str] | None = None
        self._cls = ""
        self._cell: list[str] | None = None
        self._section: str | None = None
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "section":
            self._section = a.get("id")
            self.sections[self._section or ""] = ""
        elif tag == "tr" and a.get("class"):
            self._row, self._cls = [], a["class"] or ""
        elif tag == "td" and self._row is not None:
            self._cell = []
        elif tag == "progress":
            self.progress.append(a)

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._row is not None and self._cell is not None:
            self._row.append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.rows.setdefault(self._cls, []).append(self._row)
            self._row = None
        elif tag == "section":
            self._section = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)
        if self._section is not None:
            self.sections[self._section] += data

    def text(self, section: str) -> str:
        return " ".join(self.sections.get(section, "").split())


def chromium(url: str, profile: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    return subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={profile}", *extra, url],
        capture_output=True, text=True, timeout=90)


def render(url: str, profile: Path) -> Rendered:
    done = chromium(url, profile, "--dump-dom")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "<html" in done.stdout, done.stdout[:500]
    return Rendered(done.stdout)


def status(serve: Serve) -> dict[str, Any]:
    code, body = serve.get("/tftp/status")
    assert code == 200, body
    return json.loads(body)  # type: ignore[no-any-return]


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (scripts/system-deps)")
def test_chromium_shows_a_running_download_a_failure_sets_and_transfers(tmp_path: Path) -> None:
    up = Upstream()
    kernel = b"K" * 300_000
    initrd = bytes(range(256)) * (8 * MiB // 256)
    release = threading.Event()
    up.routes["/os/images/pxeboot/vmlinuz"] = static(kernel, etag='"k1"')
    # A slow link, then a pause half-way: the download is running while the browser looks.
    up.routes["/os/images/pxeboot/initrd.img"] = lambda seen: Reply(
        body=initrd, headers={"ETag": '"i1"'}, chunk=64 * 1024, chunk_delay=0.01,
        pause_at=4 * MiB, pause=release)
    root = tmp_path / "root"
    root.mkdir()
    serve = Serve(tmp_path / "svc", root, {"fetch_wait": 0.5, "stall_timeout": 120,
                                           "status_page": "open", "drain_timeout": 1})
    profile = tmp_path / "chromium"
    try:
        assert serve.post("/tftp/fetch_boot_file", {
            "prefix": "boot/demo", "path": up.url("/os/images/pxeboot/vmlinuz")})[0] == 200
        assert tftp_hpa_get(serve.tftp_port or 0, "boot/demo-vmlinuz",
                            tmp_path / "got").returncode == 0
        with urllib.request.urlopen(serve.url + "/httpboot/boot/demo-vmlinuz") as resp:
            assert resp.read() == kernel
        code, body = serve.post("/tftp/fetch_boot_file", {
            "prefix": "boot/gone", "path": up.url("/gone/vmlinuz")})
        assert code == 502, body
        code, body = serve.post("/tftp/fetch_boot_file", {
            "prefix": "boot/demo", "path": up.url("/os/images/pxeboot/initrd.img")})
        assert code == 202, body
        # The body stops a few read buffers before the pause: wait until it stands still.
        assert wait_for(lambda: any(d["progress"]["bytes"] >= 3 * MiB
                                    for d in status(serve)["downloads"]), 60)
        time.sleep(0.5)
        (running,) = status(serve)["downloads"]
        done_bytes = running["progress"]["bytes"]
        percent = f"{done_bytes / len(initrd) * 100:.1f}"

        page = render(serve.url + "/", profile)
        (download,) = page.rows["download"]
        assert download[0] == "boot/demo-initrd.img"
        (bar,) = page.progress
        assert bar["max"] == str(len(initrd)) and bar["value"] == str(done_bytes)
        assert download[2] == f"{done_bytes / MiB:.1f} MiB of 8.0 MiB ({percent} %)"
        assert re.fullmatch(r"\d+(\.\d)? (B|KiB|MiB)/s", download[3]), download
        assert download[6] == up.url("/os/images/pxeboot/initrd.img")
        failures = " ".join(row[1] for row in page.rows["failure"])
        assert "boot/gone-vmlinuz" in failures and "404" in failures, failures
        (gen,) = page.rows["generation"]
        assert gen[0].startswith("boot/demo") and gen[1] == "1 current"
        assert gen[3] == "boot/demo-vmlinuz" and gen[4] == "127.0.0.1"
        files = {row[0]: row for row in page.rows["file"]}
        assert files["boot/demo-vmlinuz"][1:4] == ["published", "293.0 KiB", "no manifest"]
        assert files["boot/demo-initrd.img"][1] == "fetching (first version)"
        transfers = {(row[1], row[3], row[6]) for row in page.rows["transfer"]}
        assert ("tftp", "boot/demo-vmlinuz", "complete") in transfers
        assert ("http", "boot/demo-vmlinuz", "complete") in transfers
        assert "free of" in page.text("disk")
        # A screenshot of the same moment, as docs/status-page.png shows it.
        shot = tmp_path / "status.png"
        done = chromium(serve.url + "/status", profile, f"--screenshot={shot}",
                        "--window-size=1280,1000", "--hide-scrollbars")
        assert done.returncode == 0 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        if os.environ.get("STATUS_PAGE_SCREENSHOT"):  # how docs/status-page.png is made
            shutil.copyfile(shot, os.environ["STATUS_PAGE_SCREENSHOT"])

        release.set()
        assert wait_for(lambda: not status(serve)["downloads"], 60)
        page = render(serve.url + "/status", profile)
        assert "download" not in page.rows and "No download running" in page.text("downloads")
        files = {row[0]: row for row in page.rows["file"]}
        assert files["boot/demo-initrd.img"][1:3] == ["published", "8.0 MiB"]
        gens = page.rows["generation"]
        # The set's cell spans its rows: the first row has one cell more.
        assert gens[0][1] == "2 current" and gens[1][0].startswith("1 kept, retired ")
        assert "Clean-up would free" in page.text("disk")
    finally:
        release.set()
        serve.stop()
        up.close()


async def test_who_may_read_the_page_follows_status_page(proxy) -> None:
    # trusted (the default), with a trusted_hosts list that names no one: as /tftp/status.
    p = await proxy(trusted_hosts=["foreman.example.com"])
    for path in ("/", "/status", "/tftp/status"):
        r = await p.call("GET", path)
        assert r.status == 403 and "Untrusted client" in r.text, path
    assert (await p.call("GET", "/features")).status == 200
    p = await proxy(status_page="open", trusted_hosts=["foreman.example.com"])
    r = await p.call("GET", "/")
    assert r.status == 200 and r.content_type.startswith("text/html")
    assert "No boot file published yet." in r.text and "No download running." in r.text
    assert (await p.call("GET", "/tftp/status")).status == 403
    p = await proxy(status_page="off")
    r = await p.call("GET", "/status")
    assert r.status == 404 and "status_page: off" in r.text


async def test_the_page_escapes_what_requests_and_upstreams_wrote(proxy) -> None:
    p = await proxy(status_page="open", fetch_wait=5)
    buffer = p.runner.app[CONTEXT].logs  # what `serve` attaches to the process's logging
    logging.getLogger().addHandler(buffer)
    try:
        r = await p.foreman("POST", "/tftp/fetch_boot_file",
                            {"prefix": "boot/x", "path": "http://127.0.0.1:9/<script>alert(1)"})
    finally:
        logging.getLogger().removeHandler(buffer)
    assert r.status == 502
    r = await p.call("GET", "/")
    assert r.status == 200
    assert "<script>alert" not in r.text and "&lt;script&gt;alert" in r.text
