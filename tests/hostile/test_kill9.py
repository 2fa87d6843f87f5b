"""kill -9 at random instants of a boot set's switch: after recovery the two members are one
generation, each whole, and the service starts and serves them."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.helpers.upstream import Reply, Upstream
from tests.hostile.figures import record
from tftproxy.store import BootStore

GEN = {1: (b"kernel one " * 60_000, b"initrd one " * 90_000),
       2: (b"kernel two! " * 55_000, b"initrd two! " * 95_000)}
NAMES = ("boot/k-vmlinuz", "boot/k-initrd.img")


def _pair(root: Path) -> tuple[int | None, int | None]:
    """Which generation each member holds on disk (None: absent); fails on a torn file."""
    out = []
    for i, name in enumerate(NAMES):
        path = root / name
        if not os.path.lexists(path):
            out.append(None)
            continue
        data = path.read_bytes()
        gen = next((g for g, files in GEN.items() if files[i] == data), None)
        assert gen is not None, f"{name} holds {len(data)} bytes of no generation"
        out.append(gen)
    return out[0], out[1]


def _switching(root: Path) -> bool:
    for path in (root / ".tftproxy/private/sets").glob("*.json"):
        try:
            if json.loads(path.read_text()).get("state") == "switching":
                return True
        except (OSError, ValueError):
            continue
    return False


def test_kill_9_during_set_switches(upstream: Upstream, root: Path, serve) -> None:
    rng = random.Random(911)
    current = {"gen": 1}

    def member(index: int):
        def handle(seen) -> Reply:
            body = GEN[current["gen"]][index]
            return Reply(body=body, headers={"ETag": f'"{current["gen"]}-{index}"'},
                         chunk=128 * 1024, chunk_delay=0.01)
        return handle

    upstream.routes["/os/vmlinuz"] = member(0)
    upstream.routes["/os/initrd.img"] = member(1)
    env = {**os.environ, "TFTPROXY_MIN_FREE_SPACE": "0", "TFTPROXY_RETRIES": "0"}

    def fetch(path: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-m", "tftproxy", "fetch", "--root", str(root),
                                 "boot/k", upstream.url(path)], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, env=env)

    for path in ("/os/vmlinuz", "/os/initrd.img"):
        assert fetch(path).wait(60) == 0
    assert _pair(root) == (1, 1)
    current["gen"] = 2
    started = time.monotonic()
    assert fetch("/os/vmlinuz").wait(60) == 0  # a whole switch, timed on this machine now
    full_run = time.monotonic() - started
    assert _pair(root) == (2, 2)
    kills = mid_switch = torn_before_recovery = 0
    outcomes: dict[str, int] = {}
    deadline = time.monotonic() + 40
    i = 0
    while i < 12 and time.monotonic() < deadline:
        current["gen"] = 1 if current["gen"] == 2 else 2
        proc = fetch("/os/vmlinuz" if i % 2 else "/os/initrd.img")
        if i % 2:
            # Watch for the recorded switch and kill inside it, a few milliseconds in.
            until = time.monotonic() + 3 * full_run + 5
            while time.monotonic() < until and proc.poll() is None and not _switching(root):
                time.sleep(0.0005)
            time.sleep(rng.uniform(0, 0.004))
            mid_switch += _switching(root)
        else:
            time.sleep(rng.uniform(0.05, 1.2 * full_run))
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        kills += 1
        before = _pair(root)
        torn_before_recovery += before[0] != before[1]
        store = BootStore(root)
        store.recover()
        after = _pair(root)
        assert after[0] == after[1] and after[0] is not None, (before, after)
        srec = store.records.set_record("boot/k")
        assert srec is not None and srec.state == "published" and srec.candidate is None
        for name in NAMES:
            rec = store.records.record(name)
            assert rec is not None and rec.state == "published" and rec.current is not None
            data = (root / name).read_bytes()
            assert hashlib.sha256(data).hexdigest() == rec.current.sha256
        assert list(store.layout.staging_dir.iterdir()) == []
        outcomes[f"gen {after[0]}"] = outcomes.get(f"gen {after[0]}", 0) + 1
        i += 1
    assert kills >= 6 and mid_switch > 0, (kills, mid_switch)
    # The service starts over what the kills left and serves one whole generation.
    served = serve(root)
    got = []
    for name in NAMES:
        with urllib.request.urlopen(f"{served.url}/httpboot/{name}", timeout=10) as r:
            got.append(r.read())
    assert tuple(got) in GEN.values()
    record("kill -9 during boot-set switches", kills=kills, inside_the_switch=mid_switch,
           mixed_on_disk_before_recovery=torn_before_recovery, mixed_after_recovery=0,
           torn_files=0, outcomes=outcomes)
