"""What Foreman sees of tftproxy, through a client that applies Foreman's rules (Ruby,
rest-client), over HTTP and over HTTPS with Foreman's client certificate.

The expected files are smart-proxy's layout, written out here from the contract, never
computed by tftproxy's code.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

import tftproxy
from tests.foreman.conftest import ARCHIVE_CAPABILITIES, Served
from tests.helpers.upstream import Reply, Upstream
from tftproxy.assemble import smart_proxy_version
from tftproxy.settings.model import Settings

SCHEMES = pytest.mark.parametrize("scheme", ["http", "https"])
MAC = "52:54:00:ab:cd:ef"
M = "52-54-00-ab-cd-ef"
BARE = "525400ABCDEF"
HOST = f"host-config/{M}"

# smart-proxy's files for each kind Foreman sends, for Foreman 3.13's payload ({pxeconfig}).
FILES = {
    "PXELinux": [f"pxelinux.cfg/01-{M}"],
    "PXEGrub": [f"grub/menu.lst.01{BARE}", "grub/01-52-54-00-AB-CD-EF"],
    "PXEGrub2": [f"grub2/grub.cfg-01-{M}", f"grub2/grub.cfg-{MAC}", f"{HOST}/grub2/grub.cfg",
                 f"{HOST}/grub2/grub.cfg-01-{M}", f"{HOST}/grub2/grub.cfg-{MAC}"],
    "iPXE": [f"pxelinux.cfg/01-{M}.ipxe"],
    "ZTP": [f"ztp.cfg/{BARE}", f"ztp.cfg/{BARE}.cfg"],
    "POAP": [f"poap.cfg/{BARE}"],
}
# ...and the links Foreman 3.14's payload (targetos, release, arch, bootfile_suffix) adds.
LINKS = {
    "PXELinux": {f"{HOST}/pxe/01-{M}": f"../../../pxelinux.cfg/01-{M}"},
    "PXEGrub2": {f"{HOST}/grub2/boot.efi": "../../../grub2/grubx64.efi",
                 f"{HOST}/grub2/grubx64.efi": "../../../grub2/grubx64.efi",
                 f"{HOST}/grub2/boot-sb.efi": "../../../grub2/shimx64.efi",
                 f"{HOST}/grub2/shimx64.efi": "../../../grub2/shimx64.efi"},
    "iPXE": {f"{HOST}/ipxe/01-{M}": f"../../../pxelinux.cfg/01-{M}.ipxe"},
}
DEFAULTS = {"PXELinux": ["pxelinux.cfg/default"], "PXEGrub": ["grub/menu.lst", "grub/efidefault"],
            "PXEGrub2": ["grub2/grub.cfg"], "iPXE": ["pxelinux.cfg/default.ipxe"]}
FOREMAN_314 = {"targetos": "redhat", "release": "9.4", "arch": "x86_64",
               "bootfile_suffix": "x64"}


def tree(root: Path) -> dict[str, str]:
    """Every file (its content) and symlink (its target) under the root but tftproxy's state."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d != ".tftproxy"]
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root)
            found[rel] = (f"-> {os.readlink(path)}" if os.path.islink(path)
                          else Path(path).read_text())
    return found


@SCHEMES
def test_registration_and_version_as_foreman_sees_them(serve, scheme: str) -> None:
    p: Served = serve(scheme, tftp_servername="tftp.example.test")
    register, same, previous, newer, version, server = p.foreman(
        {"call": "register"}, {"call": "version_warning", "foreman": "3.13.0"},
        {"call": "version_warning", "foreman": "3.12.1"},
        {"call": "version_warning", "foreman": "3.14.0"}, {"call": "version"},
        {"call": "boot_server"})
    assert register["value"] == {
        "tftp": {"settings": {"tftp_servername": "tftp.example.test"},
                 "capabilities": ARCHIVE_CAPABILITIES},
        "httpboot": {"settings": {"http_port": p.ports["http"], "https_port": p.ports["https"]},
                     "capabilities": []},
        "logs": {"settings": {}, "capabilities": []},
    }
    assert same == {"value": None}, "no warning for a Foreman of the reported release"
    assert previous == {"value": None}, "a proxy one minor ahead is fine too"
    assert newer["value"] == ("Core and proxy versions do not match. foreman: 3.14.0, "
                              "foreman-proxy: 3.13.0")
    assert version["value"]["version"] == "3.13.0"
    assert version["value"]["tftproxy"] == tftproxy.__version__
    assert server == {"value": "tftp.example.test"}
    assert f"tftproxy {tftproxy.__version__} starting, reporting smart-proxy version 3.13.0" \
        in p.log.read_text()


def test_the_reported_version_follows_the_setting(serve) -> None:
    p: Served = serve("http", smart_proxy_version="3.15.1")
    results = p.foreman(*({"call": "version_warning", "foreman": v}
                          for v in ("3.15.0", "3.14.2", "3.16.0")))
    assert [r["value"] for r in results] == [
        None, None, "Core and proxy versions do not match. foreman: 3.16.0, foreman-proxy: 3.15.1"]


def test_an_installed_smart_proxy_gives_the_version(tmp_path: Path) -> None:
    version_file = tmp_path / "VERSION"
    version_file.write_text("3.14.0-develop\n")
    settings = Settings(tftproot=tmp_path)
    assert smart_proxy_version(settings, version_file) == ("3.14.0-develop", str(version_file))
    assert smart_proxy_version(settings.model_copy(update={"smart_proxy_version": "3.13.2"}),
                               version_file)[0] == "3.13.2", "the setting wins"
    version_file.write_text("not a version")
    assert smart_proxy_version(settings, version_file)[0] == "3.13.0"
    assert smart_proxy_version(settings, tmp_path / "absent")[0] == "3.13.0"


@SCHEMES
def test_every_pxe_config_call_writes_what_smart_proxy_writes(serve, scheme: str) -> None:
    p: Served = serve(scheme)
    for kind, files in FILES.items():
        for payload, links in (({}, {}), (FOREMAN_314, LINKS.get(kind, {}))):
            content = f"# {kind} for {MAC}\n"
            [result] = p.foreman({"call": "set", "kind": kind, "mac": MAC,
                                  "args": {"pxeconfig": content, **payload}})
            assert result == {"value": True}, (kind, result)  # 200, empty body
            expected = {f: content for f in files} | {k: f"-> {v}" for k, v in links.items()}
            assert tree(p.root) == expected, (kind, payload)
            [result] = p.foreman({"call": "delete", "kind": kind, "mac": MAC})
            assert result == {"value": True}
            assert tree(p.root) == {}, f"DELETE {kind} leaves nothing behind"
    for kind, files in DEFAULTS.items():
        [result] = p.foreman({"call": "create_default", "kind": kind, "menu": f"{kind} menu"})
        assert result == {"value": True}
        assert {f: tree(p.root)[f] for f in files} == {f: f"{kind} menu" for f in files}
    # What Foreman makes of refusals: a ProxyException with rest-client's status line.
    bad_mac, bad_kind = p.foreman(
        {"call": "set", "kind": "PXELinux", "mac": "52:54:00:ab:cd:zz",
         "args": {"pxeconfig": "x"}},
        {"call": "create_default", "kind": "Elilo", "menu": "x"})
    assert bad_mac["error"] == (
        "ERF12-5472 [ProxyAPI::ProxyException]: Unable to set TFTP boot entry for "
        "52:54:00:ab:cd:zz ([RestClient::Forbidden]: 403 Forbidden) for proxy "
        f"{p.url}/tftp")
    assert bad_kind["error"] == (
        "ERF12-9243 [ProxyAPI::ProxyException]: Unable to create default TFTP boot menu "
        f"([RestClient::Forbidden]: 403 Forbidden) for proxy {p.url}/tftp")


@SCHEMES
def test_a_failed_fetch_is_an_exception_and_its_reason_is_in_the_logs(
        serve, scheme: str, upstream: Upstream) -> None:
    upstream.routes["/media/vmlinuz"] = lambda s: Reply(body=b"kernel v1")
    p: Served = serve(scheme)
    url = upstream.url("/media/vmlinuz")
    [ok] = p.foreman({"call": "fetch_boot_file", "prefix": "boot/centos-ab12", "path": url})
    assert ok["value"]["status"] == "published"  # a JSON object: truthy, success to Foreman
    assert (p.root / "boot/centos-ab12-vmlinuz").read_bytes() == b"kernel v1"
    since = time.time()
    upstream.routes["/media/vmlinuz"] = lambda s: Reply(404, "Not Found", body=b"gone")
    missing = upstream.url("/media/missing-initrd.img")
    refetch, new = p.foreman(
        {"call": "fetch_boot_file", "prefix": "boot/centos-ab12", "path": url},
        {"call": "fetch_boot_file", "prefix": "boot/centos-ab12", "path": missing})
    for result in (refetch, new):
        assert result["error"] == (
            "ERF12-2573 [ProxyAPI::ProxyException]: Unable to fetch TFTP boot file "
            f"([RestClient::BadGateway]: 502 Bad Gateway) for proxy {p.url}/tftp")
    assert (p.root / "boot/centos-ab12-vmlinuz").read_bytes() == b"kernel v1"
    logs = p.value({"call": "logs", "from": since})
    errors = [e for e in logs["entries"] if e["level"] == "ERROR"]
    assert [e["message"] for e in errors] == [
        f"TFTP: Failed to fetch boot file: {url}: HTTP 404 Not Found; previous version kept "
        f"(boot file boot/centos-ab12-vmlinuz)",
        f"TFTP: Failed to fetch boot file: {missing}: HTTP 404 Not Found; nothing published "
        f"(boot file boot/centos-ab12-missing-initrd.img)",
    ]
    assert all(len(e["request_id"]) == 8 for e in errors), "tagged with Foreman's request id"
    assert logs["counts"]["error"] == 2
    assert logs["failed_modules"] == {}
    assert all(e["timestamp"] >= since for e in logs["entries"])


@SCHEMES
def test_a_fetch_that_fails_after_its_202_reaches_foreman_through_the_logs(
        serve, scheme: str, upstream: Upstream) -> None:
    gate = threading.Event()
    upstream.routes["/slow/vmlinuz"] = lambda s: Reply(
        body=os.urandom(200_000), pause_at=50_000, pause=gate, cut_at=100_000, then="close")
    p: Served = serve(scheme, fetch_wait=0.5)
    url = upstream.url("/slow/vmlinuz")
    since = time.time()
    [answered] = p.foreman({"call": "fetch_boot_file", "prefix": "boot/slow", "path": url})
    assert answered["value"]["state"] == "running", "a 202: Foreman takes it as done"
    gate.set()
    expected = (f"TFTP: Failed to fetch boot file: {url}: truncated: the server closed the "
                f"connection after 100000 of 200000 bytes; nothing published "
                f"(boot file boot/slow-vmlinuz)")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        logs = p.value({"call": "logs", "from": since})
        if any(e["message"] == expected for e in logs["entries"]):
            break
        time.sleep(0.2)
    assert [e["level"] for e in logs["entries"] if e["message"] == expected] == ["ERROR"]
    assert not os.path.lexists(p.root / "boot/slow-vmlinuz")
