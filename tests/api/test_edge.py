"""Odd input at the edge: each gets a 4xx saying what was wrong, never a 500."""

from __future__ import annotations

import aiohttp
import pytest
from aiohttp import web

from tests.api.conftest import ServedProxy, curl
from tftproxy.api.responses import plain_text_errors

MAC = "aa:bb:cc:dd:ee:ff"
CREATE = "TFTP: Failed to create pxe config file: "


async def test_oversized_body_is_413(proxy) -> None:
    p: ServedProxy = await proxy()
    r = await p.call("POST", f"/tftp/pxelinux/{MAC}", data={"pxeconfig": "x" * (2 << 20)})
    assert r.status == 413
    assert r.text.strip() == CREATE + "request body larger than 1048576 bytes"
    assert not (p.root / "pxelinux.cfg").exists()


@pytest.mark.parametrize(("args", "status", "reason"), [
    (["--data-binary", "pxeconfig=%C3%28"], 400,
     "parameter pxeconfig in the request body is not valid utf-8"),
    (["--data-binary", "@RAW"], 400, "request body is not valid utf-8"),
    (["-H", "Content-Type: text/xml", "--data", "<a/>"], 415,
     "unsupported Content-Type text/xml: send application/x-www-form-urlencoded"),
    (["-H", "Content-Type: application/x-www-form-urlencoded; charset=klingon", "--data",
      "pxeconfig=x"], 415, "unknown charset klingon"),
    (["-H", "Content-Type: application/json", "--data", "[1]"], 400,
     "a JSON request body must be an object"),
    (["-H", "Content-Type: application/json", "--data", "{"], 400,
     "request body is not valid JSON: "),
    (["-H", "Content-Type: application/json", "--data", '{"pxeconfig": {"a": 1}}'], 400,
     "parameter pxeconfig must be a string"),
    (["-F", "pxeconfig=@/etc/hostname"], 400,
     "parameter pxeconfig must be a text field, not a file"),
    (["-H", "Content-Type: multipart/form-data; boundary=zz", "--data-binary",
      "--zz\r\nContent-Disposition: form-data; name=\"a\x01\"\r\n\r\nx\r\n--zz--\r\n"], 400,
     "unreadable multipart body: "),
])
async def test_bad_bodies(proxy, tmp_path, args: list[str], status: int, reason: str) -> None:
    p: ServedProxy = await proxy()
    raw = tmp_path / "raw"
    raw.write_bytes(b"pxeconfig=\xff")  # a byte that no UTF-8 text has
    args = [f"@{raw}" if a == "@RAW" else a for a in args]
    r = await curl(p.url + f"/tftp/pxelinux/{MAC}", "-X", "POST", *args)
    assert r.status == status, r.body
    assert r.body.startswith(CREATE + reason), r.body
    assert not (p.root / "pxelinux.cfg").exists()


async def test_other_bodies_are_accepted(proxy, tmp_path) -> None:
    p: ServedProxy = await proxy()
    target = p.root / "pxelinux.cfg/01-aa-bb-cc-dd-ee-ff"
    r = await curl(p.url + f"/tftp/pxelinux/{MAC}", "-F", "pxeconfig=multi part")
    assert r.status == 200
    assert target.read_text() == "multi part"
    r = await curl(p.url + f"/tftp/pxelinux/{MAC}", "-H", "Content-Type: application/json",
                   "--data", '{"pxeconfig": "json \\u00e9"}')
    assert r.status == 200
    assert target.read_text() == "json é"
    latin1 = tmp_path / "latin1"
    latin1.write_bytes(b"pxeconfig=caf\xe9+%E9t%E9")
    r = await curl(p.url + f"/tftp/pxelinux/{MAC}", "-H",
                   "Content-Type: application/x-www-form-urlencoded; charset=iso-8859-1",
                   "--data-binary", f"@{latin1}")
    assert r.status == 200
    assert target.read_text() == "café été"


async def test_bad_query_encoding(proxy) -> None:
    p: ServedProxy = await proxy()
    r = await curl(p.url + f"/tftp/pxelinux/{MAC}?pxeconfig=%FF", "-X", "POST")
    assert r.status == 400
    assert r.body.strip() == CREATE + "parameter pxeconfig in the query string is not valid utf-8"


@pytest.mark.parametrize(("raw", "shown"), [
    ("%0d%0aX-Injected:%20yes", "\\r\\nX-Injected: yes"),
    ("%FF%FE", "%FF%FE"),  # not UTF-8: aiohttp leaves it encoded
    ("a" * 300, "a" * 80 + "..."),
    ("..%2F..%2Fetc", "../../etc"),
])
async def test_odd_macs_are_echoed_safely(proxy, raw: str, shown: str) -> None:
    p: ServedProxy = await proxy()
    r = await curl(p.url + f"/tftp/pxelinux/{raw}", "--data", "pxeconfig=x")
    assert r.status == 403
    assert r.body.strip() == f"Invalid MAC address: {shown}"


@pytest.mark.parametrize(("method", "path", "allow"), [
    ("POST", "/tftp/serverName", "GET,HEAD"),
    ("DELETE", "/tftp/create_default", "POST"),
    ("GET", f"/tftp/{MAC}", "DELETE,POST"),
    ("GET", "/tftp/pxelinux/create_default", "POST"),
    ("PUT", f"/tftp/pxelinux/{MAC}", "DELETE,GET,HEAD,POST"),
    ("POST", "/tftp/fetch_boot_file/abc", "GET,HEAD"),
    ("GET", "/tftp/fetch_boot_file", "POST"),
])
async def test_wrong_method_is_405_with_allow(proxy, method: str, path: str, allow: str) -> None:
    p: ServedProxy = await proxy()
    async with p.session.request(method, p.url + path) as resp:
        assert resp.status == 405
        assert resp.headers["Allow"] == allow
        assert resp.content_type == "text/plain"
        assert (await resp.text()).startswith("Method Not Allowed: ")


async def test_head_of_a_config_has_no_body(proxy) -> None:
    p: ServedProxy = await proxy()
    await p.call("POST", f"/tftp/pxelinux/{MAC}", data={"pxeconfig": "12345"})
    async with p.session.head(p.url + f"/tftp/pxelinux/{MAC}") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Length"] == "5"
        assert await resp.read() == b""


async def test_an_unexpected_exception_is_a_plain_500() -> None:
    """The net under the handlers, on a real server: a bug answers a sentence, not a trace."""
    async def broken(request: web.Request) -> web.Response:
        raise RuntimeError("secret internals")

    app = web.Application(middlewares=[plain_text_errors])
    app.router.add_get("/boom", broken)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{port}/boom") as r:
            text = await r.text()
            assert r.status == 500
            assert r.content_type == "text/plain"
            assert text.strip() == ("Internal error: GET /boom failed unexpectedly; the proxy's "
                                    "log has the details")
            assert "secret" not in text
    finally:
        await runner.cleanup()
