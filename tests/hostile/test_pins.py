"""A pin lasts pin_window from the client's first read of its generation (class 7).

A host in a boot loop reads its kernel more often than pin_window; it must still reach the
fixed generation once its pin runs out. Real TFTP reads (curl) and /httpboot reads.
"""

from __future__ import annotations

import hashlib
import subprocess
import time
from pathlib import Path

from tests.tftp.clients import need, running_server
from tftproxy.store import BootStore, Version

K1, K2 = b"broken kernel " * 5000, b"fixed kernel! " * 5000
I1, I2 = b"initrd one " * 3000, b"initrd two " * 3000
WINDOW = 2.0


def _generation(store: BootStore, kernel: bytes, initrd: bytes) -> None:
    versions = {}
    for name, data in (("boot/loop-vmlinuz", kernel), ("boot/loop-initrd.img", initrd)):
        sha = hashlib.sha256(data).hexdigest()
        staging = store.objects.new_staging(name)
        staging.write(data)
        store.objects.ingest(staging, sha)
        versions[name] = Version(sha256=sha, size=len(data), source=f"test:{name}",
                                 final_url=f"test:{name}", fetched_at=time.time())
    store.transactions.publish_generation("boot/loop", versions, time.time())


def _tftp(port: int, name: str, out: Path) -> bytes:
    subprocess.run([need("curl"), "-sS", "-o", str(out), f"tftp://127.0.0.1:{port}/{name}"],
                   check=True, capture_output=True, timeout=30)
    return out.read_bytes()


def test_a_boot_loop_reaches_the_fixed_generation_once_its_pin_expires(root: Path,
                                                                         tmp_path: Path) -> None:
    store = BootStore(root, pin_window=WINDOW)
    _generation(store, K1, I1)
    with running_server(store) as server:
        port = server.addresses[0][1]
        started = time.monotonic()
        assert _tftp(port, "boot/loop-vmlinuz", tmp_path / "k") == K1  # pinned to gen 1 now
        _generation(store, K2, I2)
        seen = []
        while time.monotonic() - started < WINDOW + 1.5:
            # The host reboots every 0.3 s: far more often than pin_window.
            seen.append((time.monotonic() - started,
                         _tftp(port, "boot/loop-vmlinuz", tmp_path / "k")))
            time.sleep(0.3)
    early = [k for t, k in seen if t < WINDOW - 0.3]
    late = [k for t, k in seen if t > WINDOW + 0.3]
    assert early and all(k == K1 for k in early), "the pin holds within its window"
    assert late and all(k == K2 for k in late), "reads renewed the pin"
