"""The tftproxy HTTP API on a real loopback socket, inside the test's event loop."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web

from tftproxy import assemble
from tftproxy.api.app import GUARD, create_app
from tftproxy.api.connections import GuardedSite
from tftproxy.jobs.bootfiles import BootFiles
from tftproxy.settings.model import Settings


@dataclass
class RunningApi:
    base: str
    files: BootFiles
    settings: Settings
    runner: web.AppRunner
    session: aiohttp.ClientSession

    async def fetch_boot_file(self, prefix: str, path: str, *, query: bool = False,
                              ) -> tuple[int, str, Any]:
        """POST as Foreman does (form body, Accept: json); returns (status, content type, body)."""
        url = f"{self.base}/tftp/fetch_boot_file"
        headers = {"Accept": "json"}
        if query:
            req = self.session.post(url, params={"prefix": prefix, "path": path},
                                    headers=headers)
        else:
            req = self.session.post(url, data={"prefix": prefix, "path": path}, headers=headers)
        async with req as resp:
            text = await resp.text()
            ctype = resp.headers.get("Content-Type", "")
            body: Any = text
            if ctype.startswith("application/json"):
                body = await resp.json()
            return resp.status, ctype, body

    async def close(self) -> None:
        await self.session.close()
        await self.runner.cleanup()
        await self.files.close()


async def start_api(settings: Settings) -> RunningApi:
    files = assemble.boot_files(settings)
    await files.recover()
    app = create_app(settings, files, files.store)
    runner = web.AppRunner(app, keepalive_timeout=settings.http_keepalive_timeout)
    await runner.setup()
    # The listener the service uses: connections go through its guard.
    site = GuardedSite(runner, app[GUARD], "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120))
    return RunningApi(f"http://127.0.0.1:{port}", files, settings, runner, session)


def foreman_success(status: int, body: str) -> bool:
    """Foreman's rule: 2xx and an empty or JSON body is success; anything else fails."""
    import json

    if not 200 <= status < 300:
        return False
    if not body.strip():
        return True
    try:
        json.loads(body)
    except ValueError:
        return False
    return True
