"""Readers never see a partial file; kill -9 at any instant leaves every name whole."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.helpers.nginx import Nginx
from tests.helpers.upstream import Reply, Upstream
from tftproxy import assemble
from tftproxy.settings.model import Settings
from tftproxy.store import BootStore, Version

V1 = b"A" * 3_000_000
V2 = b"B" * 2_000_000 + b"b" * 1_500_000


def _reader(path: str, seconds: float, queue: multiprocessing.Queue) -> None:
    counts = {"v1": 0, "v2": 0, "absent": 0, "bad": 0}
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            counts["absent"] += 1
            continue
        counts["v1" if data == V1 else "v2" if data == V2 else "bad"] += 1
    queue.put(counts)


async def test_readers_only_ever_see_one_complete_version(nginx: Nginx, root: Path) -> None:
    settings = Settings(tftproot=root, retries=0, min_free_space=0, fresh_for=0)
    files = assemble.boot_files(settings)
    name = root / "boot/race-vmlinuz"
    nginx.put("vmlinuz", V1)
    assert (await (await files.request("boot/race", nginx.url("vmlinuz"))).outcome()).ok
    ctx = multiprocessing.get_context("spawn")
    queue: multiprocessing.Queue = ctx.Queue()
    readers = [ctx.Process(target=_reader, args=(str(name), 8.0, queue)) for _ in range(4)]
    for r in readers:
        r.start()
    published = 0
    try:
        deadline = time.monotonic() + 7.0
        for i in range(40):
            if time.monotonic() > deadline:
                break
            nginx.put("vmlinuz", V2 if i % 2 == 0 else V1, mtime=time.time() - i)
            result = await (await files.request("boot/race", nginx.url("vmlinuz"))).outcome()
            assert result.status == "published", result
            published += 1
    finally:
        totals = {"v1": 0, "v2": 0, "absent": 0, "bad": 0}
        for r in readers:
            r.join(30)
        for _ in readers:
            for k, v in queue.get(timeout=10).items():
                totals[k] += v
        await files.close()
    assert published >= 10
    assert totals["bad"] == 0, totals
    assert totals["v1"] > 0 and totals["v2"] > 0, totals


def _check_whole(root: Path, name: str) -> str:
    path = root / name
    if not os.path.lexists(path):
        return "absent"
    data = path.read_bytes()
    assert data in (V1, V2), f"{name} holds {len(data)} bytes of neither version"
    return "v1" if data == V1 else "v2"


def test_kill_9_at_random_instants_then_restart(upstream: Upstream, root: Path) -> None:
    rng = random.Random(1350)
    versions = {"/vmlinuz": V1}

    def slow(seen) -> Reply:
        body = versions["/vmlinuz"]
        return Reply(body=body, headers={"ETag": f'"{len(body)}"'}, chunk=65536,
                     chunk_delay=0.01)

    upstream.routes["/vmlinuz"] = slow
    cmd = [sys.executable, "-m", "tftproxy", "fetch", "--root", str(root), "boot/k",
           upstream.url("/vmlinuz")]
    env = {**os.environ, "TFTPROXY_MIN_FREE_SPACE": "0"}
    seen_states = set()
    killed_mid_download = 0
    started = time.monotonic()
    assert subprocess.run(cmd, capture_output=True, env=env, timeout=60).returncode == 0
    # Kill instants spread over a whole run as long as it takes on this machine right now.
    full_run = time.monotonic() - started
    for i in range(12):
        versions["/vmlinuz"] = V2 if i % 2 == 0 else V1
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                env=env)
        # Every third run is let finish, so kills hit refreshes of both versions.
        budget = 60.0 if i % 3 == 2 else rng.uniform(0.05, 1.3 * full_run)
        staging = root / ".tftproxy" / "private" / "staging"
        deadline = time.monotonic() + budget
        while time.monotonic() < deadline and proc.poll() is None:
            # Some kills wait for the download itself: on a loaded machine a random instant
            # measured against one run can miss every download of the storm.
            if i % 4 == 1 and any(staging.glob("*.part")):
                time.sleep(rng.uniform(0.0, 0.2))
                break
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        _check_whole(root, "boot/k-vmlinuz")
        store = BootStore(root)
        killed_mid_download += store.recover().staging_removed
        assert list(store.layout.staging_dir.iterdir()) == []
        state = _check_whole(root, "boot/k-vmlinuz")
        rec = store.records.record("boot/k-vmlinuz")
        if rec is None:
            assert state == "absent"
        else:
            assert rec.state == "published" and rec.current is not None
            assert store.links.linked_sha256("boot/k-vmlinuz") == rec.current.sha256
            data = (root / "boot/k-vmlinuz").read_bytes()
            assert hashlib.sha256(data).hexdigest() == rec.current.sha256
        seen_states.add(state)
    # After the storm, a clean run completes and publishes.
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert _check_whole(root, "boot/k-vmlinuz") == ("v2" if versions["/vmlinuz"] == V2 else "v1")
    # The random instants did land inside downloads, and on both sides of a publish.
    assert killed_mid_download > 0
    assert seen_states <= {"v1", "v2"}, "a published version is always restored"
    assert len(seen_states) == 2, seen_states


def _version(data: bytes, store: BootStore) -> Version:
    sha = hashlib.sha256(data).hexdigest()
    staging = store.objects.new_staging("n")
    staging.write(data)
    store.objects.ingest(staging, sha)
    return Version(sha256=sha, size=len(data), source="http://m/x", final_url="http://m/x")


def test_recovery_of_each_interrupted_step(root: Path) -> None:
    store = BootStore(root)
    v1, v2 = _version(V1, store), _version(V2, store)
    store.transactions.commit("boot/n", v1)
    # Crash while hidden, before the new content was complete: the old version comes back.
    store.transactions.begin_refresh("boot/n", hide=True)
    assert not os.path.lexists(root / "boot/n")
    leftover = store.objects.new_staging("boot/n")
    leftover.write(b"partial")
    os.close(leftover.fd)
    report = store.recover()
    assert report.restored == ["boot/n"] and report.staging_removed == 1
    assert (root / "boot/n").read_bytes() == V1
    # Crash after the new content was stored and recorded, before the link switched.
    from dataclasses import replace

    srec = store.records.set_record("boot/n")
    assert srec is not None
    store.records.write_set_record(replace(srec, state="switching", candidate={"boot/n": v2}))
    report = store.recover()
    assert report.completed == ["boot/n"]
    assert (root / "boot/n").read_bytes() == V2
    # A first fetch that died while refreshing leaves nothing behind.
    store.transactions.begin_refresh("boot/new", hide=True)
    report = store.recover()
    assert report.dropped == ["boot/new"]
    assert store.records.record("boot/new") is None and not os.path.lexists(root / "boot/new")
    # A link someone removed by hand is put back to what the record says.
    os.unlink(root / "boot/n")
    assert store.recover().relinked == ["boot/n"]
    assert (root / "boot/n").read_bytes() == V2
