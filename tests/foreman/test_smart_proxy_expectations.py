"""smart-proxy's own tests of its tftp, root, logs and httpboot modules, as black-box checks.

Each test names the smart-proxy test it stands for (test/tftp/tftp_api_test.rb, ...). They
run against ``tftproxy serve`` over HTTP and over HTTPS with a client certificate. Where
tftproxy differs on purpose (docs/api.md), the test says so and checks tftproxy's answer.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

import pytest

from tests.foreman.conftest import ARCHIVE_CAPABILITIES, Served
from tests.helpers.ftp import Vsftpd
from tests.helpers.nginx import Nginx
from tests.helpers.tree import files_under
from tests.helpers.upstream import Reply, Upstream
from tftproxy.settings.model import Settings
from tftproxy.settings.sources import load

SCHEMES = pytest.mark.parametrize("scheme", ["http", "https"])
MAC = "aa:bb:cc:dd:ee:ff"
LONG_MAC = "aa:bb:cc:dd:ee:ff:00:11:22:33:44:55:66:77:88:99:aa:bb:cc:dd"
VARIANTS = ["syslinux", "pxelinux", "pxegrub", "pxegrub2", "ztp", "poap", "ipxe"]
FETCH = "/tftp/fetch_boot_file"




# ----------------------------------------------------------- test/tftp/tftp_api_test.rb

@SCHEMES
def test_tftp_api(serve, scheme: str, upstream: Upstream) -> None:
    p: Served = serve(scheme, tftp_servername="servername")
    # test_instantiate_syslinux ... _ipxe: every variant, in any case.
    for variant in VARIANTS:
        for spelling in (variant, variant.upper(), variant.capitalize()):
            assert p.request("POST", f"/tftp/{spelling}/{MAC}", {"pxeconfig": "foo"}) == (200, "")
    # test_instantiate_nonexisting
    assert p.request("POST", f"/tftp/Server/{MAC}", {"pxeconfig": "foo"}) == (
        403, "Unrecognized pxeboot config type: Server")
    # test_api_can_create_config / _long_mac
    assert p.request("POST", f"/tftp/{MAC}", {"pxeconfig": "foo"}) == (200, "")
    assert (p.root / "pxelinux.cfg/01-aa-bb-cc-dd-ee-ff").read_text() == "foo"
    assert p.request("POST", f"/tftp/{LONG_MAC}", {"pxeconfig": "foo"}) == (200, "")
    # test_api_returns_error_on_invalid_mac: the body is the message, exactly.
    assert p.request("POST", "/tftp/aa:bb:cc:00:11:zz", {"pxeconfig": "foo"}) == (
        403, "Invalid MAC address: aa:bb:cc:00:11:zz")
    # test_api_can_read_config
    assert p.request("GET", f"/tftp/syslinux/{MAC}") == (200, "foo")
    # test_api_can_remove_config
    assert p.request("DELETE", f"/tftp/{MAC}") == (200, "")
    assert not (p.root / "pxelinux.cfg/01-aa-bb-cc-dd-ee-ff").exists()
    # test_api_can_create_default
    assert p.request("POST", "/tftp/create_default", {"menu": "bar"}) == (200, "")
    assert (p.root / "pxelinux.cfg/default").read_text() == "bar"
    # test_api_can_fetch_boot_file: an absolute prefix inside the root. smart-proxy answers
    # 200 before downloading; tftproxy answers 200 once the file is published (docs/api.md).
    upstream.routes["/file"] = lambda s: Reply(body=b"boot file")
    status, body = p.request("POST", FETCH, {"prefix": f"{p.root}/boot/file",
                                             "path": upstream.url("/file")})
    assert status == 200 and json.loads(body)["status"] == "published"
    assert (p.root / "boot/file-file").read_bytes() == b"boot file"
    # test_api_can_get_servername
    status, body = p.request("GET", "/tftp/serverName")
    assert (status, json.loads(body)) == (200, {"serverName": "servername"})


# ---------------------------------------------------------------- test/tftp/tftp_test.rb

def test_tftproot_default_and_relative_paths(tmp_path: Path) -> None:
    assert Settings().tftproot == Path("/var/lib/tftpboot")
    # smart-proxy resolves a relative tftproot against its module directory; tftproxy against
    # the directory of the file that sets it (docs/api.md).
    d = tmp_path / "foreman-proxy"
    (d / "settings.d").mkdir(parents=True)
    (d / "settings.yml").write_text(":http_port: 8000\n")
    (d / "settings.d/tftp.yml").write_text(":tftproot: tftpboot\n")
    assert load(d).settings.tftproot == d / "settings.d/tftpboot"


@SCHEMES
def test_boot_file_destinations(serve, scheme: str, upstream: Upstream) -> None:
    upstream.routes["/d/somefile"] = lambda s: Reply(body=b"some file")
    p: Served = serve(scheme)
    # test_path_to_boot_file_with_prefix_with_slash / _without_slash
    for prefix, name in (("a/b/c/", "a/b/c/somefile"), ("a/b/c", "a/b/c-somefile")):
        status, _ = p.request("POST", FETCH, {"prefix": prefix,
                                              "path": upstream.url("/d/somefile")})
        assert status == 200
        assert (p.root / name).read_bytes() == b"some file"
    # test_fetch_boot_file_with_absolute_path_outside_of_tftproot: an error, nothing written.
    status, body = p.request("POST", FETCH, {"prefix": "/other/root/boot/file",
                                             "path": upstream.url("/d/somefile")})
    assert status == 400
    assert body == (f"TFTP: Failed to fetch boot file: prefix '/other/root/boot/file' is an "
                    f"absolute path outside the TFTP root {p.root}")
    assert not Path("/other/root").exists()


def test_http_https_and_ftp_sources_are_fetched_nfs_ignored_others_refused(
        serve, upstream: Upstream, tls_nginx: tuple[Nginx, Path], ftp: Vsftpd) -> None:
    nginx, ca = tls_nginx
    nginx.put("pub/https-vmlinuz", b"over https")
    ftp.put("pub/ftp-vmlinuz", b"over ftp")
    upstream.routes["/pub/http-vmlinuz"] = lambda s: Reply(body=b"over http")
    p: Served = serve("http", ca_bundle=str(ca))
    for url, name, data in ((upstream.url("/pub/http-vmlinuz"), "http-vmlinuz", b"over http"),
                            (f"https://127.0.0.1:{nginx.port}/pub/https-vmlinuz", "https-vmlinuz",
                             b"over https"),
                            (ftp.url("pub/ftp-vmlinuz"), "ftp-vmlinuz", b"over ftp")):
        status, body = p.request("POST", FETCH, {"prefix": "boot/m", "path": url})
        assert status == 200, body
        assert (p.root / f"boot/m-{name}").read_bytes() == data
    status, body = p.request("POST", FETCH, {"prefix": "boot/m",
                                             "path": "nfs://server/export/vmlinuz"})
    assert (status, json.loads(body)["status"]) == (200, "ignored")
    assert not (p.root / "boot/m-vmlinuz").exists()
    status, body = p.request("POST", FETCH, {"prefix": "boot/m", "path": "git://h/vmlinuz"})
    assert (status, body) == (400, "TFTP: Failed to fetch boot file: unsupported URL scheme "
                                   "'git' (use http, https, ftp or oci)")


def test_the_download_honours_verify_server_cert_and_the_connect_timeout(
        serve, tls_nginx: tuple[Nginx, Path]) -> None:
    nginx, _ = tls_nginx  # its CA is not given to tftproxy: an unknown issuer
    nginx.put("vmlinuz", b"self-signed")
    url = f"https://127.0.0.1:{nginx.port}/vmlinuz"
    strict: Served = serve("http")
    status, body = strict.request("POST", FETCH, {"prefix": "boot/v", "path": url})
    assert status == 502 and "certificate verify failed" in body
    lax: Served = serve("http", verify_server_cert=False)
    assert lax.request("POST", FETCH, {"prefix": "boot/v", "path": url})[0] == 200
    assert (lax.root / "boot/v-vmlinuz").read_bytes() == b"self-signed"
    # A listener whose accept queue is full: connects hang, as to a host that drops SYNs.
    with socket.socket() as full:
        full.bind(("127.0.0.1", 0))
        full.listen(0)
        port = full.getsockname()[1]
        fillers = []
        try:
            for _ in range(8):
                s = socket.socket()
                s.settimeout(0.3)
                fillers.append(s)
                try:
                    s.connect(("127.0.0.1", port))
                except TimeoutError:
                    break
            quick: Served = serve("http", tftp_connect_timeout=1)
            started = time.monotonic()
            status, body = quick.request("POST", FETCH, {
                "prefix": "boot/t", "path": f"http://127.0.0.1:{port}/vmlinuz"})
            assert (status, body) == (502, f"TFTP: Failed to fetch boot file: http://127.0.0.1:"
                                           f"{port}/vmlinuz: connect timed out after 1 s; "
                                           f"nothing published")
            assert time.monotonic() - started < 5
        finally:
            for s in fillers:
                s.close()


# ------------------------------------------------------- test/tftp/tftp_server_test.rb

PER_MAC = {
    "syslinux": ["pxelinux.cfg/01-aa-bb-cc-dd-ee-ff"],
    "pxelinux": ["pxelinux.cfg/01-aa-bb-cc-dd-ee-ff"],
    "pxegrub": ["grub/menu.lst.01AABBCCDDEEFF", "grub/01-AA-BB-CC-DD-EE-FF"],
    "pxegrub2": ["host-config/aa-bb-cc-dd-ee-ff/grub2/grub.cfg",
                 "host-config/aa-bb-cc-dd-ee-ff/grub2/grub.cfg-01-aa-bb-cc-dd-ee-ff",
                 "host-config/aa-bb-cc-dd-ee-ff/grub2/grub.cfg-aa:bb:cc:dd:ee:ff",
                 "grub2/grub.cfg-01-aa-bb-cc-dd-ee-ff", "grub2/grub.cfg-aa:bb:cc:dd:ee:ff"],
    "ztp": ["ztp.cfg/AABBCCDDEEFF", "ztp.cfg/AABBCCDDEEFF.cfg"],
    "poap": ["poap.cfg/AABBCCDDEEFF"],
    "ipxe": ["pxelinux.cfg/01-aa-bb-cc-dd-ee-ff.ipxe"],
}
DEFAULT = {"syslinux": ["pxelinux.cfg/default"], "pxelinux": ["pxelinux.cfg/default"],
           "pxegrub": ["grub/menu.lst", "grub/efidefault"], "pxegrub2": ["grub2/grub.cfg"],
           "ipxe": ["pxelinux.cfg/default.ipxe"]}


@SCHEMES
def test_tftp_server_set_get_del_and_create_default(serve, scheme: str) -> None:
    p: Served = serve(scheme)
    for variant, files in PER_MAC.items():
        assert p.request("POST", f"/tftp/{variant}/{MAC}", {"pxeconfig": "file content"}) == (
            200, "")
        assert files_under(p.root) == set(files)  # write_file made the parent directories
        assert all((p.root / f).read_text() == "file content" for f in files)
        assert p.request("GET", f"/tftp/{variant}/{MAC}") == (200, "file content")
        assert p.request("DELETE", f"/tftp/{variant}/{MAC}") == (200, "")
        assert files_under(p.root) == set(), f"{variant}: del removes every file (host-config too)"
        # delete_file of a missing file is not an error
        assert p.request("DELETE", f"/tftp/{variant}/{MAC}") == (200, "")
    for variant, files in DEFAULT.items():
        assert p.request("POST", f"/tftp/{variant}/create_default",
                         {"menu": "file content"}) == (200, "")
        assert all((p.root / f).read_text() == "file content" for f in files)
    # ztp and poap have no default: smart-proxy writes over their directory; tftproxy says no.
    status, _ = p.request("POST", "/tftp/ztp/create_default", {"menu": "x"})
    assert status == 400


@SCHEMES
def test_pxegrub2_bootloaders_from_the_universe_or_the_defaults(serve, scheme: str) -> None:
    p: Served = serve(scheme)
    universe = p.root / "bootloader-universe/pxegrub2/redhat/9.4/x86_64"
    universe.mkdir(parents=True)
    for name in ("grubx64.efi", "shimx64.efi"):
        (universe / name).write_bytes(b"efi")
    host = p.root / "host-config/aa-bb-cc-dd-ee-ff/grub2"
    args = {"pxeconfig": "c", "targetos": "redhat", "release": "9.4", "arch": "x86_64",
            "bootfile_suffix": "x64"}
    assert p.request("POST", f"/tftp/pxegrub2/{MAC}", args) == (200, "")
    assert {e.name: os.readlink(e) for e in host.iterdir() if e.is_symlink()} == {
        "grubx64.efi": "../../../bootloader-universe/pxegrub2/redhat/9.4/x86_64/grubx64.efi",
        "shimx64.efi": "../../../bootloader-universe/pxegrub2/redhat/9.4/x86_64/shimx64.efi"}
    # No such OS in the universe: the defaults, relative, dangling allowed.
    assert p.request("POST", f"/tftp/pxegrub2/{MAC}", {**args, "targetos": "debian"}) == (200, "")
    assert {e.name: os.readlink(e) for e in host.iterdir() if e.is_symlink()} == {
        "boot.efi": "../../../grub2/grubx64.efi", "grubx64.efi": "../../../grub2/grubx64.efi",
        "boot-sb.efi": "../../../grub2/shimx64.efi", "shimx64.efi": "../../../grub2/shimx64.efi"}
    assert p.request("DELETE", f"/tftp/pxegrub2/{MAC}") == (200, "")
    assert not (p.root / "host-config/aa-bb-cc-dd-ee-ff").exists()


# -------------------------------------- test/root/*, test/tftp, test/logs, test/httpboot
#                                                integration tests: features and versions

@SCHEMES
def test_root_features_version_and_v2(serve, scheme: str) -> None:
    p: Served = serve(scheme, tftp_servername="tftp.example.com", logs_enabled=False)
    # root_api_test: /features lists the running modules only; /version their versions.
    status, body = p.request("GET", "/features")
    assert (status, json.loads(body)) == (200, ["httpboot", "tftp"])
    status, body = p.request("GET", "/version")
    version = json.loads(body)
    assert version["modules"] == {"httpboot": "3.13.0", "tftp": "3.13.0"}
    # root_v2_api_test: running and disabled modules; tftp/integration_test.
    status, body = p.request("GET", "/v2/features")
    v2 = json.loads(body)
    assert v2["tftp"] == {"http_enabled": True, "https_enabled": True, "state": "running",
                          "settings": {"tftp_servername": "tftp.example.com"},
                          "capabilities": ARCHIVE_CAPABILITIES}
    assert v2["logs"]["state"] == "disabled"
    assert (v2["logs"]["settings"], v2["logs"]["capabilities"]) == ({}, [])


@SCHEMES
def test_logs_api(serve, scheme: str) -> None:
    p: Served = serve(scheme)
    status, body = p.request("GET", "/logs/")
    assert status == 200
    logs = json.loads(body)
    # logs_api_test: test_log_buffer, test_log_buffer_timestamp
    assert logs["info"]["level_tail"] == 3
    assert logs["logs"][0]["timestamp"] < logs["logs"][1]["timestamp"]
    assert logs["info"] == {"size": 2000, "tail_size": 1000, "level": None, "level_tail": 3,
                            "failed_modules": {}}
    assert all(set(r) <= {"timestamp", "level", "message", "backtrace", "request_id"}
               for r in logs["logs"])
    # from_timestamp filters; what String#to_f cannot read is 0 (everything); /logs answers too.
    newest = logs["logs"][-1]["timestamp"]
    status, body = p.request("GET", f"/logs/?from_timestamp={newest}")
    assert json.loads(body)["logs"][0]["timestamp"] == newest
    assert len(json.loads(p.request("GET", "/logs?from_timestamp=abc")[1])["logs"]) >= len(
        logs["logs"])
    # logs/integration_test
    status, body = p.request("GET", "/v2/features")
    assert {k: v for k, v in json.loads(body)["logs"].items() if k != "http_enabled"
            and k != "https_enabled"} == {"state": "running", "settings": {}, "capabilities": []}
    if scheme == "https":
        assert p.request("GET", "/logs/", certificate=False) == (
            403, "No client SSL certificate supplied")


@pytest.mark.parametrize(("enabled", "http", "https"), [("true", True, True),
                                                        ("https", False, True),
                                                        ("http", True, False)])
def test_httpboot_integration_ports(serve, enabled: str, http: bool, https: bool) -> None:
    p: Served = serve("http", httpboot_enabled=enabled)
    v2 = json.loads(p.request("GET", "/v2/features")[1])["httpboot"]
    assert v2 == {"http_enabled": http, "https_enabled": https, "state": "running",
                  "capabilities": [],
                  "settings": {"http_port": p.ports["http"] if http else None,
                               "https_port": p.ports["https"] if https else None}}
    (p.root / "kernel").write_bytes(b"k")
    assert p.request("GET", "/httpboot/kernel")[0] == (200 if http else 404)


# ------------------------------------------------------ test/httpboot/httpboot_api_test.rb

@SCHEMES
@pytest.mark.parametrize("prefix", ["/httpboot", "/EFI"])
def test_httpboot_api(serve, scheme: str, prefix: str, tmp_path: Path) -> None:
    p: Served = serve(scheme)
    root = p.root
    (root / "valid_file").write_bytes(b"")
    (root / "valid_dir").mkdir()
    (root / "valid_symlink").symlink_to(root / "valid_file")
    (root / "invalid_symlink").symlink_to(root / "does_not_exist")
    other = tmp_path / f"httpboot-test2-{scheme}{prefix.strip('/')}"
    other.mkdir()
    (other / "secure_file").write_bytes(b"secret")
    (root / "dangerous_symlink").symlink_to(other / "secure_file")
    os.mkfifo(root / "a_fifo")
    assert p.request("GET", f"{prefix}/valid_file") == (200, "")
    assert p.request("GET", f"{prefix}/valid_dir") == (403, "Directory listing not allowed")
    assert p.request("GET", f"{prefix}/valid_symlink") == (200, "")
    assert p.request("GET", f"{prefix}/invalid_symlink") == (404, "Not found")
    assert p.request("GET", f"{prefix}/") == (403, "Invalid or empty path")
    assert p.request("GET", f"{prefix}/dangerous_symlink") == (403, "Invalid or empty path")
    assert p.request("GET", f"{prefix}/a_fifo") == (503, "Not a regular file")
    # Beyond smart-proxy's tests: tftproxy's private state is never served.
    assert p.request("GET", f"{prefix}/.tftproxy/private/meta") == (403, "Invalid or empty path")


def test_httpboot_follows_root_dir(serve, tmp_path: Path) -> None:
    elsewhere = tmp_path / "httpboot-root"
    (elsewhere / "EFI/BOOT").mkdir(parents=True)
    (elsewhere / "EFI/BOOT/BOOTX64.EFI").write_bytes(b"loader")
    p: Served = serve("http", httpboot_root_dir=str(elsewhere))
    assert p.request("GET", "/httpboot/EFI/BOOT/BOOTX64.EFI") == (200, "loader")
    assert p.request("GET", "/EFI/EFI/BOOT/BOOTX64.EFI") == (200, "loader")
    (p.root / "only-in-tftproot").write_bytes(b"x")
    assert p.request("GET", "/httpboot/only-in-tftproot") == (404, "Not found")
