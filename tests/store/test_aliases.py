"""Aliases (``boot.efi -> grubx64.efi``) as members of a generation: made by the transaction,
finished after a crash, restored after a failed refresh, refused when they point elsewhere."""

from __future__ import annotations

import hashlib
import os
from dataclasses import replace

import pytest

from tftproxy.store import BootStore, SetRecord, Version
from tftproxy.store.objects import StagingFile

U = "bootloader-universe/pxegrub2/os/1/x86_64"


def ingest(store: BootStore, name: str, data: bytes) -> Version:
    staging: StagingFile = store.objects.new_staging(name)
    staging.write(data)
    sha = hashlib.sha256(data).hexdigest()
    store.objects.ingest(staging, sha)
    return Version(sha256=sha, size=len(data), source="http://m/boot.iso",
                   final_url="http://m/boot.iso", fetched_at=1.0, member="EFI/BOOT/x")


def universe(store: BootStore, grub: bytes) -> dict[str, Version]:
    g = ingest(store, f"{U}/grubx64.efi", grub)
    return {f"{U}/grubx64.efi": g,
            f"{U}/boot.efi": replace(g, member=None, alias=f"{U}/grubx64.efi")}


def test_an_alias_is_a_relative_link_to_its_member(store: BootStore) -> None:
    store.transactions.publish_generation(f"{U}/boot.iso", universe(store, b"grub 1"), 1.0)
    link = store.root / U / "boot.efi"
    assert os.readlink(link) == "grubx64.efi"
    assert link.read_bytes() == b"grub 1"
    srec = store.records.set_record(f"{U}/boot.iso")
    assert srec is not None
    gen = srec.generation(1)
    assert gen is not None
    assert gen.members[f"{U}/boot.efi"] == gen.members[f"{U}/grubx64.efi"]
    # A second generation switches the target; the alias needs nothing but stays right.
    store.transactions.publish_generation(f"{U}/boot.iso", universe(store, b"grub 2"), 2.0)
    assert link.read_bytes() == b"grub 2"


def test_a_crash_between_candidate_and_links_is_finished_by_recovery(store: BootStore) -> None:
    versions = universe(store, b"grub")
    # What publish_generation records first; the process dies before any link is made.
    store.records.write_set_record(SetRecord(name=f"{U}/boot.iso", state="switching",
                                             candidate=versions))
    assert not (store.root / U / "boot.efi").exists()
    report = store.recover()
    assert sorted(report.completed) == sorted(versions)
    assert os.readlink(store.root / U / "boot.efi") == "grubx64.efi"
    assert (store.root / U / "boot.efi").read_bytes() == b"grub"
    rec = store.records.record(f"{U}/boot.efi")
    assert rec is not None and rec.current is not None and rec.current.alias == f"{U}/grubx64.efi"


def test_a_removed_alias_link_is_relinked_by_recovery(store: BootStore) -> None:
    store.transactions.publish_generation(f"{U}/boot.iso", universe(store, b"grub"), 1.0)
    os.unlink(store.root / U / "boot.efi")
    report = store.recover()
    assert report.relinked == [f"{U}/boot.efi"]
    assert os.readlink(store.root / U / "boot.efi") == "grubx64.efi"
    # Nothing to do the next time: an alias is not taken for a wrong link.
    assert store.recover().relinked == []


def test_a_hidden_alias_comes_back_after_a_failed_refresh(store: BootStore) -> None:
    store.transactions.publish_generation(f"{U}/boot.iso", universe(store, b"grub"), 1.0)
    for name in (f"{U}/grubx64.efi", f"{U}/boot.efi"):
        store.transactions.begin_refresh(name, True)
    assert not os.path.lexists(store.root / U / "boot.efi")
    for name in (f"{U}/grubx64.efi", f"{U}/boot.efi"):
        store.transactions.abort_refresh(name)
    assert os.readlink(store.root / U / "boot.efi") == "grubx64.efi"
    assert (store.root / U / "boot.efi").read_bytes() == b"grub"


@pytest.mark.parametrize("target", [f"{U}/elsewhere.efi", f"{U}/boot.efi"])
def test_an_alias_must_point_at_a_member_of_its_generation(store: BootStore,
                                                          target: str) -> None:
    versions = universe(store, b"grub")
    versions[f"{U}/boot.efi"] = replace(versions[f"{U}/boot.efi"], alias=target)
    with pytest.raises(ValueError, match="not a member of the same generation"):
        store.transactions.publish_generation(f"{U}/boot.iso", versions, 1.0)
    assert store.records.set_record(f"{U}/boot.iso") is None
    assert not os.path.lexists(store.root / U / "boot.efi")
