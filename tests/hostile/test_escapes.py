"""Escape probes over every surface that takes a path: TFTP, /httpboot, fetch prefixes and the
PXE routes. Nothing outside the root and nothing of tftproxy's private state is ever served,
written or removed, whatever the spelling."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from tests.hostile.figures import record
from tests.hostile.rawhttp import aexchange, request, statuses
from tests.tftp.clients import running_server
from tftproxy.store import BootStore
from tftproxy.tftp.packets import Data, Error, build_ack, build_request, parse_packet

OUTSIDE = b"outside the root"  # the tree fixture's secret, which its escape links point at

PROBES = [
    "../secret", "..\\secret", "/../secret", "a/../../secret", "boot/../../secret",
    "....//secret", "..%2fsecret", "%2e%2e/secret", "\u2024\u2024/secret",
    "../" * 40 + "etc/passwd",
    "/etc/passwd", "//etc/passwd", "\\etc\\passwd", "\\\\..\\..\\secret", "escape", "./escape",
    "boot/escape2", "boot//escape2", "boot/./escape2", "boot\\escape2", "kernel-link/../escape",
    "pxelinux.0/../escape", ".tftproxy/private", ".tftproxy/private/meta", ".tftproxy//private",
    "./.tftproxy/private/gc.lock", "boot/../.tftproxy/private", "\\.tftproxy\\private\\meta",
    ".tftproxy/objects/../private", "leak", "leakdir/x", "leakdir", "x\x00y", "pxelinux.0\x00",
    "/proc/self/environ", "../../../../proc/self/environ", "a" * 300, "boot/" + "..\\" * 30,
]

# Spellings that must still work: the rules refuse escapes, not unusual paths.
LEGIT = {"/pxelinux.0": "pxelinux.0", "boot/../pxelinux.0": "pxelinux.0",
         "\\boot\\grub\\grubx64.efi": "boot/grub/grubx64.efi", "kernel-link": "kernel-link",
         "pxelinux.cfg//default": "pxelinux.cfg/default"}


def _private_markers(root: Path) -> list[bytes]:
    """Bytes only tftproxy's private files hold: record fields."""
    return [b'"sha256"', b'"generations"', OUTSIDE]


def _plant(root: Path) -> None:
    record = next((root / ".tftproxy/private/meta").glob("*.json"))
    os.symlink(os.path.relpath(record, root), root / "leak")
    os.symlink(".tftproxy/private", root / "leakdir")


def _tftp_read(port: int, name: str) -> bytes | Error:
    """The whole file over TFTP (lock-step, by hand), or the ERROR the server answered."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(3)
        s.sendto(build_request(name), ("127.0.0.1", port))
        out = bytearray()
        while True:
            data, peer = s.recvfrom(70000)
            packet = parse_packet(data)
            if isinstance(packet, Error):
                return packet
            assert isinstance(packet, Data)
            out += packet.payload
            s.sendto(build_ack(packet.block), peer)
            if len(packet.payload) < 512:
                return bytes(out)


def test_tftp_probes_never_escape(root: Path, store: BootStore, tree: dict[str, bytes]) -> None:
    _plant(root)
    markers = _private_markers(root)
    escapes = refused = 0
    with running_server(store) as server:
        port = server.addresses[0][1]
        for name in PROBES:
            got = _tftp_read(port, name)
            if isinstance(got, Error):
                assert got.code in (1, 2, 4), (name, got)
                refused += 1
                continue
            if any(m in got for m in markers) or got not in tree.values():
                escapes += 1
        # The same server serves what the rules allow, however it is spelled.
        for name, real in LEGIT.items():
            assert _tftp_read(port, name) == tree[real], name
    assert escapes == 0
    record("escape probes over TFTP", probes=len(PROBES), refused=refused, escapes=escapes)


async def test_httpboot_probes_never_escape(api, store: BootStore, tree: dict[str, bytes],
                                            root: Path) -> None:
    proxy = await api()
    _plant(root)
    markers = _private_markers(root)
    port = int(proxy.base.rsplit(":", 1)[1])
    tried = escapes = server_errors = 0
    for name in PROBES:
        for path in (f"/httpboot/{name}", f"/httpboot/{name.replace('/', '%2F')}",
                     f"/httpboot//{name}"):
            raw = request("GET", path.replace("\x00", "%00").replace(" ", "%20"))
            reply = await aexchange(port, raw)
            tried += 1
            codes = statuses(reply)
            assert codes, (path, reply[:200])
            server_errors += codes[0] >= 500
            body = reply.partition(b"\r\n\r\n")[2]
            if codes[0] == 200 and (any(m in body for m in markers)
                                    or body not in tree.values()):
                escapes += 1
    for name, real in LEGIT.items():
        reply = await aexchange(port, request("GET", f"/httpboot/{name}"))
        assert statuses(reply) == [200] and reply.endswith(tree[real]), name
    assert (escapes, server_errors) == (0, 0)
    record("escape probes over /httpboot", requests=tried, escapes=escapes, server_errors=0)


def _snapshot(*dirs: Path) -> set[str]:
    out = set()
    for d in dirs:
        for dirpath, dirnames, files in os.walk(d):
            out.update(os.path.join(dirpath, f) for f in (*dirnames, *files))
    return out


async def test_prefix_and_pxe_probes_never_write_outside(api, upstream, store: BootStore,
                                                         tree: dict[str, bytes], root: Path,
                                                         tmp_path: Path) -> None:
    from tests.helpers.upstream import static

    upstream.routes["/vmlinuz"] = static(b"k" * 1000)
    proxy = await api()
    _plant(root)
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, root / "outlink")
    before = _snapshot(outside)
    prefixes = [p for p in PROBES if "\x00" not in p] + [
        str(outside) + "/x", f"{root}/../outside/x", "outlink/x", "outlink/", "leakdir/",
        "leakdir/meta/x", ".tftproxy/objects/aa/", "boot/../.tftproxy/private/", "~root/x"]
    tried = accepted = server_errors = 0
    for prefix in prefixes:
        status, _, body = await proxy.fetch_boot_file(prefix, upstream.url("/vmlinuz"))
        tried += 1
        server_errors += status >= 500 and status != 502
        if status == 200:
            accepted += 1
            assert body["name"].split("/")[0] not in (".tftproxy", "outlink", "leakdir"), body
            target = os.path.realpath(root / body["name"])
            assert target.startswith(str(root) + "/"), body
    macs = ["aa:bb:cc:dd:ee:ff", "../../etc", "..%2F..%2Fetc", "aa:bb:cc:dd:ee:ff/../../x",
            "aa-bb-cc-dd-ee-ff", "\u0430a:bb:cc:dd:ee:ff"]
    variants = ["syslinux", "pxegrub2", "../..", "ipxe%2F..%2F..", "PXEGRUB2"]
    host = {"targetos": "../../etc", "release": "..", "arch": "x86_64/../../.."}
    for mac in macs:
        for variant in variants:
            for form in ({"pxeconfig": "x"}, {"pxeconfig": "x", **host},
                         {"pxeconfig": "x", "targetos": "os", "arch": "x86_64",
                          "release": "leakdir"}):
                for method in ("POST", "GET", "DELETE"):
                    path = f"/tftp/{variant}/{mac}"
                    async with proxy.session.request(method, proxy.base + path,
                                                     data=form if method == "POST" else None
                                                     ) as resp:
                        tried += 1
                        server_errors += resp.status >= 500
                        text = await resp.text()
                        assert not any(m.decode() in text for m in _private_markers(root))
    # What a valid, accepted prefix published is the tree's; nothing landed outside it.
    assert _snapshot(outside) == before
    assert server_errors == 0
    record("escape probes over fetch prefixes and PXE routes", requests=tried,
           accepted_inside_the_root=accepted, written_outside=0, server_errors=0)
