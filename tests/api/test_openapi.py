"""The OpenAPI document: it names every route, and schemathesis finds no 5xx or violation."""

from __future__ import annotations

import asyncio
import json
import re
import sys
from pathlib import Path

from tests.api.conftest import ServedProxy
from tftproxy.api.openapi import PATH


def _matches(template: str, path: str) -> bool:
    return re.fullmatch(re.sub(r"\{[^}]+\}", "[^/]+", template), path) is not None


async def test_every_route_is_documented(proxy) -> None:
    p: ServedProxy = await proxy()
    r = await p.call("GET", PATH)
    assert r.status == 200
    doc = json.loads(r.text)
    assert doc["openapi"].startswith("3.0")
    documented = {(m.upper(), path) for path, ops in doc["paths"].items() for m in ops}
    for route in p.runner.app.router.routes():
        info = route.resource.get_info() if route.resource else {}
        canonical = info.get("path") or info.get("formatter") or ""
        method = route.method
        if method == "HEAD" and ("GET", canonical) in documented:
            continue  # aiohttp adds HEAD to every GET
        # A path shape served by one dispatching handler ("*") is covered by the documented
        # paths of that shape; a plain route must be documented exactly.
        candidates = [t for m, t in documented if method in ("*", m)
                      and (t == canonical or _matches(canonical, t) or _matches(t, canonical))]
        assert candidates, f"{method} {canonical} is not in the OpenAPI document"
    for _, ops in doc["paths"].items():
        for op in ops.values():
            assert op["operationId"]
            assert "200" in op["responses"]


async def test_schemathesis_finds_no_server_error_or_schema_violation(proxy,
                                                                      tmp_path: Path) -> None:
    """Every check schemathesis has, on every operation but two, over real HTTP.

    ``POST /tftp/fetch_boot_file`` and ``/tftp/fetch_and_process`` are left out: their
    generated URLs would make the proxy fetch from arbitrary hosts, and no test may send
    traffic beyond loopback. Their own tests cover them.
    """
    p: ServedProxy = await proxy(tftp_servername="tftp.example.test")
    st = Path(sys.executable).with_name("st")
    proc = await asyncio.create_subprocess_exec(
        str(st), "run", p.url + PATH, "--checks", "all",
        "--exclude-operation-id", "fetchBootFile",
        "--exclude-operation-id", "fetchAndProcess",
        "--max-examples", "25", "--seed", "20240611", "--workers", "2",
        "--generation-database", "none", "--request-timeout", "10", "--no-color",
        cwd=tmp_path, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 240)
    report = out.decode("utf-8", "replace")
    assert proc.returncode == 0, report
    tested = re.search(r"Tested: (\d+)", report)
    assert tested is not None and int(tested.group(1)) >= 13, report
    assert re.search(r"(\d+) generated, \1 passed", report), report
