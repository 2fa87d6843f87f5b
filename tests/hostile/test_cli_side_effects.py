"""A dry run never writes (class 13): not a missing root, not a lock file, not a pin."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from tests.tftp.clients import publish
from tftproxy.store import BootStore


def _tftproxy(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tftproxy", *args], capture_output=True,
                          text=True, timeout=60)


def _snapshot(root: Path) -> dict[str, tuple[int, int, int, int]]:
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for entry in (*dirs, *files):
            st = os.lstat(os.path.join(dirpath, entry))
            out[os.path.join(dirpath, entry)] = (st.st_ino, st.st_size, st.st_mtime_ns,
                                                 st.st_mode)
    return out


def test_gc_dry_run_on_a_missing_root_creates_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such" / "root"
    for extra in ([], ["--json"]):
        done = _tftproxy("gc", "--root", str(missing), "--dry-run", *extra)
        assert done.returncode == 0, done.stderr
        assert "nothing to clean" in done.stderr
        assert not (tmp_path / "no").exists()
    assert json.loads(done.stdout)["deleted"] == []
    done = _tftproxy("gc", "--root", str(missing))
    assert done.returncode == 0 and not (tmp_path / "no").exists()


def test_gc_dry_run_writes_nothing_in_a_store(root: Path) -> None:
    store = BootStore(root)
    publish(store, "boot/a-vmlinuz", b"one")
    publish(store, "boot/a-vmlinuz", b"two")  # one object is now unreferenced
    # An expired pin: a real clean-up removes its file.
    (store.layout.pins_dir / "192_0_2_7.json").write_text(
        json.dumps({"boot/a-vmlinuz": [1, time.time() - 10]}))
    before = _snapshot(root)
    done = _tftproxy("gc", "--root", str(root), "--dry-run", "--grace", "0")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("would delete object "), done.stdout
    assert _snapshot(root) == before
    done = _tftproxy("gc", "--root", str(root), "--grace", "0")
    assert done.stdout.startswith("deleted object "), done.stdout
