"""A respin is published by `serve`'s background revalidation, with no request from Foreman,
while real TFTP clients boot throughout: no read fails, none boots a mixed pair, and the
names are never hidden."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import yaml

from tests.helpers.nginx import Nginx, free_port
from tests.tftp.clients import free_udp_port, need, wait_for, wait_ready
from tftproxy.store import BootStore

K1, I1 = b"kernel 10.0 " * 25_000, b"initrd 10.0 " * 60_000
K2, I2 = b"kernel 10.1! " * 26_000, b"initrd 10.1! " * 61_000
PAIRS = {(K1, I1): "old", (K2, I2): "new"}
INTERVAL = 3.0
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def tftp_read(port: int, name: str, out: Path, source: str) -> bytes | None:
    """One read by curl's TFTP client from ``source`` (a machine of the network)."""
    done = subprocess.run(
        [need("curl"), "-sS", "--interface", source, "--tftp-blksize", "1468", "-o", str(out),
         f"tftp://127.0.0.1:{port}/{name}"], capture_output=True, timeout=30)
    return out.read_bytes() if done.returncode == 0 else None


def status(http_port: int) -> dict:
    with _DIRECT.open(f"http://127.0.0.1:{http_port}/tftp/status", timeout=10) as resp:
        return json.loads(resp.read())


def test_a_respin_is_published_in_the_background_while_clients_boot(
        nginx: Nginx, root: Path, tmp_path: Path) -> None:
    nginx.put("c10/images/pxeboot/vmlinuz", K1)
    nginx.put("c10/images/pxeboot/initrd.img", I1)
    http_port, tftp_port = free_port(), free_udp_port()
    config = tmp_path / "tftproxy.yml"
    config.write_text(yaml.safe_dump({
        "tftproot": str(root), "listen": f"127.0.0.1:{http_port}",
        "tftp_listen": [f"127.0.0.1:{tftp_port}"], "min_free_space": 0, "retries": 0,
        "pin_window": 600, "sync_interval": INTERVAL, "sync_jitter": 0,
        # The first host of this OS waits for nothing: fetched at start, kept current.
        "prefetch": [{"prefix": "boot/c10", "urls": [
            nginx.url("c10/images/pxeboot/vmlinuz"), nginx.url("c10/images/pxeboot/initrd.img")]}],
    }))
    proc = subprocess.Popen([sys.executable, "-m", "tftproxy", "serve", "--config", str(config)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    reads: list[tuple[bytes | None, bytes | None]] = []
    missing: list[str] = []
    stop = threading.Event()

    errors: list[str] = []

    def boot_machines(worker: int) -> None:
        # Each pass is a new machine (a new source address) booting: kernel, then initrd.
        deadline = time.monotonic() + 40
        try:
            for i in itertools.count():
                if stop.is_set() or time.monotonic() > deadline or i >= 300:
                    return
                source = f"127.{10 + worker}.{i // 250}.{i % 250 + 1}"
                out = tmp_path / f"read-{worker}"
                kernel = tftp_read(tftp_port, "boot/c10-vmlinuz", out, source)
                reads.append((kernel, tftp_read(tftp_port, "boot/c10-initrd.img", out, source)))
        except Exception as exc:
            errors.append(repr(exc))

    def watch_names() -> None:
        tree = BootStore(root, create=False)
        deadline = time.monotonic() + 45
        try:
            while not stop.is_set() and time.monotonic() < deadline:
                for name in ("boot/c10-vmlinuz", "boot/c10-initrd.img"):
                    if not os.path.lexists(root / name) or tree.serving.is_refreshing(name):
                        missing.append(name)
                time.sleep(0.002)
        except Exception as exc:
            errors.append(repr(exc))

    try:
        assert wait_ready(tftp_port, limit=30), "tftproxy serve did not answer TFTP"
        assert wait_for(lambda: (root / "boot/c10-initrd.img").exists(), 30), "no prefetch"
        assert wait_for(lambda: status(http_port)["sets"][0]["current"] == 2, 10)
        threads = [threading.Thread(target=boot_machines, args=(w,)) for w in range(2)]
        threads.append(threading.Thread(target=watch_names))
        for t in threads:
            t.start()
        time.sleep(1.0)
        nginx.put("c10/images/pxeboot/vmlinuz", K2, mtime=time.time() + 5)
        nginx.put("c10/images/pxeboot/initrd.img", I2, mtime=time.time() + 5)
        respun = time.monotonic()
        assert wait_for(lambda: status(http_port)["sets"][0]["current"] == 3, INTERVAL + 10)
        published = time.monotonic() - respun
        time.sleep(1.5)  # machines booting after the switch
        stop.set()
        for t in threads:
            t.join(60)
        report = status(http_port)
    finally:
        stop.set()
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0, output
    # Within the configured interval (plus the round itself), without any request.
    assert published <= INTERVAL + 2.0, published
    assert "fetch_boot_file" not in output
    assert errors == []
    assert reads and all(k is not None and i is not None for k, i in reads), "a read failed"
    kinds = [PAIRS.get((k, i)) for k, i in reads]  # type: ignore[arg-type]
    assert None not in kinds, "a machine got a kernel and an initrd of different generations"
    assert {"old", "new"} <= set(kinds)
    assert missing == []
    # Only conditional requests between the two downloads of each file.
    for f in ("vmlinuz", "initrd.img"):
        codes = [s for _, s, _ in nginx.log_lines(f"/c10/images/pxeboot/{f}")]
        assert codes.count(200) == 2 and set(codes) <= {200, 304}, codes
    [s] = report["sets"]
    # The last check is the update, or a later one that found it current.
    assert s["sync"]["outcome"] in ("updated", "unchanged") and s["sync"]["generation"] == 3
    assert s["sync"]["next_check"] is not None and s["sync"]["failures"] == 0
    assert report["sync"]["background"] is True and report["sync"]["counts"]["updated"] >= 1
