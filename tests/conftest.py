"""Shared fixtures: real upstream servers (nginx, a scriptable one) and the API."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.api.certs import Pki, make_pki
from tests.helpers.api import RunningApi, start_api
from tests.helpers.ftp import Vsftpd
from tests.helpers.nginx import Nginx
from tests.helpers.pki import make_server_pki
from tests.helpers.upstream import Upstream
from tests.tftp.clients import publish
from tftproxy.settings.model import Settings
from tftproxy.store import BootStore


@pytest.fixture
def nginx(tmp_path: Path) -> Iterator[Nginx]:
    server = Nginx(tmp_path / "nginx")
    yield server
    server.stop()


@pytest.fixture
def tls_nginx(tmp_path: Path) -> Iterator[tuple[Nginx, Path]]:
    """nginx over HTTPS with a certificate from a CA made here; yields (server, CA file)."""
    ca, cert, key = make_server_pki(tmp_path / "pki")
    server = Nginx(tmp_path / "nginx-tls", tls=(cert, key))
    yield server, ca
    server.stop()


@pytest.fixture
def ftp(tmp_path: Path) -> Iterator[Vsftpd]:
    """vsftpd serving anonymous FTP on a loopback port."""
    server = Vsftpd(tmp_path / "ftp")
    yield server
    server.stop()


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    server = Upstream()
    yield server
    server.close()


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "tftpboot"
    path.mkdir()
    return path


@pytest.fixture
def make_settings(root: Path) -> Callable[..., Settings]:
    """Settings for tests: short timeouts and quick retries, so faults resolve in seconds."""

    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "tftproot": root, "stall_timeout": 2.0, "tftp_connect_timeout": 2.0,
            "retries": 0, "retry_backoff": 0.05, "fetch_wait": 20.0, "min_free_space": 0,
            # Each request's own upstream check is what most tests look at; the window that
            # lets a just-finished check answer later requests has tests of its own.
            "fresh_for": 0.0,
        }
        values.update(overrides)
        return Settings(**values)

    return make


@pytest.fixture
async def api(make_settings: Callable[..., Settings]) -> AsyncIterator[Callable[..., Any]]:
    """A factory: ``await api(**settings)`` starts the API; all are stopped at the end."""
    started: list[RunningApi] = []

    async def start(**overrides: Any) -> RunningApi:
        running = await start_api(make_settings(**overrides))
        started.append(running)
        return running

    yield start
    for running in started:
        await running.close()


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


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
