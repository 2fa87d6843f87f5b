"""The contract, route by route: statuses, bodies and the files written, as smart-proxy does.

The expected file names are copied from the contract's table, not computed by tftproxy's code.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.api.conftest import ServedProxy
from tests.helpers.api import foreman_success

MAC = "aa:bb:cc:dd:ee:ff"

PER_MAC = {
    "syslinux": ["pxelinux.cfg/01-aa-bb-cc-dd-ee-ff"],
    "pxelinux": ["pxelinux.cfg/01-aa-bb-cc-dd-ee-ff"],
    "pxegrub": ["grub/menu.lst.01AABBCCDDEEFF", "grub/01-AA-BB-CC-DD-EE-FF"],
    "pxegrub2": ["grub2/grub.cfg-01-aa-bb-cc-dd-ee-ff", "grub2/grub.cfg-aa:bb:cc:dd:ee:ff"],
    "ztp": ["ztp.cfg/AABBCCDDEEFF", "ztp.cfg/AABBCCDDEEFF.cfg"],
    "poap": ["poap.cfg/AABBCCDDEEFF"],
    "ipxe": ["pxelinux.cfg/01-aa-bb-cc-dd-ee-ff.ipxe"],
}
DEFAULTS = {
    "syslinux": ["pxelinux.cfg/default"],
    "pxelinux": ["pxelinux.cfg/default"],
    "pxegrub": ["grub/menu.lst", "grub/efidefault"],
    "pxegrub2": ["grub2/grub.cfg"],
    "ipxe": ["pxelinux.cfg/default.ipxe"],
}
# The spellings Foreman sends.
FOREMAN_KIND = {"pxelinux": "PXELinux", "pxegrub": "PXEGrub", "pxegrub2": "PXEGrub2",
                "ipxe": "iPXE", "ztp": "ZTP", "poap": "POAP", "syslinux": "Syslinux"}


def tree(root: Path) -> set[str]:
    """Every file and link under the root, except tftproxy's own state."""
    found = set()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d != ".tftproxy"]
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            found.add(os.path.relpath(os.path.join(dirpath, name), root))
    return found


@pytest.mark.parametrize("variant", sorted(PER_MAC))
async def test_per_mac_files_written_read_and_deleted(proxy, variant: str) -> None:
    p: ServedProxy = await proxy()
    content = f"# {variant} config\nkernel boot/vmlinuz\n"
    kind = FOREMAN_KIND[variant]
    r = await p.foreman("POST", f"/tftp/{kind}/{MAC}", {"pxeconfig": content})
    assert (r.status, r.text) == (200, "")
    assert tree(p.root) == set(PER_MAC[variant])
    for rel in PER_MAC[variant]:
        assert (p.root / rel).read_text() == content
        assert (p.root / rel).stat().st_mode & 0o777 == 0o644
    r = await p.call("GET", f"/tftp/{variant}/{MAC}")
    assert (r.status, r.text) == (200, content)
    r = await p.foreman("DELETE", f"/tftp/{kind}/{MAC}")
    assert (r.status, r.text) == (200, "")
    assert tree(p.root) == set()
    r = await p.foreman("DELETE", f"/tftp/{kind}/{MAC}")
    assert (r.status, r.text) == (200, ""), "deleting an absent config is no error"
    r = await p.call("GET", f"/tftp/{variant}/{MAC}")
    assert r.status == 404
    assert r.text.startswith("TFTP: Failed to retrieve pxe config file: File ")
    assert r.text.rstrip().endswith(" not found")


@pytest.mark.parametrize("variant", sorted(DEFAULTS))
async def test_default_files(proxy, variant: str) -> None:
    p: ServedProxy = await proxy()
    r = await p.foreman("POST", f"/tftp/{FOREMAN_KIND[variant]}/create_default",
                        {"menu": "MENU"})
    assert (r.status, r.text) == (200, "")
    assert tree(p.root) == set(DEFAULTS[variant])
    assert all((p.root / rel).read_text() == "MENU" for rel in DEFAULTS[variant])


@pytest.mark.parametrize("variant", ["ztp", "poap", "ZTP"])
async def test_ztp_poap_default_is_a_clear_400(proxy, variant: str) -> None:
    p: ServedProxy = await proxy()
    (p.root / "ztp.cfg").mkdir()
    r = await p.foreman("POST", f"/tftp/{variant}/create_default", {"menu": "x"})
    assert r.status == 400
    assert r.text.strip() == (f"TFTP: Failed to create PXE default file: the "
                              f"{variant.lower()} variant has no default file")
    assert (p.root / "ztp.cfg").is_dir()


async def test_legacy_routes_are_syslinux(proxy) -> None:
    p: ServedProxy = await proxy()
    r = await p.foreman("POST", "/tftp/create_default", {"menu": "LEGACY MENU"})
    assert (r.status, r.text) == (200, "")
    r = await p.foreman("POST", f"/tftp/{MAC}", {"syslinux_config": "LEGACY"})
    assert (r.status, r.text) == (200, "")
    assert tree(p.root) == {"pxelinux.cfg/default", "pxelinux.cfg/01-aa-bb-cc-dd-ee-ff"}
    assert (p.root / "pxelinux.cfg/01-aa-bb-cc-dd-ee-ff").read_text() == "LEGACY"
    r = await p.foreman("DELETE", f"/tftp/{MAC}")
    assert (r.status, r.text) == (200, "")
    assert tree(p.root) == {"pxelinux.cfg/default"}


async def test_pxeconfig_wins_over_syslinux_config_and_query_params_work(proxy) -> None:
    p: ServedProxy = await proxy()
    r = await p.call("POST", f"/tftp/pxelinux/{MAC}",
                     data={"pxeconfig": "new", "syslinux_config": "old"})
    assert r.status == 200
    assert (p.root / PER_MAC["pxelinux"][0]).read_text() == "new"
    r = await p.call("POST", f"/tftp/pxelinux/{MAC}", params={"pxeconfig": "from query"})
    assert r.status == 200
    assert (p.root / PER_MAC["pxelinux"][0]).read_text() == "from query"


async def test_empty_config_is_written(proxy) -> None:
    p: ServedProxy = await proxy()
    r = await p.foreman("POST", f"/tftp/pxelinux/{MAC}", {"pxeconfig": ""})
    assert r.status == 200
    assert (p.root / PER_MAC["pxelinux"][0]).read_bytes() == b""


@pytest.mark.parametrize(("path", "data", "message"), [
    (f"/tftp/pxelinux/{MAC}", {}, "TFTP: Failed to create pxe config file: "
                                  "Invalid parameters received"),
    (f"/tftp/{MAC}", {"menu": "x"}, "TFTP: Failed to create pxe config file: "
                                    "Invalid parameters received"),
    ("/tftp/pxelinux/create_default", {}, "TFTP: Failed to create PXE default file: "
                                          "Default config not supplied"),
    ("/tftp/create_default", {"pxeconfig": "x"}, "TFTP: Failed to create PXE default file: "
                                                 "Default config not supplied"),
])
async def test_missing_parameters_are_400(proxy, path: str, data: dict[str, str],
                                          message: str) -> None:
    p: ServedProxy = await proxy()
    r = await p.foreman("POST", path, data)
    assert (r.status, r.text.strip()) == (400, message)
    assert r.content_type.startswith("text/plain")
    assert tree(p.root) == set()


@pytest.mark.parametrize("mac", [
    "aa:bb:cc:dd:ee", "aa:bb:cc:dd:ee:ff:00", "aa-bb-cc-dd-ee-ff", "gg:bb:cc:dd:ee:ff",
    "aaa:bb:cc:dd:ee:ff", "aabbccddeeff", "aa:bb:cc:dd:ee:ff:", "create_defaults", "%00",
    ":".join(["aa"] * 19),
])
@pytest.mark.parametrize("method", ["GET", "POST", "DELETE"])
async def test_invalid_mac_is_403(proxy, mac: str, method: str) -> None:
    p: ServedProxy = await proxy()
    r = await p.foreman(method, f"/tftp/pxelinux/{mac}", {"pxeconfig": "x"})
    assert r.status == 403
    assert r.text.strip() == f"Invalid MAC address: {mac}".replace("%00", "\\x00")
    assert tree(p.root) == set()


async def test_mac_is_checked_before_variant_and_variant_message(proxy) -> None:
    p: ServedProxy = await proxy()
    r = await p.foreman("POST", "/tftp/elilo/zz", {"pxeconfig": "x"})
    assert (r.status, r.text.strip()) == (403, "Invalid MAC address: zz")
    for method in ("GET", "POST", "DELETE"):
        r = await p.foreman(method, f"/tftp/Elilo/{MAC}", {"pxeconfig": "x"})
        assert (r.status, r.text.strip()) == (403, "Unrecognized pxeboot config type: Elilo")
    r = await p.foreman("POST", "/tftp/elilo/create_default", {"menu": "x"})
    assert (r.status, r.text.strip()) == (403, "Unrecognized pxeboot config type: elilo")


async def test_infiniband_mac(proxy) -> None:
    p: ServedProxy = await proxy()
    mac = ":".join(f"{i:02X}" for i in range(20))
    r = await p.foreman("POST", f"/tftp/pxelinux/{mac}", {"pxeconfig": "ib"})
    assert r.status == 200
    assert tree(p.root) == {"pxelinux.cfg/01-" + "-".join(f"{i:02x}" for i in range(20))}


async def test_short_mac_groups_are_zero_padded(proxy) -> None:
    p: ServedProxy = await proxy()
    r = await p.foreman("POST", "/tftp/pxegrub2/a:b:c:d:e:f", {"pxeconfig": "x"})
    assert r.status == 200
    assert tree(p.root) == {"grub2/grub.cfg-01-0a-0b-0c-0d-0e-0f",
                            "grub2/grub.cfg-0a:0b:0c:0d:0e:0f"}


async def test_server_name(proxy) -> None:
    p: ServedProxy = await proxy(tftp_servername="tftp.example.test")
    r = await p.foreman("GET", "/tftp/serverName")
    assert r.status == 200
    assert r.content_type.startswith("application/json")
    assert json.loads(r.text) == {"serverName": "tftp.example.test"}
    q: ServedProxy = await proxy()
    r = await q.foreman("GET", "/tftp/serverName")
    assert json.loads(r.text) == {"serverName": ""}


async def test_features_version_v2(proxy) -> None:
    p: ServedProxy = await proxy(tftp_servername="tftp.example.test")
    r = await p.foreman("GET", "/features")
    assert (r.status, json.loads(r.text)) == (200, ["tftp"])
    r = await p.foreman("GET", "/version")
    version = json.loads(r.text)
    assert r.status == 200
    assert set(version) == {"version", "modules"}
    assert version["modules"] == {"tftp": version["version"]}
    r = await p.foreman("GET", "/v2/features")
    assert r.status == 200
    assert json.loads(r.text) == {"tftp": {
        "http_enabled": True, "https_enabled": False,
        "settings": {"tftp_servername": "tftp.example.test"},
        "state": "running", "capabilities": [
            "bootloader_archive_iso", "bootloader_archive_tgz", "bootloader_universe",
            "bootloader_universe_boot_files"]}}


async def test_module_disabled(proxy) -> None:
    p: ServedProxy = await proxy(feature_enabled=False)
    assert json.loads((await p.call("GET", "/features")).text) == []
    assert json.loads((await p.call("GET", "/version")).text)["modules"] == {}
    v2 = json.loads((await p.call("GET", "/v2/features")).text)
    assert v2["tftp"]["state"] == "disabled"
    assert not v2["tftp"]["http_enabled"]
    r = await p.call("GET", "/tftp/serverName")
    assert r.status == 404
    r = await p.foreman("POST", f"/tftp/pxelinux/{MAC}", {"pxeconfig": "x"})
    assert r.status == 404
    assert tree(p.root) == set()


async def test_foreman_like_session(proxy) -> None:
    """What Foreman does from registration to a host's build, judged by Foreman's rule."""
    p: ServedProxy = await proxy(tftp_servername="10.0.0.1")
    calls = [
        ("GET", "/v2/features", None),
        ("GET", "/features", None),
        ("GET", "/version", None),
        ("GET", "/tftp/serverName", None),
    ]
    for kind in ("PXELinux", "PXEGrub", "PXEGrub2", "iPXE"):
        calls.append(("POST", f"/tftp/{kind}/create_default", {"menu": f"{kind} menu"}))
    for kind in ("PXELinux", "PXEGrub", "PXEGrub2", "iPXE"):
        calls.append(("DELETE", f"/tftp/{kind}/{MAC}", None))
        calls.append(("POST", f"/tftp/{kind}/{MAC}", {
            "pxeconfig": f"{kind} host", "targetos": "redhat", "release": "9.4",
            "arch": "x86_64", "bootfile_suffix": "x64"}))
    for method, path, data in calls:
        r = await p.foreman(method, path, data)
        assert foreman_success(r.status, r.text), (method, path, r.status, r.text)
    assert {"pxelinux.cfg/01-aa-bb-cc-dd-ee-ff", "grub/01-AA-BB-CC-DD-EE-FF",
            "grub2/grub.cfg-01-aa-bb-cc-dd-ee-ff", "pxelinux.cfg/01-aa-bb-cc-dd-ee-ff.ipxe",
            "host-config/aa-bb-cc-dd-ee-ff/grub2/grub.cfg"} <= tree(p.root)
    # Failures are failures for Foreman too, with a readable reason.
    r = await p.foreman("POST", f"/tftp/PXEGrub2/{MAC}", {})
    assert not foreman_success(r.status, r.text)
    assert r.text.startswith("TFTP: ")


async def test_unknown_routes_and_methods_are_plain_text_4xx(proxy) -> None:
    p: ServedProxy = await proxy()
    r = await p.call("GET", "/nowhere")
    assert (r.status, r.text.strip()) == (404, "Not Found: /nowhere")
    r = await p.call("PUT", f"/tftp/pxelinux/{MAC}")
    assert r.status == 405
    assert r.content_type.startswith("text/plain")
    r = await p.call("GET", f"/tftp/{MAC}")
    assert r.status == 405
