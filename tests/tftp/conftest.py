"""Our TFTP server on a loopback port, over the published tree of tests/conftest.py."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.tftp.clients import running_server
from tftproxy.store import BootStore
from tftproxy.tftp.protocol import Policy
from tftproxy.tftp.server import ServerConfig, TftpServer


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
