"""Archives into bootloader universes (smart-proxy PR #958) through the API, from nginx.

The media are real: Debian's netboot tree packed as netboot.tar.gz, and an ISO that xorriso
builds from Microsoft-signed shim, Debian-signed grub and kernel (tests/helpers/media.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import tarfile
import threading
from pathlib import Path
from typing import Any

import pytest

from tests.api.conftest import ServedProxy
from tests.helpers import media
from tests.helpers.ftp import Vsftpd
from tests.helpers.nginx import Nginx
from tests.helpers.upstream import Reply, Upstream

pytestmark = pytest.mark.skipif(bool(media.missing_packages()),
                                reason=f"needs {' '.join(media.missing_packages())}")

U = "bootloader-universe/pxegrub2/debian/12/x86_64"
R = "bootloader-universe/pxegrub2/redhat/9/x86_64"
MAC = "aa:bb:cc:dd:ee:ff"
HOST = "host-config/aa-bb-cc-dd-ee-ff/grub2"


@pytest.fixture(scope="module")
def netboot(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return media.netboot_tgz(tmp_path_factory.mktemp("tgz") / "netboot.tar.gz").read_bytes()


@pytest.fixture(scope="module")
def initrd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("initrd") / "initrd.img"
    path.write_bytes(os.urandom(3_000_000))
    return path


@pytest.fixture(scope="module")
def boot_iso(tmp_path_factory: pytest.TempPathFactory, initrd: Path) -> bytes:
    base = tmp_path_factory.mktemp("iso")
    tree = media.iso_tree(base / "tree", media.DI_LINUX, initrd)
    return media.make_iso(tree, base / "boot.iso").read_bytes()


def debian_extract(source: str, universe: str = U, **extra: Any) -> dict[str, Any]:
    return {"source": source, "destination": f"{universe}/netboot.tar.gz", "type": "tgz",
            "files": {f"{universe}/{n}": m for n, m in media.DEBIAN_FILES.items()},
            "symlinks": {f"{universe}/{a}": f"{universe}/{t}" for a, t in media.ALIASES.items()},
            **extra}


def redhat_extract(source: str) -> dict[str, Any]:
    return {"source": source, "destination": f"{R}/boot.iso", "type": "iso",
            "files": {f"{R}/{n}": m for n, m in media.ISO_FILES.items()},
            "symlinks": {f"{R}/{a}": f"{R}/{t}" for a, t in media.ALIASES.items()}}


async def post_json(p: ServedProxy, path: str, body: Any) -> tuple[int, Any]:
    r = await p.call("POST", path, data=json.dumps(body),
                     headers={"Content-Type": "application/json"})
    return r.status, (json.loads(r.text) if r.content_type.startswith("application/json")
                      else r.text)


def universe_status(p: ServedProxy, set_id: str) -> dict[str, Any]:
    from tftproxy.jobs.status import status_report
    from tftproxy.store import BootStore

    report = status_report(BootStore(p.root, create=False))
    return next(s for s in report["sets"] if s["set"] == set_id)


async def test_debian_netboot_tgz_becomes_a_universe(proxy, nginx: Nginx, netboot) -> None:
    """The archive and its members, with boot.efi -> grubx64.efi, published as one generation;
    the same request again redoes nothing (one download, then 304)."""
    p: ServedProxy = await proxy()
    nginx.put("debian/dists/bookworm/main/installer-amd64/current/images/netboot/netboot.tar.gz",
              netboot)
    url = nginx.url("debian/dists/bookworm/main/installer-amd64/current/images/netboot/"
                    "netboot.tar.gz")
    status, body = await post_json(p, "/tftp/fetch_and_process", {"extract": debian_extract(url)})
    assert status == 200, body
    assert body["status"] == "published" and body["set"] == f"{U}/netboot.tar.gz"
    root = p.root
    for name, member in media.DEBIAN_FILES.items():
        assert media.sha256(root / U / name) == media.sha256(media.DI_TREE / member), name
    assert media.sha256(root / U / "shimx64.efi") == media.sha256(media.SHIM)
    assert (root / U / "netboot.tar.gz").read_bytes() == netboot
    assert os.readlink(root / U / "boot.efi") == "grubx64.efi"
    assert os.readlink(root / U / "boot-sb.efi") == "shimx64.efi"
    gen = universe_status(p, f"{U}/netboot.tar.gz")
    assert gen["current"] == 1
    assert sorted(gen["generations"][0]["members"]) == sorted(
        [f"{U}/netboot.tar.gz", *(f"{U}/{n}" for n in (*media.DEBIAN_FILES, *media.ALIASES))])

    again = await post_json(p, "/tftp/fetch_and_process", {"extract": debian_extract(url)})
    assert again[0] == 200 and again[1]["status"] == "unchanged", again
    assert universe_status(p, f"{U}/netboot.tar.gz")["current"] == 1
    log = [(m, s) for m, s, _ in nginx.log_lines(
        "/debian/dists/bookworm/main/installer-amd64/current/images/netboot/netboot.tar.gz")]
    assert log == [("HEAD", 200), ("GET", 200), ("GET", 304)], log


async def test_an_archive_over_ftp_becomes_a_universe(proxy, ftp: Vsftpd, netboot) -> None:
    """ftp:// media are fetched like http ones: the archive too, then unchanged by MDTM."""
    p: ServedProxy = await proxy()
    ftp.put("pub/netboot.tar.gz", netboot, mtime=1_700_000_000)
    spec = debian_extract(ftp.url("pub/netboot.tar.gz"))
    status, body = await post_json(p, "/tftp/fetch_and_process", {"extract": spec})
    assert status == 200 and body["status"] == "published", body
    assert media.sha256(p.root / U / "linux") == media.sha256(
        media.DI_TREE / media.DEBIAN_FILES["linux"])
    assert os.readlink(p.root / U / "boot.efi") == "grubx64.efi"
    again = await post_json(p, "/tftp/fetch_and_process", {"extract": spec})
    assert again[0] == 200 and again[1]["status"] == "unchanged", again
    assert ftp.retrs("pub/netboot.tar.gz") == 1


async def test_a_universe_is_held_during_its_first_fetch(proxy, upstream: Upstream,
                                                         netboot) -> None:
    """While an archive is first fetched, its names are "fetching": our servers hold readers
    of the members (as of any boot file) until the universe is published."""
    from tftproxy.store import BootStore

    gate = threading.Event()
    upstream.routes["/netboot.tar.gz"] = lambda s: Reply(body=netboot, pause_at=65536,
                                                         pause=gate)
    p: ServedProxy = await proxy(fetch_wait=0.3)
    status, job = await post_json(p, "/tftp/fetch_and_process",
                                  {"extract": debian_extract(upstream.url("/netboot.tar.gz"))})
    assert status == 202, job
    try:
        store = BootStore(p.root, create=False)
        for name in ("netboot.tar.gz", "linux", "boot.efi"):
            assert store.serving.is_refreshing(f"{U}/{name}"), name
    finally:
        gate.set()
    result = await p.files.job(job["id"]).outcome()
    assert result.status == "published", result
    store = BootStore(p.root, create=False)
    assert not store.serving.is_refreshing(f"{U}/linux")
    assert {r.state for r in store.records.records()} == {"published"}


async def test_foreman_posts_the_same_json_to_fetch_boot_file(proxy, nginx: Nginx,
                                                              netboot) -> None:
    p: ServedProxy = await proxy()
    nginx.put("d/netboot.tar.gz", netboot)
    nginx.put("d/vmlinuz", b"kernel")
    status, body = await post_json(p, "/tftp/fetch_boot_file",
                                   {"extract": debian_extract(nginx.url("d/netboot.tar.gz"))})
    assert status == 200 and body["status"] == "published", body
    assert (p.root / U / "linux").is_file()
    # Form prefix/path is unchanged beside it.
    r = await p.foreman("POST", "/tftp/fetch_boot_file",
                        {"prefix": "boot/x", "path": nginx.url("d/vmlinuz")})
    assert r.status == 200, r.text
    assert (p.root / "boot/x-vmlinuz").read_bytes() == b"kernel"
    # Shape B: one file under an exact name.
    status, body = await post_json(p, "/tftp/fetch_and_process",
                                   {"source": nginx.url("d/vmlinuz"),
                                    "destination": f"{U}/boot.iso"})
    assert status == 200, body
    assert (p.root / U / "boot.iso").read_bytes() == b"kernel"


async def test_iso_members_verified_by_the_images_treeinfo(proxy, nginx: Nginx, boot_iso,
                                                           initrd, tmp_path) -> None:
    """A respun ISO whose .treeinfo disagrees with a member publishes nothing and names
    the member, the expected and the actual checksum; the previous universe stays whole."""
    p: ServedProxy = await proxy()
    nginx.put("rhel/images/boot.iso", boot_iso)
    url = nginx.url("rhel/images/boot.iso")
    status, body = await post_json(p, "/tftp/fetch_and_process", {"extract": redhat_extract(url)})
    assert status == 200 and body["status"] == "published", body
    from tftproxy.store import BootStore

    rec = BootStore(p.root, create=False).records.record(f"{R}/vmlinuz")
    assert rec is not None and rec.current is not None
    assert rec.current.verified == f"sha256 matches .treeinfo in {R}/boot.iso"
    assert rec.current.member == "images/pxeboot/vmlinuz"
    before = {n: media.sha256(p.root / R / n) for n in media.ISO_FILES}

    wrong = "0" * 64
    tree = media.iso_tree(tmp_path / "bad", media.DI_LINUX, initrd,
                          checksums={"images/pxeboot/initrd.img": wrong})
    nginx.put("rhel/images/boot.iso", media.make_iso(tree, tmp_path / "bad.iso").read_bytes(),
              mtime=os.path.getmtime(nginx.www / "rhel/images/boot.iso") + 10)
    status, text = await post_json(p, "/tftp/fetch_and_process",
                                   {"extract": redhat_extract(url)})
    assert status == 502, text
    assert "member images/pxeboot/initrd.img" in text and wrong in text
    assert media.sha256(initrd) in text and "previous version kept" in text
    assert {n: media.sha256(p.root / R / n) for n in media.ISO_FILES} == before
    assert universe_status(p, f"{R}/boot.iso")["current"] == 1


async def test_the_archive_is_checked_against_sha256sums_beside_it(proxy, nginx: Nginx,
                                                                   boot_iso) -> None:
    p: ServedProxy = await proxy()
    nginx.put("ubuntu/24.04/live.iso", boot_iso)
    nginx.put("ubuntu/24.04/SHA256SUMS", f"{'1' * 64} *live.iso\n".encode())
    spec = {**redhat_extract(nginx.url("ubuntu/24.04/live.iso")), "destination": f"{R}/x.iso"}
    status, text = await post_json(p, "/tftp/fetch_and_process", {"extract": spec})
    assert status == 502, text
    assert "1" * 64 in text and hashlib.sha256(boot_iso).hexdigest() in text
    assert not (p.root / R).exists() or not any((p.root / R).iterdir())
    nginx.put("ubuntu/24.04/SHA256SUMS",
              f"{hashlib.sha256(boot_iso).hexdigest()} *live.iso\n".encode())
    status, body = await post_json(p, "/tftp/fetch_and_process", {"extract": spec})
    assert status == 200, body
    from tftproxy.store import BootStore

    rec = BootStore(p.root, create=False).records.record(f"{R}/x.iso")
    assert rec is not None and rec.current is not None
    assert rec.current.verified is not None and "SHA256SUMS" in rec.current.verified


def tgz(entries: list[tuple[tarfile.TarInfo, bytes]]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for info, data in entries:
            info.size = len(data) if info.isreg() else 0
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return out.getvalue()


def entry(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    return info


@pytest.mark.parametrize(("member", "why"), [
    ("pxelinux.0", "member pxelinux.0 is a symbolic link"),  # Debian's own top-level links
    ("debian-installer/amd64", "member debian-installer/amd64 is a directory"),
    ("debian-installer/amd64/nothing", "archive members not found: "
                                       "debian-installer/amd64/nothing"),
])
async def test_members_that_are_not_plain_files_are_refused(proxy, nginx: Nginx, netboot,
                                                            member: str, why: str) -> None:
    p: ServedProxy = await proxy()
    nginx.put("d/netboot.tar.gz", netboot)
    spec = debian_extract(nginx.url("d/netboot.tar.gz"))
    spec["files"][f"{U}/pxelinux.0"] = member
    status, text = await post_json(p, "/tftp/fetch_and_process", {"extract": spec})
    assert status == 502 and why in text, text
    assert not (p.root / U / "linux").exists()


@pytest.mark.parametrize(("entries", "why"), [
    ([(entry("a/dev", tarfile.CHRTYPE), b"")], "member a/dev is a device"),
    ([(entry("a/real"), b"x"), (entry("a/hard", tarfile.LNKTYPE, "a/real"), b"")],
     "member a/hard is a hard link (to a/real)"),
    ([(entry("/a/abs"), b"x")], "leaves the archive's root"),
    # Names are exact: x/../a/up is not a/up.
    ([(entry("x/../a/up"), b"x")], "archive members not found: a/up"),
])
async def test_unsafe_tar_members_are_refused(proxy, nginx: Nginx, entries, why: str) -> None:
    p: ServedProxy = await proxy()
    nginx.put("t/bad.tgz", tgz(entries))
    wanted = {"a/dev": "a/dev", "a/hard": "a/hard", "/a/abs": "a/abs", "x/../a/up": "a/up"}
    member = wanted[entries[-1][0].name]
    spec = {"source": nginx.url("t/bad.tgz"), "destination": f"{U}/bad.tgz", "type": "tgz",
            "files": {f"{U}/f": member}}
    status, text = await post_json(p, "/tftp/fetch_and_process", {"extract": spec})
    assert status == 502 and why in text, text
    assert not (p.root / U / "f").exists()


async def test_the_unpacked_size_is_capped(proxy, nginx: Nginx) -> None:
    p: ServedProxy = await proxy(max_unpacked_size=1_000_000)
    nginx.put("t/bomb.tgz", tgz([(entry("zeros"), bytes(5_000_000)), (entry("late"), b"x")]))
    spec = {"source": nginx.url("t/bomb.tgz"), "destination": f"{U}/bomb.tgz", "type": "tgz",
            "files": {f"{U}/late": "late"}}
    status, text = await post_json(p, "/tftp/fetch_and_process", {"extract": spec})
    assert status == 502 and "more than max_unpacked_size (1000000 bytes)" in text, text


@pytest.mark.parametrize(("change", "why"), [
    ({"type": "zip"}, "unknown archive type: zip"),
    ({"source": ""}, "missing source"),
    ({"files": ["x"]}, "files must be a map"),
    ({"files": {f"{U}/a": "../etc/passwd"}}, "must be a relative path without '..'"),
    ({"files": {f"{U}/a": "/etc/passwd"}}, "must be a relative path without '..'"),
    ({"files": {"elsewhere/a": "x"}}, "is outside " + U),
    ({"symlinks": {f"{U}/l": "pxelinux.cfg/default"}}, "which is not one of the files"),
    ({"destination": "../x.tgz"}, "TFTP path outside of tftproot: ../x.tgz"),
    ({"destination": "/etc/x.tgz"}, "TFTP path must be relative: /etc/x.tgz"),
    ({"destination": f"{U}/.tftproxy/x.tgz"}, "is outside"),
    ({"source": "nfs://m/x.tgz"}, "nfs"),
])
async def test_bad_requests_are_400_naming_the_problem(proxy, change, why: str) -> None:
    p: ServedProxy = await proxy()
    spec = {**debian_extract("http://127.0.0.1:9/x.tgz"), **change}
    status, text = await post_json(p, "/tftp/fetch_and_process", {"extract": spec})
    assert status == 400 and why in text, text
    assert not (p.root / "bootloader-universe").exists()


@pytest.mark.parametrize(("body", "text"), [
    ("{", "Invalid JSON content in body of request: "),
    ("[1]", "Invalid JSON content in body of request: data must be a hash, not Array"),
    ('"x"', "Invalid JSON content in body of request: data must be a hash, not String"),
    ("null", "Invalid JSON content in body of request: data must be a hash, not NilClass"),
])
async def test_json_that_is_not_an_object_is_415(proxy, body: str, text: str) -> None:
    p: ServedProxy = await proxy()
    for path in ("/tftp/fetch_and_process", "/tftp/fetch_boot_file"):
        r = await p.call("POST", path, data=body, headers={"Content-Type": "application/json"})
        assert r.status == 415 and r.text.startswith(text), r.text


async def test_host_config_relies_on_the_universe_it_names(proxy, nginx: Nginx,
                                                           netboot) -> None:
    """universe_* parameters: 409 unless the universe is published from that source; then the
    host's grub2/ links straight to the universe's files (boot.efi to grubx64.efi)."""
    p: ServedProxy = await proxy()
    nginx.put("d/netboot.tar.gz", netboot)
    url = nginx.url("d/netboot.tar.gz")
    params = {"pxeconfig": "set default=0", "targetos": "debian", "release": "12",
              "arch": "x86_64", "bootfile_suffix": "x64",
              "universe_archive": f"{U}/netboot.tar.gz", "universe_kernel": f"{U}/linux",
              "universe_initrd": f"{U}/initrd.gz",
              "universe_source_digest": hashlib.sha256(url.encode()).hexdigest()}
    r = await p.foreman("POST", f"/tftp/PXEGrub2/{MAC}", params)
    assert r.status == 409 and "Download boot files for Operating System 'debian 12'" in r.text
    assert not (p.root / HOST).exists() and not (p.root / "grub2").exists()
    assert (await post_json(p, "/tftp/fetch_and_process", {"extract": debian_extract(url)}))[0] \
        == 200
    bad = {**params, "universe_source_digest": "a" * 64}
    r = await p.foreman("POST", f"/tftp/PXEGrub2/{MAC}", bad)
    assert r.status == 409 and "fetched from another source" in r.text, r.text
    r = await p.foreman("POST", f"/tftp/PXEGrub2/{MAC}", {**params, "universe_kernel": "linux"})
    assert r.status == 409 and "is not a file of " + U in r.text, r.text
    r = await p.foreman("POST", f"/tftp/PXEGrub2/{MAC}", params)
    assert (r.status, r.text) == (200, ""), r.text
    up = "../../../" + U
    assert {e.name: os.readlink(e) for e in (p.root / HOST).iterdir() if e.is_symlink()} == {
        "boot.efi": f"{up}/grubx64.efi", "boot-sb.efi": f"{up}/shimx64.efi",
        "grubx64.efi": f"{up}/grubx64.efi", "shimx64.efi": f"{up}/shimx64.efi",
        "linux": f"{up}/linux", "initrd.gz": f"{up}/initrd.gz"}
    assert media.sha256(p.root / HOST / "boot-sb.efi") == media.sha256(media.SHIM)


async def test_concurrent_requests_join_and_host_configs_wait(proxy, upstream, netboot) -> None:
    """While the archive downloads, the same request joins it (one download), and a host
    config for that universe is 409 "currently being downloaded or extracted"."""
    import threading

    from tests.helpers.upstream import Reply

    gate = threading.Event()
    upstream.routes["/netboot.tar.gz"] = lambda seen: Reply(
        body=b"" if seen.method == "HEAD" else netboot, pause_at=1000, pause=gate)
    p: ServedProxy = await proxy(fetch_wait=60)
    spec = {"extract": debian_extract(upstream.url("/netboot.tar.gz"))}
    first = asyncio.ensure_future(post_json(p, "/tftp/fetch_and_process", spec))
    second = asyncio.ensure_future(post_json(p, "/tftp/fetch_and_process", spec))
    for _ in range(200):
        if [s for s in upstream.requests_for("/netboot.tar.gz") if s.method == "GET"]:
            break
        await asyncio.sleep(0.05)
    r = await p.foreman("POST", f"/tftp/pxegrub2/{MAC}", {
        "pxeconfig": "x", "targetos": "debian", "release": "12", "arch": "x86_64"})
    assert r.status == 409 and "currently being downloaded or extracted: " + U in r.text, r.text
    gate.set()
    (s1, b1), (s2, b2) = await first, await second
    assert (s1, s2) == (200, 200) and b1 == b2 and b1["status"] == "published"
    assert [s.method for s in upstream.requests_for("/netboot.tar.gz")] == ["HEAD", "GET"]
    r = await p.foreman("POST", f"/tftp/pxegrub2/{MAC}", {
        "pxeconfig": "x", "targetos": "debian", "release": "12", "arch": "x86_64"})
    assert r.status == 200, r.text


async def test_capabilities_foreman_dispatches_on(proxy) -> None:
    p: ServedProxy = await proxy()
    r = await p.call("GET", "/v2/features")
    assert json.loads(r.text)["tftp"]["capabilities"] == [
        "bootloader_archive_iso", "bootloader_archive_tgz", "bootloader_universe",
        "bootloader_universe_boot_files"]


async def test_a_sync_revalidates_universes_by_their_archive(proxy, nginx: Nginx, netboot,
                                                             boot_iso, initrd, tmp_path) -> None:
    """Background revalidation and `sync` treat a universe as fetch_and_process would redo
    it: the archive checked conditionally, the members extracted again only when it changed
    (never one member fetched as if it were the archive)."""
    p: ServedProxy = await proxy()
    nginx.put("d/netboot.tar.gz", netboot)
    nginx.put("rhel/images/boot.iso", boot_iso)
    for extract in (debian_extract(nginx.url("d/netboot.tar.gz")),
                    redhat_extract(nginx.url("rhel/images/boot.iso"))):
        status, body = await post_json(p, "/tftp/fetch_and_process", {"extract": extract})
        assert status == 200, body
    run = await p.files.sync.sync()
    assert await run.wait(60)
    assert {s: o.line() for s, o in run.outcomes.items()} == {
        f"{U}/netboot.tar.gz": f"unchanged: {U}/netboot.tar.gz generation 1",
        f"{R}/boot.iso": f"unchanged: {R}/boot.iso generation 1"}
    assert [s for m, s, _ in nginx.log_lines("/rhel/images/boot.iso") if m == "GET"] == [200, 304]
    # A respun ISO: a new universe, extracted again from the new image, in one generation.
    tree = media.iso_tree(tmp_path / "new", media.DI_LINUX, initrd, grub=media.GRUBNET)
    nginx.put("rhel/images/boot.iso", media.make_iso(tree, tmp_path / "new.iso").read_bytes(),
              mtime=os.path.getmtime(nginx.www / "rhel/images/boot.iso") + 10)
    run = await p.files.sync.sync([f"{R}/boot.iso"])
    assert await run.wait(60)
    assert run.outcomes[f"{R}/boot.iso"].line() == f"updated: {R}/boot.iso generation 1 -> 2"
    assert os.readlink(p.root / R / "boot.efi") == "grubx64.efi"
    assert (p.root / R / "boot.iso").read_bytes() == (tmp_path / "new.iso").read_bytes()
    gen = universe_status(p, f"{R}/boot.iso")
    assert gen["current"] == 2 and len(gen["generations"][-1]["members"]) == len(
        gen["generations"][0]["members"])
