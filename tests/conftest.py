"""Shared fixtures: real upstream servers (nginx, a scriptable one) and the API."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.api import RunningApi, start_api
from tests.helpers.nginx import Nginx
from tests.helpers.pki import make_server_pki
from tests.helpers.upstream import Upstream
from tftproxy.config import Settings


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
