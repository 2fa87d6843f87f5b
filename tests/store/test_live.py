"""The live record view is exact: what another process changed is seen once its lock is held.

The view is what lets an up-to-date check read no file on the event loop; these tests change
records from a real second process, leave staging behind as a dead process would, and race a
change against a read from disk.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.tftp.clients import publish
from tftproxy.errors import NameRefused
from tftproxy.store import BootStore
from tftproxy.store.aio import AsyncStore
from tftproxy.store.records import Version

NAME = "boot/c7-vmlinuz"


def _in_another_process(root: Path, code: str) -> None:
    script = textwrap.dedent(f"""
        import time
        from dataclasses import replace
        from tftproxy.store import BootStore
        store = BootStore({str(root)!r})
        {textwrap.indent(textwrap.dedent(code), ' ' * 8).strip()}
    """)
    subprocess.run([sys.executable, "-c", script], check=True, timeout=30)


async def _watched(root: Path) -> AsyncStore:
    store = AsyncStore(BootStore(root))
    await store.watch()
    return store


async def test_a_record_changed_by_another_process_is_seen(root: Path) -> None:
    publish(BootStore(root), NAME, b"kernel one")
    store = await _watched(root)
    try:
        first = await store.repaired_record(NAME)
        assert first is not None and first.current is not None
        assert store._live.clean_record(NAME) == (True, first)  # kept in memory
        _in_another_process(root, f"""
            rec = store.records.record({NAME!r})
            store.transactions.mark_checked({NAME!r}, replace(rec.current, etag='"e2"'),
                                            time.time())
        """)
        again = await store.repaired_record(NAME)
        assert again is not None and again.current is not None
        assert again.current.etag == '"e2"'
    finally:
        await store.close()


async def test_staging_left_by_a_dead_process_is_repaired_not_skipped(root: Path) -> None:
    publish(BootStore(root), NAME, b"kernel one")
    store = await _watched(root)
    try:
        assert await store.repaired_record(NAME) is not None
        _in_another_process(root, f"""
            staging = store.objects.new_staging({NAME!r})
            staging.write(b"half a kern")
        """)  # the process exits holding no lock: its staging file is a dead one's
        staging = store.store.layout.staging_dir
        assert len(list(staging.iterdir())) == 1
        store._live.drain()
        assert store._live.clean_record(NAME) == (False, None)
        assert await store.repaired_record(NAME) is not None
        assert list(staging.iterdir()) == []
    finally:
        await store.close()


async def test_a_fill_racing_a_change_is_not_kept(root: Path) -> None:
    publish(BootStore(root), NAME, b"kernel one")
    store = await _watched(root)
    try:
        live = store._live
        mark = live.mark()
        stale = BootStore(root).records.record(NAME, with_checked=False)
        data = b"kernel two"
        sha = hashlib.sha256(data).hexdigest()
        publish(BootStore(root), NAME, data)  # lands after the read, before the fill
        live.drain()
        live.fill(mark, NAME, stale, None)
        assert live.clean_record(NAME) == (False, None)
        fresh = await store.repaired_record(NAME)
        assert fresh is not None and fresh.current is not None and fresh.current.sha256 == sha
    finally:
        await store.close()


async def test_without_a_watch_every_read_goes_to_disk(root: Path) -> None:
    publish(BootStore(root), NAME, b"kernel one")
    store = AsyncStore(BootStore(root))  # no watch(): nothing is kept
    try:
        assert await store.repaired_record(NAME) is not None
        assert store._live.clean_record(NAME) == (False, None)
    finally:
        await store.close()


def test_a_symlink_planted_after_the_request_is_refused_at_link_time(root: Path,
                                                                     tmp_path: Path) -> None:
    store = BootStore(root)
    assert store.names.destination("boot/c7", "http://m/vmlinuz") == NAME  # checked: fine
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "boot").symlink_to(outside)  # then the tree changes under the name
    data = b"kernel"
    sha = hashlib.sha256(data).hexdigest()
    with store.lock(NAME):
        staging = store.objects.new_staging(NAME)
        staging.write(data)
        store.objects.ingest(staging, sha)
        with pytest.raises(NameRefused, match="outside the TFTP root"):
            store.transactions.commit(NAME, Version(sha, len(data), "http://m/vmlinuz",
                                                    "http://m/vmlinuz", fetched_at=time.time()))
    assert list(outside.iterdir()) == []
