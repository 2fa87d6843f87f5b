"""Records carry a format: a newer tftproxy reads an older tree, an older one refuses a newer."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from tftproxy.errors import RecordUnreadable
from tftproxy.store import BootStore
from tftproxy.store.names import name_key
from tftproxy.store.records import RECORD_FORMAT

SHA = "5e" + "0" * 62

# A name's record and its set's record exactly as tftproxy 0.1 wrote them (no "format").
OLD_RECORD = {
    "name": "boot/c7-vmlinuz", "state": "published", "checked_at": 1700000100.0,
    "hidden": False, "previous": None, "set": "boot/c7", "generation": 1,
    "current": {"sha256": SHA, "size": 5, "source": "http://m/vmlinuz",
                "final_url": "http://m/vmlinuz", "etag": '"e1"', "last_modified": None,
                "content_length": 5, "fetched_at": 1700000000.0, "verified": None},
}
OLD_SET = {"name": "boot/c7", "current": 1, "state": "published", "candidate": None,
           "generations": [{"number": 1, "members": {"boot/c7-vmlinuz": SHA},
                            "published_at": 1700000000.0, "retired_at": None}]}


def _old_tree(root: Path) -> BootStore:
    store = BootStore(root)
    obj = store.layout.object_path(SHA)
    obj.parent.mkdir(parents=True, exist_ok=True)
    obj.write_bytes(b"hello")
    (root / "boot").mkdir()
    (root / "boot/c7-vmlinuz").symlink_to(f"../.tftproxy/objects/5e/{SHA}")
    (store.layout.meta_dir / f"{name_key('boot/c7-vmlinuz')}.json").write_text(
        json.dumps(OLD_RECORD))
    (store.layout.sets_dir / f"{name_key('boot/c7')}.json").write_text(json.dumps(OLD_SET))
    return store


def test_an_older_tree_is_read_and_kept(root: Path) -> None:
    store = _old_tree(root)
    rec = store.records.record("boot/c7-vmlinuz")
    assert rec is not None and rec.current is not None
    assert (rec.current.sha256, rec.current.etag, rec.set, rec.generation) == (
        SHA, '"e1"', "boot/c7", 1)
    srec = store.records.set_record("boot/c7")
    assert srec is not None and srec.current == 1
    report = store.recover()
    assert not report.changed  # nothing to repair: the old tree is consistent as it is
    served = store.serving.open_served("boot/c7-vmlinuz", client="10.0.0.1")
    served.close()
    # Rewritten records carry the current format.
    store.transactions.mark_checked("boot/c7-vmlinuz", rec.current, 1700000200.0)
    data = json.loads((store.layout.meta_dir / f"{name_key('boot/c7-vmlinuz')}.json")
                      .read_text())
    assert data["format"] == RECORD_FORMAT


def test_a_record_from_a_newer_release_is_refused_not_misread(root: Path) -> None:
    store = _old_tree(root)
    path = store.layout.meta_dir / f"{name_key('boot/c7-vmlinuz')}.json"
    path.write_text(json.dumps({**OLD_RECORD, "format": RECORD_FORMAT + 1}))
    with pytest.raises(RecordUnreadable, match="newer"):
        store.records.record("boot/c7-vmlinuz")
    assert store.records.records() == []  # listed as unreadable, not as something else


def test_a_format_1_record_is_read_and_an_oci_version_round_trips(root: Path) -> None:
    store = _old_tree(root)
    path = store.layout.meta_dir / f"{name_key('boot/c7-vmlinuz')}.json"
    path.write_text(json.dumps({**OLD_RECORD, "format": 1}))  # as tftproxy wrote it before OCI
    rec = store.records.record("boot/c7-vmlinuz")
    assert rec is not None and rec.current is not None
    assert rec.current.manifest_digest is None
    digest = "sha256:" + "ab" * 32
    oci = replace(rec.current, source="oci://r/f:40#vmlinuz", manifest_digest=digest)
    store.transactions.mark_checked("boot/c7-vmlinuz", oci, 1700000300.0)
    data = json.loads(path.read_text())
    assert (data["format"], data["current"]["manifest_digest"]) == (2, digest)
    again = store.records.record("boot/c7-vmlinuz")
    assert again is not None and again.current == oci


def test_an_older_tree_without_sync_state_is_synced_and_reported(root: Path) -> None:
    """A tree of a release before background revalidation: no private/sync/ at all."""
    import shutil

    from tftproxy.jobs.status import status_report
    from tftproxy.store.syncstate import SYNC_FORMAT, SyncState

    store = _old_tree(root)
    shutil.rmtree(store.layout.sync_dir)
    old = BootStore(root, create=False)
    [s] = status_report(old)["sets"]
    assert s["set"] == "boot/c7" and s["sync"] is None
    assert old.sync_states.all() == {}
    # What a newer release wrote, or a damaged file, is taken as no state, not misread.
    store = BootStore(root)
    store.sync_states.put(SyncState(set="boot/c7", checked_at=5.0, outcome="unchanged"))
    path = store.layout.sync_dir / f"{name_key('boot/c7')}.json"
    assert json.loads(path.read_text())["format"] == SYNC_FORMAT
    assert store.sync_states.get("boot/c7") == SyncState(set="boot/c7", checked_at=5.0,
                                                         outcome="unchanged")
    path.write_text(json.dumps({"set": "boot/c7", "format": SYNC_FORMAT + 1}))
    assert store.sync_states.get("boot/c7") is None
    path.write_text("{not json")
    assert store.sync_states.all() == {}
