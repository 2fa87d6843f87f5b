"""The API served for real on loopback (HTTP and HTTPS), and curl as a TLS client."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tftproxy import assemble
from tftproxy.api.app import GUARD, bound, create_app
from tftproxy.api.connections import GuardedSite
from tftproxy.api.listeners import api_listeners
from tftproxy.jobs.bootfiles import BootFiles
from tftproxy.settings.model import Settings


@dataclass
class Reply:
    status: int
    content_type: str
    text: str


@dataclass
class ServedProxy:
    settings: Settings
    runner: web.AppRunner
    files: BootFiles
    session: aiohttp.ClientSession
    urls: dict[str, str] = field(default_factory=dict)  # scheme -> base URL

    @property
    def root(self) -> Path:
        return self.settings.tftproot

    @property
    def url(self) -> str:
        return self.urls["http"]

    async def call(self, method: str, path: str, **kwargs: Any) -> Reply:
        async with self.session.request(method, self.url + path, **kwargs) as resp:
            body = await resp.read()
            return Reply(resp.status, resp.headers.get("Content-Type", ""),
                         body.decode("utf-8", "replace"))

    async def foreman(self, method: str, path: str, data: dict[str, str] | None = None) -> Reply:
        """A request as Foreman's ProxyAPI sends it: form body, Accept: json, request ids."""
        headers = {"Accept": "application/json", "X-Request-Id": str(uuid.uuid4()),
                   "X-Session-Id": str(uuid.uuid4())}
        return await self.call(method, path, data=data, headers=headers)

    async def close(self) -> None:
        await self.session.close()
        await self.runner.cleanup()
        await self.files.close()


@pytest.fixture
async def proxy(make_settings: Callable[..., Settings]) -> AsyncIterator[Callable[..., Any]]:
    """``await proxy(**settings)`` serves the API on every configured listener (port 0)."""
    started: list[ServedProxy] = []

    async def start(**overrides: Any) -> ServedProxy:
        values = {"listen": "127.0.0.1:0", "https_listen": "127.0.0.1:0", **overrides}
        settings = make_settings(**values)
        listeners = api_listeners(settings)
        files = assemble.boot_files(settings)
        app = create_app(settings, files, files.store)
        runner = web.AppRunner(app)
        await runner.setup()
        served = ServedProxy(settings, runner, files,
                             aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)))
        started.append(served)
        for lst in listeners:
            # The service's listener: connections (TLS ones too) go through its guard.
            site = GuardedSite(runner, app[GUARD], lst.host, lst.port,
                               ssl_context=lst.ssl_context)
            await site.start()
            port = runner.addresses[-1][1]
            bound(runner.app, lst.scheme, port)
            served.urls[lst.scheme] = f"{lst.scheme}://127.0.0.1:{port}"
        return served

    yield start
    for served in started:
        await served.close()


@dataclass
class CurlResult:
    returncode: int
    status: int
    body: str
    stderr: str


async def curl(url: str, *args: str) -> CurlResult:
    """Run the curl CLI (asynchronously: the server under test lives in this event loop)."""
    proc = await asyncio.create_subprocess_exec(
        "curl", "-sS", "--max-time", "10", "-o", "-", "-w", "\n%{http_code}", *args, url,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    text = out.decode("utf-8", "replace")
    body, _, code = text.rpartition("\n")
    return CurlResult(proc.returncode or 0, int(code or 0), body, err.decode("utf-8", "replace"))
