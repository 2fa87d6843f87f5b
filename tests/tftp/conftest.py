"""A published tree and our TFTP server on a loopback port."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.tftp.clients import publish, running_server
from tftproxy.store import BootStore
from tftproxy.tftp.protocol import Policy
from tftproxy.tftp.server import ServerConfig, TftpServer


@pytest.fixture
def store(tmp_path: Path) -> BootStore:
    return BootStore(tmp_path / "tftpboot")


@pytest.fixture
def tree(store: BootStore, tmp_path: Path) -> dict[str, bytes]:
    """Published names (store links), plain files, and the traps the path rules must refuse."""
    files = {
        "pxelinux.0": os.urandom(26_828),
        "boot/grub/grubx64.efi": os.urandom(1_468 * 700),  # a whole number of 1468-byte blocks
        "images/vmlinuz": os.urandom(3_000_001),
        "empty.cfg": b"",
        "pxelinux.cfg/default": b"DEFAULT linux\nLABEL linux\n  KERNEL vmlinuz\n",
    }
    for name, data in files.items():
        publish(store, name, data)
    root = store.root
    # A file the store did not publish is served as well: the tree is the tree.
    (root / "plain.txt").write_bytes(b"plain\r\nfile\n")
    files["plain.txt"] = b"plain\r\nfile\n"
    os.symlink("images/vmlinuz", root / "kernel-link")  # inside the root: followed
    files["kernel-link"] = files["images/vmlinuz"]
    secret = tmp_path / "secret"
    secret.write_bytes(b"outside the root")
    os.symlink(secret, root / "escape")  # outside the root: refused
    os.symlink("../../secret", root / "boot" / "escape2")
    return files


@pytest.fixture
def config() -> ServerConfig:
    return ServerConfig(policy=Policy(max_blksize=65464, timeout=1.0, retries=3),
                        refresh_hold=10.0)


@pytest.fixture
def server(store: BootStore, tree: dict[str, bytes], config: ServerConfig) -> Iterator[TftpServer]:
    with running_server(store, config) as srv:
        yield srv


@pytest.fixture
def port(server: TftpServer) -> int:
    return server.addresses[0][1]
