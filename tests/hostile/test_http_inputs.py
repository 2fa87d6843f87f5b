"""Inputs that used to answer 500, and API reads that did not obey the serving rules
(classes 8 and 9): every one is a 4xx naming what is wrong, over real sockets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.hostile.rawhttp import aexchange, request, statuses
from tests.tftp.clients import RawClient, publish, running_server
from tftproxy.store import BootStore
from tftproxy.tftp.packets import Error

MAC = "aa:bb:cc:dd:ee:ff"


def _port(proxy) -> int:
    return int(proxy.base.rsplit(":", 1)[1])


@pytest.mark.parametrize("path", ["pxelinux.0/x", "z" * 300, "a/" + "z" * 300 + "/b",
                                  "pxelinux.0/" + "z" * 5000])
async def test_paths_the_os_rejects_are_404_over_http_and_file_not_found_over_tftp(
        api, root: Path, path: str) -> None:
    proxy = await api()
    publish(BootStore(root), "pxelinux.0", b"pxe" * 100)
    for method in ("GET", "HEAD"):
        async with proxy.session.request(method, f"{proxy.base}/httpboot/{path}") as resp:
            assert resp.status == 404, (method, await resp.text())
            if method == "GET":
                assert await resp.text() == "Not found"
    store = BootStore(root)
    with running_server(store) as server, RawClient(server.addresses[0]) as c:
        c.rrq(path[:400])
        assert c.recv(timeout=2)[0] == Error(1, "file not found")


@pytest.mark.parametrize(
    ("ctype", "body", "message"),
    [
        ("application/json", b"[" * 100_000, "more than 32 levels deep"),
        ("application/json", b'{"a": ' * 5000 + b"1" + b"}" * 5000, "more than 32 levels"),
        ("application/json", b'{"pxeconfig": "\\ud800x"}', "lone surrogate (\\ud800)"),
        ("application/json", b'{"\\udfff": "x", "pxeconfig": "y"}', "a parameter name contains"),
        ("application/json", b'{"pxeconfig": 1' + b"0" * 5000 + b"}", "not valid JSON"),
    ],
    ids=["deep-array", "deep-object", "surrogate-value", "surrogate-key", "huge-number"],
)
@pytest.mark.parametrize("route", [f"/tftp/pxelinux/{MAC}", "/tftp/fetch_boot_file",
                                   "/tftp/pxegrub2/create_default"])
async def test_json_bodies_that_are_not_parameters_are_400(api, route: str, ctype: str,
                                                           body: bytes, message: str) -> None:
    proxy = await api()
    reply = await aexchange(_port(proxy), request("POST", route, body, {"Content-Type": ctype}))
    if route == "/tftp/fetch_boot_file" and "surrogate" not in message and "name" not in message:
        # fetch_boot_file reads a JSON body as smart-proxy's parse_json_body does (issue 14):
        # JSON it cannot read is its 415, with the reason.
        assert statuses(reply) == [415], reply[:300]
        assert b"Invalid JSON content in body of request: " in reply, reply[-300:]
    else:
        assert statuses(reply) == [400], reply[:300]
    assert message.encode() in reply, reply[-300:]


@pytest.mark.parametrize(("query", "message"), [
    ("prefix=\udcff&path=x", b"in url query"),  # a raw byte: aiohttp's own 400
    ("prefix=%FF&path=x", b"parameter prefix in the query string is not valid utf-8"),
])
async def test_a_query_string_that_is_not_utf8_is_400(api, query: str, message: bytes) -> None:
    proxy = await api()
    reply = await aexchange(_port(proxy), request("POST", f"/tftp/fetch_boot_file?{query}"))
    assert statuses(reply) == [400], reply
    assert message in reply, reply


async def test_api_reads_obey_the_serving_rules(api, root: Path) -> None:
    proxy = await api()
    store = BootStore(root)
    publish(store, "boot/a-vmlinuz", b"kernel")
    [record] = (root / ".tftproxy/private/meta").glob("*.json")
    (root / "pxelinux.cfg").mkdir()
    os.symlink(os.path.relpath(record, root / "pxelinux.cfg"),
               root / "pxelinux.cfg/01-aa-bb-cc-dd-ee-ff")
    async with proxy.session.get(f"{proxy.base}/tftp/syslinux/{MAC}") as resp:
        text = await resp.text()
    assert resp.status == 400 and "private state" in text, text
    assert "sha256" not in text and "boot/a-vmlinuz" not in text
    # TFTP says the same about the same name.
    with running_server(store) as server, RawClient(server.addresses[0]) as c:
        c.rrq("pxelinux.cfg/01-aa-bb-cc-dd-ee-ff")
        assert c.recv(timeout=2)[0] == Error(2, "access violation")


async def test_api_writes_never_land_in_our_state(api, root: Path) -> None:
    proxy = await api()
    os.symlink(".tftproxy/private/meta", root / "pxelinux.cfg")
    before = sorted(os.listdir(root / ".tftproxy/private/meta"))
    async with proxy.session.post(f"{proxy.base}/tftp/syslinux/{MAC}",
                                  data={"pxeconfig": "evil"}) as resp:
        text = await resp.text()
    assert resp.status == 400 and "tftproxy's state directory" in text, text
    async with proxy.session.delete(f"{proxy.base}/tftp/syslinux/{MAC}") as resp:
        assert resp.status == 400
    assert sorted(os.listdir(root / ".tftproxy/private/meta")) == before


@pytest.mark.parametrize("url", ["http://127.0.0.1:8000[", "http://[::1", "http://[zz]/vmlinuz"])
async def test_a_url_that_does_not_parse_is_400(api, url: str) -> None:
    """Found by the fetch fuzzer: urlsplit's ValueError was a 500."""
    proxy = await api()
    status, _, body = await proxy.fetch_boot_file("boot/x", url)
    assert status == 400 and "is not a valid URL" in body, body
