"""The "first version being fetched" mark: readers wait on it, a crash never leaves it behind,
and a file that is not ours is neither hidden nor removed by it."""

from __future__ import annotations

import os
from pathlib import Path

from tests.tftp.clients import publish
from tftproxy.store import BootStore

NAME = "boot/c9-vmlinuz"


def test_the_mark_holds_readers_and_recovery_drops_it(root: Path) -> None:
    store = BootStore(root)
    with store.lock(NAME):
        rec = store.transactions.begin_first_fetch(NAME)
    assert (rec.state, rec.hidden, rec.current) == ("fetching", True, None)
    # Another process's view (a TFTP worker): a name to wait for, not a missing one.
    worker = BootStore(root, create=False).serving
    assert worker.is_refreshing(NAME)
    assert not os.path.lexists(root / NAME)
    # The fetching process died: the next start removes the mark and touches nothing else.
    report = BootStore(root).recover()
    assert report.dropped == [NAME]
    assert BootStore(root).records.record(NAME) is None
    assert not worker.is_refreshing(NAME)
    assert not os.path.lexists(root / NAME)


def test_a_failed_first_fetch_keeps_a_file_someone_else_put_there(root: Path) -> None:
    (root / "boot").mkdir()
    (root / NAME).write_bytes(b"left by smart-proxy")
    store = BootStore(root)
    with store.lock(NAME):
        rec = store.transactions.begin_first_fetch(NAME)
        assert not rec.hidden, "the existing file stays served; nobody waits"
        assert not store.serving.is_refreshing(NAME)
        assert store.transactions.abort_refresh(NAME) is None
    assert (root / NAME).read_bytes() == b"left by smart-proxy"
    assert store.records.record(NAME) is None


def test_publishing_ends_the_mark(root: Path) -> None:
    store = BootStore(root)
    with store.lock(NAME):
        store.transactions.begin_first_fetch(NAME)
    publish(store, NAME, b"kernel")
    rec = store.records.record(NAME)
    assert rec is not None and rec.state == "published" and not rec.hidden
    assert not store.serving.is_refreshing(NAME)
    assert (root / NAME).read_bytes() == b"kernel"
