"""Names the file system cannot hold, or no TFTP client can ask for (classes 1 and 11).

Each is refused up front with a 400 naming the limit; nothing is recorded, the set stays
fetchable, and a record left by an older tftproxy that cannot be repaired is quarantined at
start-up while everything else is served.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
import urllib.request
from pathlib import Path

import pytest

from tests.helpers.upstream import Reply, Seen, Upstream, static
from tests.tftp.clients import publish
from tftproxy.store import BootStore, SetRecord, Version

KERNEL = b"kernel " * 10_000


def _sets(root: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in (root / ".tftproxy/private/sets").glob("*.json")]


@pytest.mark.parametrize(
    ("prefix", "path", "message"),
    [
        ("boot/" + "x" * 300 + "/", "/vmlinuz", "NAME_MAX 255"),
        ("boot/x", "/" + "v" * 260, "NAME_MAX 255"),
        ("/".join(["d"] * 40), "/vmlinuz", "at most 32 are allowed"),
        ("/".join(["y" * 240] * 18), "/vmlinuz", "PATH_MAX 4096"),
    ],
    ids=["long-component", "long-basename", "deep", "long-path"],
)
async def test_a_name_the_file_system_cannot_hold_is_400(api, upstream: Upstream, root: Path,
                                                         prefix: str, path: str,
                                                         message: str) -> None:
    upstream.routes[path] = static(KERNEL, etag='"k"')
    upstream.routes["/vmlinuz"] = static(KERNEL, etag='"k"')
    proxy = await api()
    status, ctype, body = await proxy.fetch_boot_file(prefix, upstream.url(path))
    assert status == 400, body
    assert ctype.startswith("text/plain") and message in body
    assert upstream.requests_for(path) == []  # refused before anything was fetched
    assert _sets(root) == []
    # The service goes on: a good name publishes, the same prefix is still refused cleanly.
    status, _, result = await proxy.fetch_boot_file("boot/ok", upstream.url("/vmlinuz"))
    assert (status, result["status"]) == (200, "published")
    assert (await proxy.fetch_boot_file(prefix, upstream.url(path)))[0] == 400


@pytest.mark.parametrize(
    ("prefix", "message"),
    [
        (".tftproxy/objects/ab/", "tftproxy's content store .tftproxy/objects/"),
        (".tftproxy/private/meta/", "tftproxy's private directory .tftproxy/private/"),
        ("boot\\centos", "contains a backslash, which TFTP clients and servers read as '/'"),
        ("boot/a\\b/", "contains a backslash"),
    ],
)
async def test_prefixes_into_our_state_or_with_backslashes_are_named(
        api, upstream: Upstream, root: Path, prefix: str, message: str) -> None:
    upstream.routes["/vmlinuz"] = static(KERNEL)
    proxy = await api()
    status, _, body = await proxy.fetch_boot_file(prefix, upstream.url("/vmlinuz"))
    assert status == 400 and message in body, body
    assert not list(root.glob("boot*"))


async def test_a_directory_made_in_the_way_during_a_fetch_switches_nothing(
        api, upstream: Upstream, root: Path) -> None:
    gate, arrived = threading.Event(), threading.Event()

    def paused(seen: Seen) -> Reply:
        arrived.set()
        return Reply(body=KERNEL, pause_at=1000, pause=gate)

    upstream.routes["/vmlinuz"] = paused
    proxy = await api()
    task = asyncio.ensure_future(proxy.fetch_boot_file("boot/gate", upstream.url("/vmlinuz")))
    assert await asyncio.to_thread(arrived.wait, 10)
    (root / "boot/gate-vmlinuz").mkdir(parents=True)  # a directory where the link must go
    gate.set()
    status, _, body = await task
    assert status == 502, body
    assert "boot/gate-vmlinuz" in body and "is an existing directory" in body
    assert [s["state"] for s in _sets(root)] in ([], ["published"])
    assert list((root / ".tftproxy/private/staging").iterdir()) == []
    (root / "boot/gate-vmlinuz").rmdir()
    upstream.routes["/vmlinuz"] = static(KERNEL)
    status, _, result = await proxy.fetch_boot_file("boot/gate", upstream.url("/vmlinuz"))
    assert (status, result["status"]) == (200, "published")
    assert (root / "boot/gate-vmlinuz").read_bytes() == KERNEL


def test_serve_starts_over_records_it_cannot_repair(serve, root: Path) -> None:
    store = BootStore(root)
    publish(store, "boot/good-vmlinuz", KERNEL)
    sha = hashlib.sha256(KERNEL).hexdigest()
    version = Version(sha256=sha, size=len(KERNEL), source="http://m/vmlinuz",
                      final_url="http://m/vmlinuz")
    # What an older tftproxy left: a switch recorded for a name no file system can hold...
    store.records.write_set_record(SetRecord(
        name="boot/bad", state="switching", candidate={"boot/" + "z" * 300: version}))
    # ...and a record damaged on disk.
    (root / ".tftproxy/private/meta" / ("0" * 40 + ".json")).write_text('{"name": "x", "curr')
    served = serve(root)
    assert served.proc.poll() is None, served.log_text()
    with urllib.request.urlopen(f"{served.url}/httpboot/boot/good-vmlinuz", timeout=10) as r:
        assert r.read() == KERNEL
    quarantined = sorted(p.name for p in (root / ".tftproxy/private/quarantine").iterdir())
    assert len(quarantined) == 2, quarantined
    assert quarantined[0].startswith("meta-") and quarantined[1].startswith("sets-")
    log = served.log_text()
    assert log.count("quarantined the record of") == 2, log
    assert "fetch the boot set again to republish it" in log
