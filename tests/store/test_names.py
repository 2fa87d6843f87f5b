"""Destination names: smart-proxy's derivation, confined to the root."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tftproxy.errors import NameRefused, Refused
from tftproxy.store import BootStore


@pytest.fixture
def store(root: Path) -> BootStore:
    return BootStore(root)


@pytest.mark.parametrize(
    ("prefix", "url", "expected"),
    [
        ("boot/centos-mirror-AbC123", "http://m/os/images/pxeboot/vmlinuz",
         "boot/centos-mirror-AbC123-vmlinuz"),
        ("boot/windows-x64-9/", "http://m/boot.wim", "boot/windows-x64-9/boot.wim"),
        ("boot/x", "https://m/a/initrd.img?token=1", "boot/x-initrd.img"),
        ("./boot//x", "http://m/vmlinuz", "boot/x-vmlinuz"),
    ],
)
def test_names_follow_smart_proxy(store: BootStore, prefix: str, url: str, expected: str) -> None:
    assert store.names.destination(prefix, url) == expected


def test_absolute_prefix_inside_root_is_accepted(store: BootStore, root: Path) -> None:
    assert store.names.destination(f"{root}/boot/a", "http://m/vmlinuz") == "boot/a-vmlinuz"


@pytest.mark.parametrize(
    ("prefix", "url", "message"),
    [
        ("../etc/x", "http://m/vmlinuz", "'..'"),
        ("boot/../../x", "http://m/vmlinuz", "'..'"),
        ("boot/a\x00b", "http://m/vmlinuz", "NUL"),
        ("/etc/x", "http://m/vmlinuz", "outside the TFTP root"),
        ("boot/x", "http://m/images/", "does not end in a file name"),
        ("boot/x", "http://m/..", "not a file name"),
        (".tftproxy/private/x", "http://m/vmlinuz", "private"),
        ("", "http://m/vmlinuz", "empty"),
    ],
)
def test_bad_destinations_are_refused_with_a_reason(
    store: BootStore, prefix: str, url: str, message: str
) -> None:
    with pytest.raises(NameRefused, match=message.replace("(", r"\(")):
        store.names.destination(prefix, url)


def test_directory_symlink_leading_out_is_refused(store: BootStore, root: Path,
                                                  tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, root / "evil")
    with pytest.raises(NameRefused, match="symlink leading outside"):
        store.names.destination("evil/x", "http://m/vmlinuz")
    os.symlink("../outside/file", root / "evil-vmlinuz")
    with pytest.raises(NameRefused, match="symlink leading outside"):
        store.names.destination("evil", "http://m/vmlinuz")


def test_symlink_inside_root_is_followed(store: BootStore, root: Path) -> None:
    (root / "images").mkdir()
    os.symlink("images", root / "boot")
    assert store.names.destination("boot/x", "http://m/vmlinuz") == "boot/x-vmlinuz"


def test_served_names_are_confined(store: BootStore, root: Path, tmp_path: Path) -> None:
    (root / "pxelinux.cfg").mkdir()
    (root / "pxelinux.cfg" / "default").write_text("x")
    assert store.serving.resolve_served("/pxelinux.cfg/default") == root / "pxelinux.cfg/default"
    assert store.serving.resolve_served("pxelinux.cfg\\default") == root / "pxelinux.cfg/default"
    for bad in ("../etc/passwd", "a/../../etc/passwd", ".tftproxy/private/meta", "x\x00y"):
        with pytest.raises(Refused):
            store.serving.resolve_served(bad)
    (tmp_path / "secret").write_text("s")
    os.symlink(tmp_path / "secret", root / "leak")
    with pytest.raises(Refused):
        store.serving.open_served("leak")
    with pytest.raises(Refused):
        store.serving.open_served("pxelinux.cfg")
    with pytest.raises(FileNotFoundError):
        store.serving.open_served("missing")
