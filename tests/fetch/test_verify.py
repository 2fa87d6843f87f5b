"""Verification against the distribution's checksums: .treeinfo and SHA256SUMS (issue #5).

Parsers and URL rules are tested on real-format samples; finding manifests runs against nginx,
whose access log shows which URLs were asked for and how often.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from tests.helpers.nginx import Nginx
from tftproxy import assemble
from tftproxy.errors import UpstreamError
from tftproxy.fetch.http import Fetcher
from tftproxy.fetch.verify import (
    Manifest,
    ManifestCache,
    ManifestError,
    VerificationError,
    candidate_urls,
    check,
    find_manifest,
    parse_sha256sums,
    parse_treeinfo,
    verify,
)
from tftproxy.settings.model import Settings


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


KERNEL = b"\x7fkernel bzImage " * 4000
INITRD = b"\x1f\x8binitrd cpio " * 6000

# A productmd 1.2 .treeinfo as lorax/pungi write one for a Rocky/Alma/CentOS Stream BaseOS
# tree: sections sorted, [general] kept for pre-productmd readers, [checksums] first.
TREEINFO_REST = """\
[general]
; WARNING.0 = This section provides compatibility with pre-productmd treeinfos.
; WARNING.1 = Read productmd documentation for details about new format.
arch = x86_64
family = Rocky Linux
name = Rocky Linux 9.4
packagedir = Packages
platforms = x86_64,xen
repository = .
timestamp = 1714885440
variant = BaseOS
variants = BaseOS
version = 9.4

[header]
type = productmd.treeinfo
version = 1.2

[images-x86_64]
efiboot.img = images/efiboot.img
initrd = images/pxeboot/initrd.img
kernel = images/pxeboot/vmlinuz

[images-xen]
initrd = images/pxeboot/initrd.img
kernel = images/pxeboot/vmlinuz

[release]
name = Rocky Linux
short = Rocky
version = 9.4

[stage2]
mainimage = images/install.img

[tree]
arch = x86_64
build_timestamp = 1714885440
platforms = x86_64,xen
variants = BaseOS

[variant-BaseOS]
id = BaseOS
name = BaseOS
packages = Packages
repository = .
type = variant
uid = BaseOS
"""


def treeinfo(checksums: dict[str, str]) -> str:
    """A .treeinfo whose [checksums] holds ``checksums`` (path -> "algo:hex")."""
    lines = "".join(f"{path} = {value}\n" for path, value in sorted(checksums.items()))
    return f"[checksums]\n{lines}\n{TREEINFO_REST}"


def sha256sums(files: dict[str, str]) -> str:
    """Debian d-i images/SHA256SUMS: `<hex>  ./<path>`, sorted by path, two spaces."""
    return "".join(f"{digest}  ./{path}\n" for path, digest in sorted(files.items()))


H = {name: sha(name.encode()) for name in (
    "boot.iso", "efiboot.img", "install.img", "initrd.img", "vmlinuz", "BOOTX64.EFI",
    "cd_info", "cd_initrd", "cd_vmlinuz", "hd_boot", "hd_initrd", "hd_vmlinuz", "adtxt",
    "nb_initrd", "nb_linux", "nb_pxelinux", "mini.iso", "netboot.tar.gz", "pxelinux.0",
    "udeb.list", "MANIFEST",
)}

DEBIAN_SUMS = {
    "MANIFEST": H["MANIFEST"],
    "cdrom/debian-cd_info.tar.gz": H["cd_info"],
    "cdrom/initrd.gz": H["cd_initrd"],
    "cdrom/vmlinuz": H["cd_vmlinuz"],
    "hd-media/boot.img.gz": H["hd_boot"],
    "hd-media/initrd.gz": H["hd_initrd"],
    "hd-media/vmlinuz": H["hd_vmlinuz"],
    "netboot/debian-installer/amd64/boot-screens/adtxt.cfg": H["adtxt"],
    "netboot/debian-installer/amd64/initrd.gz": H["nb_initrd"],
    "netboot/debian-installer/amd64/linux": H["nb_linux"],
    "netboot/debian-installer/amd64/pxelinux.0": H["nb_pxelinux"],
    "netboot/mini.iso": H["mini.iso"],
    "netboot/netboot.tar.gz": H["netboot.tar.gz"],
    "netboot/pxelinux.0": H["pxelinux.0"],
    "udeb.list": H["udeb.list"],
}

D_I = "debian/dists/bookworm/main/installer-amd64/current/images"


# --- parsers -----------------------------------------------------------------------------------


def test_productmd_treeinfo_gives_its_sha256_checksums_relative_to_the_tree_root() -> None:
    text = treeinfo({
        "images/boot.iso": f"sha256:{H['boot.iso']}",
        "images/efiboot.img": f"sha256:{H['efiboot.img']}",
        "images/install.img": f"sha256:{H['install.img']}",
        "images/pxeboot/initrd.img": f"sha256:{H['initrd.img'].upper()}",
        "images/pxeboot/vmlinuz": f"sha256:{H['vmlinuz']}",
    })
    url = "http://m/rocky/9.4/BaseOS/x86_64/os/.treeinfo"
    m = parse_treeinfo(text, url)
    assert m == Manifest("treeinfo", url, "http://m/rocky/9.4/BaseOS/x86_64/os/", {
        "images/boot.iso": H["boot.iso"],
        "images/efiboot.img": H["efiboot.img"],
        "images/install.img": H["install.img"],
        "images/pxeboot/initrd.img": H["initrd.img"],  # lower-cased
        "images/pxeboot/vmlinuz": H["vmlinuz"],
    })
    assert m.label == ".treeinfo"


def test_treeinfo_keys_keep_their_case_and_only_sha256_counts() -> None:
    text = treeinfo({
        "EFI/BOOT/BOOTX64.EFI": f"sha256:{H['BOOTX64.EFI']}",
        "./images/pxeboot/vmlinuz": f"SHA256:{H['vmlinuz']}",
        "images/pxeboot/initrd.img": "md5:" + "0" * 32,
        "images/efiboot.img": "sha1:" + "1" * 40,
    })
    m = parse_treeinfo(text, "http://m/os/treeinfo")
    assert m.entries == {"EFI/BOOT/BOOTX64.EFI": H["BOOTX64.EFI"],
                         "images/pxeboot/vmlinuz": H["vmlinuz"]}
    assert m.label == "treeinfo"
    assert m.kind == "treeinfo"


def test_a_treeinfo_without_checksums_is_a_tree_root_that_names_nothing() -> None:
    # What pre-productmd trees (CentOS 5 era) carry: [general] and [images-*] only.
    text = ("[general]\nfamily = CentOS\ntimestamp = 1238419547.24\nvariant = \n"
            "totaldiscs = 1\nversion = 5.3\ndiscnum = 1\npackagedir = CentOS\narch = x86_64\n\n"
            "[images-x86_64]\nkernel = images/pxeboot/vmlinuz\n"
            "initrd = images/pxeboot/initrd.img\n")
    m = parse_treeinfo(text, "http://m/centos/5.3/os/x86_64/.treeinfo")
    assert m.entries == {}
    assert m.base_url == "http://m/centos/5.3/os/x86_64/"
    assert m.covers("http://m/centos/5.3/os/x86_64/images/pxeboot/vmlinuz")
    assert m.expected("http://m/centos/5.3/os/x86_64/images/pxeboot/vmlinuz") is None


@pytest.mark.parametrize(("text", "message"), [
    ("<html><head><title>404 Not Found</title></head></html>\n", "not a treeinfo file"),
    ("[main]\ncachedir=/var/cache/yum\n", "neither a [header] nor a [general] section"),
    (treeinfo({"images/pxeboot/vmlinuz": "sha256:abc123"}), "is not a sha256 (64 hex digits)"),
    (treeinfo({"images/pxeboot/vmlinuz": H["vmlinuz"]}), "is not <algorithm>:<hex>"),
    ("[header]\nversion = 1.2\n[checksums]\na = sha256:" + "a" * 64 + "\na = sha256:" + "b" * 64,
     "not a treeinfo file: While reading from"),
])
def test_garbage_is_not_a_treeinfo(text: str, message: str) -> None:
    with pytest.raises(ManifestError) as info:
        parse_treeinfo(text, "http://m/os/.treeinfo")
    assert message in str(info.value)
    assert str(info.value).startswith("http://m/os/.treeinfo: ")
    assert "\n" not in str(info.value)


def test_debian_installer_sha256sums_gives_paths_without_the_dot_slash() -> None:
    text = sha256sums(DEBIAN_SUMS)
    assert text.splitlines()[9] == (
        f"{H['nb_linux']}  ./netboot/debian-installer/amd64/linux")
    url = f"http://deb.example/{D_I}/SHA256SUMS"
    m = parse_sha256sums(text, url)
    assert m.kind == "SHA256SUMS"
    assert m.url == url
    assert m.base_url == f"http://deb.example/{D_I}/"
    assert m.entries == DEBIAN_SUMS
    assert m.expected(f"http://deb.example/{D_I}/netboot/debian-installer/amd64/linux") == H[
        "nb_linux"]


def test_sha256sums_accepts_binary_marks_bsd_lines_and_escaped_names() -> None:
    text = (f"{H['nb_linux'].upper()} *./netboot/debian-installer/amd64/linux\r\n"
            f"SHA256 (netboot/pxelinux.0) = {H['pxelinux.0']}\n"
            f"SHA512 (netboot/mini.iso) = {'c' * 128}\n"
            f"\\{H['udeb.list']}  odd\\\\name\n"
            "\n# comment\n")
    m = parse_sha256sums(text, "http://m/images/SHA256SUMS")
    assert m.entries == {"netboot/debian-installer/amd64/linux": H["nb_linux"],
                         "netboot/pxelinux.0": H["pxelinux.0"],
                         "odd\\name": H["udeb.list"]}


@pytest.mark.parametrize(("text", "message"), [
    ("<!DOCTYPE html>\n<html><body>Not Found</body></html>\n", "line 1 is '<!DOCTYPE html>'"),
    (f"{'a' * 40}  ./netboot/debian-installer/amd64/linux\n", "160-bit digest, not a sha256"),
    (f"{'a' * 32}  ./netboot/netboot.tar.gz\n", "128-bit digest, not a sha256"),
    ("", "it has no sha256 lines"),
    (f"{'a' * 64}  ./x\n{'b' * 64}  x\n", "names two different sha256 for x"),
])
def test_garbage_is_not_a_sha256sums(text: str, message: str) -> None:
    with pytest.raises(ManifestError) as info:
        parse_sha256sums(text, "http://m/images/SHA256SUMS")
    assert message in str(info.value)
    assert str(info.value).startswith("http://m/images/SHA256SUMS: ")


def test_expected_compares_normalised_paths_on_the_same_origin() -> None:
    m = parse_sha256sums(
        f"{H['nb_linux']}  ./netboot/debian-installer/amd64/linux\n"
        f"{H['nb_initrd']}  ./20230607+deb12u5/initrd.gz\n",
        "http://Deb.Example:80/d-i/images/SHA256SUMS")
    linux = H["nb_linux"]
    assert m.expected("http://deb.example/d-i/images/netboot/debian-installer/amd64/linux") == linux
    assert m.expected("HTTP://DEB.EXAMPLE/d-i/images/netboot/x/../debian-installer/amd64/linux"
                      "?mirror=1#frag") == linux
    assert m.expected("http://deb.example/d-i//images/./netboot/debian-installer/amd64/linux") \
        == linux
    assert m.expected("http://deb.example/d-i/images/20230607%2Bdeb12u5/initrd.gz") \
        == H["nb_initrd"]
    # Not listed, outside the tree, another origin: nothing to compare with.
    assert m.expected("http://deb.example/d-i/images/netboot/netboot.tar.gz") is None
    assert m.expected("http://deb.example/d-i/netboot/debian-installer/amd64/linux") is None
    assert m.expected("https://deb.example/d-i/images/netboot/debian-installer/amd64/linux") \
        is None
    assert m.expected("http://deb.example:8080/d-i/images/netboot/debian-installer/amd64/linux") \
        is None
    assert m.expected("http://other/d-i/images/netboot/debian-installer/amd64/linux") is None
    assert m.expected("http://deb.example/d-i/images/netboot/debian-installer/amd64/") is None
    assert m.expected("nfs://deb.example/d-i/images/netboot/debian-installer/amd64/linux") is None


# --- candidate URLs ----------------------------------------------------------------------------


def test_candidates_for_a_red_hat_tree_walk_up_to_the_host_root() -> None:
    got = candidate_urls("http://m:8080/rocky/9/BaseOS/x86_64/os/images/pxeboot/vmlinuz?x=1#y")
    dirs = ["rocky/9/BaseOS/x86_64/os/images/pxeboot/", "rocky/9/BaseOS/x86_64/os/images/",
            "rocky/9/BaseOS/x86_64/os/", "rocky/9/BaseOS/x86_64/", "rocky/9/BaseOS/",
            "rocky/9/", "rocky/", ""]
    expected: list[tuple[str, str]] = []
    for d in dirs:
        expected += [("treeinfo", f"http://m:8080/{d}.treeinfo"),
                     ("treeinfo", f"http://m:8080/{d}treeinfo")]
        if d.endswith("/images/"):
            expected.append(("SHA256SUMS", f"http://m:8080/{d}SHA256SUMS"))
    assert got == expected
    # The tree root (where Rocky's .treeinfo is) comes before anything above it.
    assert got.index(("treeinfo", "http://m:8080/rocky/9/BaseOS/x86_64/os/.treeinfo")) == 5


def test_candidates_for_a_debian_tree_include_sha256sums_in_images() -> None:
    url = f"http://deb.example/{D_I}/netboot/debian-installer/amd64/linux"
    got = candidate_urls(url)
    base = f"http://deb.example/{D_I}/"
    assert got[:9] == [
        ("treeinfo", f"{base}netboot/debian-installer/amd64/.treeinfo"),
        ("treeinfo", f"{base}netboot/debian-installer/amd64/treeinfo"),
        ("treeinfo", f"{base}netboot/debian-installer/.treeinfo"),
        ("treeinfo", f"{base}netboot/debian-installer/treeinfo"),
        ("treeinfo", f"{base}netboot/.treeinfo"),
        ("treeinfo", f"{base}netboot/treeinfo"),
        ("treeinfo", f"{base}.treeinfo"),
        ("treeinfo", f"{base}treeinfo"),
        ("SHA256SUMS", f"{base}SHA256SUMS"),
    ]
    # max_levels bounds the walk: 8 directories, so the host root of this deep path is not
    # reached, and only the one `images` directory gets a SHA256SUMS probe.
    assert len(got) == 8 * 2 + 1
    assert got[-1] == ("treeinfo", "http://deb.example/debian/dists/bookworm/treeinfo")


def test_candidate_rules() -> None:
    ubuntu = ("http://archive.ubuntu.com/ubuntu/dists/noble/main/installer-amd64/current/"
              "legacy-images/netboot/ubuntu-installer/amd64/linux")
    assert ("SHA256SUMS", "http://archive.ubuntu.com/ubuntu/dists/noble/main/installer-amd64/"
            "current/legacy-images/SHA256SUMS") in candidate_urls(ubuntu)
    assert candidate_urls("http://m/vmlinuz") == [("treeinfo", "http://m/.treeinfo"),
                                                  ("treeinfo", "http://m/treeinfo")]
    assert candidate_urls("https://m/a/b/c/vmlinuz", max_levels=2) == [
        ("treeinfo", "https://m/a/b/c/.treeinfo"), ("treeinfo", "https://m/a/b/c/treeinfo"),
        ("treeinfo", "https://m/a/b/.treeinfo"), ("treeinfo", "https://m/a/b/treeinfo")]
    # Dot segments cannot walk the search off the host or out of the path.
    assert candidate_urls("http://m/../../etc/x/../vmlinuz") == candidate_urls(
        "http://m/etc/vmlinuz")
    assert candidate_urls("nfs://m/os/images/pxeboot/vmlinuz") == []
    assert candidate_urls("not a url") == []
    for _, url in candidate_urls("http://user@[::1]:81/os/images/pxeboot/vmlinuz"):
        assert url.startswith("http://user@[::1]:81/")


# --- check -------------------------------------------------------------------------------------

TREE = "http://m/os/"
TI = parse_treeinfo(treeinfo({"images/pxeboot/vmlinuz": f"sha256:{sha(KERNEL)}"}),
                    TREE + ".treeinfo")


def test_check_match_mismatch_and_off() -> None:
    url = TREE + "images/pxeboot/vmlinuz"
    v = check(TI, url, sha(KERNEL).upper(), "auto", "boot/x-vmlinuz")
    assert (v.status, v.how, v.manifest_url) == (
        "verified", "sha256 matches .treeinfo at http://m/os/.treeinfo", TREE + ".treeinfo")
    assert check(TI, url, sha(KERNEL), "require", "boot/x-vmlinuz").status == "verified"
    bad = sha(b"half-synced kernel")
    for mode in ("auto", "require"):
        with pytest.raises(VerificationError) as info:
            check(TI, url, bad, mode, "boot/x-vmlinuz")
        assert str(info.value) == (
            f"boot/x-vmlinuz: checksum mismatch for http://m/os/images/pxeboot/vmlinuz: "
            f".treeinfo at http://m/os/.treeinfo says sha256 {sha(KERNEL)}, downloaded file has "
            f"{bad}; the mirror may be syncing, try again later")
        # The fetch job's failure path handles it: nothing published, previous version kept.
        assert isinstance(info.value, UpstreamError)
        assert info.value.reason == str(info.value)
        assert not info.value.retryable
    off = check(TI, url, bad, "off", "boot/x-vmlinuz")
    assert (off.status, off.how) == ("off", "verification off")


def test_check_without_an_entry_or_a_manifest() -> None:
    initrd = TREE + "images/pxeboot/initrd.img"
    v = check(TI, initrd, sha(INITRD), "auto", "boot/x-initrd.img")
    assert v.status == "unverified"
    assert v.how == ("images/pxeboot/initrd.img is not listed with a sha256 in .treeinfo at "
                     "http://m/os/.treeinfo")
    with pytest.raises(VerificationError, match=r"^boot/x-initrd\.img: cannot verify "
                       r"http://m/os/images/pxeboot/initrd\.img: images/pxeboot/initrd\.img is "
                       r"not listed .* verify is require$"):
        check(TI, initrd, sha(INITRD), "require", "boot/x-initrd.img")
    elsewhere = check(TI, "http://m/other/vmlinuz", sha(KERNEL), "auto", "boot/y")
    assert elsewhere.how == "http://m/other/vmlinuz is outside the tree of .treeinfo at " \
        "http://m/os/.treeinfo"

    none = check(None, TREE + "images/pxeboot/vmlinuz", sha(KERNEL), "auto", "boot/x-vmlinuz")
    assert none.status == "unverified"
    assert none.manifest_url is None
    assert none.how == (
        "no checksum manifest found (looked for .treeinfo and treeinfo from "
        "http://m/os/images/pxeboot/ up to http://m/, and http://m/os/images/SHA256SUMS)")
    with pytest.raises(VerificationError) as info:
        check(None, TREE + "images/pxeboot/vmlinuz", sha(KERNEL), "require", "boot/x-vmlinuz")
    assert str(info.value).startswith(
        "boot/x-vmlinuz: no checksum manifest found for http://m/os/images/pxeboot/vmlinuz "
        "(looked for .treeinfo and treeinfo from http://m/os/images/pxeboot/")
    assert str(info.value).endswith("; verify is require")


class DictSource:
    """A TextSource from a dict; records what was asked for."""

    def __init__(self, texts: dict[str, str]) -> None:
        self.texts = texts
        self.asked: list[str] = []

    async def get_text(self, url: str, limit: int) -> str | None:
        self.asked.append(url)
        return self.texts.get(url)


async def test_find_manifest_prefers_one_naming_the_file_over_a_nearer_one() -> None:
    # A nested tree whose .treeinfo lists nothing for the file, inside a d-i images dir whose
    # SHA256SUMS does: the walk goes on past the first, and falls back to it only if needed.
    file_url = "http://m/images/sub/netboot/linux"
    nearer = treeinfo({"other": f"sha256:{'1' * 64}"})
    source = DictSource({"http://m/images/sub/.treeinfo": nearer,
                         "http://m/images/SHA256SUMS": f"{H['nb_linux']}  ./sub/netboot/linux\n"})
    m = await find_manifest(source, file_url)
    assert m is not None
    assert (m.kind, m.url) == ("SHA256SUMS", "http://m/images/SHA256SUMS")
    assert source.asked == [u for _, u in candidate_urls(file_url)][:7]

    source = DictSource({"http://m/images/sub/.treeinfo": nearer})
    m = await find_manifest(source, "http://m/images/sub/netboot/linux")
    assert m is not None
    assert m.url == "http://m/images/sub/.treeinfo"
    assert source.asked == [u for _, u in candidate_urls(file_url)]

    assert await find_manifest(DictSource({}), file_url) is None


# --- against nginx -----------------------------------------------------------------------------


@pytest.fixture
async def texts(make_settings: Callable[..., Settings]) -> AsyncIterator[Fetcher]:
    async with assemble.fetcher(make_settings()) as source:
        yield source


def red_hat_tree(nginx: Nginx, base: str, checksums: dict[str, str], name: str = ".treeinfo"
                 ) -> None:
    nginx.put(f"{base}/images/pxeboot/vmlinuz", KERNEL)
    nginx.put(f"{base}/images/pxeboot/initrd.img", INITRD)
    nginx.put(f"{base}/{name}", treeinfo(checksums).encode())


def gets(nginx: Nginx, uri: str) -> list[int]:
    """Statuses of the GETs of ``uri`` in nginx's log."""
    return [status for method, status, _ in nginx.log_lines(uri) if method == "GET"]


async def test_a_red_hat_set_is_verified_against_one_manifest_fetched_once(
    nginx: Nginx, texts: Fetcher
) -> None:
    base = "rocky/9/BaseOS/x86_64/os"
    red_hat_tree(nginx, base, {"images/pxeboot/vmlinuz": f"sha256:{sha(KERNEL)}",
                               "images/pxeboot/initrd.img": f"sha256:{sha(INITRD)}",
                               "images/install.img": f"sha256:{H['install.img']}"})
    cache = ManifestCache(texts)
    kernel, initrd = (nginx.url(f"{base}/images/pxeboot/{f}") for f in ("vmlinuz", "initrd.img"))
    vk = await verify(cache, kernel, sha(KERNEL), "auto", "boot/r-vmlinuz")
    vi = await verify(cache, initrd, sha(INITRD), "require", "boot/r-initrd.img")
    where = f".treeinfo at {nginx.url(base + '/.treeinfo')}"
    assert (vk.status, vk.how) == ("verified", f"sha256 matches {where}")
    assert (vi.status, vi.how) == ("verified", f"sha256 matches {where}")
    assert gets(nginx, f"/{base}/.treeinfo") == [200]
    # The probes below the tree root were made once, for the first member only.
    assert gets(nginx, f"/{base}/images/pxeboot/.treeinfo") == [404]
    assert gets(nginx, f"/{base}/images/SHA256SUMS") == [404]
    assert gets(nginx, f"/{base}/treeinfo") == []  # found at .treeinfo: nothing more asked
    assert len(cache.manifests) == 1


async def test_a_mismatch_names_the_file_the_expected_and_the_actual_checksum(
    nginx: Nginx, texts: Fetcher
) -> None:
    old_kernel = b"the kernel before the respin"
    red_hat_tree(nginx, "os", {"images/pxeboot/vmlinuz": f"sha256:{sha(old_kernel)}"})
    url = nginx.url("os/images/pxeboot/vmlinuz")
    with pytest.raises(VerificationError) as info:
        await verify(ManifestCache(texts), url, sha(KERNEL), "auto", "boot/x-vmlinuz")
    assert str(info.value) == (
        f"boot/x-vmlinuz: checksum mismatch for {url}: .treeinfo at "
        f"{nginx.url('os/.treeinfo')} says sha256 {sha(old_kernel)}, downloaded file has "
        f"{sha(KERNEL)}; the mirror may be syncing, try again later")


async def test_no_manifest_is_unverified_under_auto_and_an_error_under_require(
    nginx: Nginx, texts: Fetcher
) -> None:
    nginx.put("pub/boot/vmlinuz", KERNEL)
    url = nginx.url("pub/boot/vmlinuz")
    assert await find_manifest(texts, url) is None
    # Every level up to the host root was asked for, and nothing off the host.
    for d in ("/pub/boot/", "/pub/", "/"):
        assert gets(nginx, f"{d}.treeinfo") == [404]
        assert gets(nginx, f"{d}treeinfo") == [404]
    nginx.put("pub/boot/initrd.img", INITRD)
    cache = ManifestCache(texts)
    v = await verify(cache, url, sha(KERNEL), "auto", "boot/p-vmlinuz")
    assert v.status == "unverified"
    assert v.how.startswith("no checksum manifest found (looked for .treeinfo and treeinfo from ")
    vi = await verify(cache, nginx.url("pub/boot/initrd.img"), sha(INITRD), "auto", "boot/p-i")
    assert vi.status == "unverified"
    # The second member of the set did not repeat the probes the first one made.
    assert gets(nginx, "/pub/.treeinfo") == [404, 404]
    with pytest.raises(VerificationError, match=r"^boot/p-vmlinuz: no checksum manifest found "
                       r"for http://127\.0\.0\.1:\d+/pub/boot/vmlinuz \(looked for .*; verify "
                       r"is require$"):
        await verify(ManifestCache(texts), url, sha(KERNEL), "require", "boot/p-vmlinuz")
    off = await verify(ManifestCache(texts), url, sha(KERNEL), "off", "boot/p-vmlinuz")
    assert off.status == "off"
    assert gets(nginx, "/pub/boot/.treeinfo") == [404, 404, 404]  # off asked for nothing more
    assert gets(nginx, "/treeinfo") == [404, 404, 404]


async def test_a_manifest_naming_only_some_files(nginx: Nginx, texts: Fetcher) -> None:
    red_hat_tree(nginx, "os", {"images/pxeboot/vmlinuz": f"sha256:{sha(KERNEL)}",
                               "images/pxeboot/initrd.img": "md5:" + "e" * 32})
    kernel, initrd = (nginx.url(f"os/images/pxeboot/{f}") for f in ("vmlinuz", "initrd.img"))
    cache = ManifestCache(texts)
    assert (await verify(cache, kernel, sha(KERNEL), "auto", "boot/k")).status == "verified"
    v = await verify(cache, initrd, sha(INITRD), "auto", "boot/i")
    assert (v.status, v.manifest_url) == ("unverified", nginx.url("os/.treeinfo"))
    assert v.how == (f"images/pxeboot/initrd.img is not listed with a sha256 in .treeinfo at "
                     f"{nginx.url('os/.treeinfo')}")
    with pytest.raises(VerificationError) as info:
        await verify(cache, initrd, sha(INITRD), "require", "boot/i")
    assert str(info.value) == (
        f"boot/i: cannot verify {initrd}: images/pxeboot/initrd.img is not listed with a sha256 "
        f"in .treeinfo at {nginx.url('os/.treeinfo')}; verify is require")
    # The cache kept to the tree's own manifest instead of searching above it for the initrd.
    assert gets(nginx, "/os/.treeinfo") == [200]
    assert gets(nginx, "/.treeinfo") == []


async def test_treeinfo_without_the_dot_is_found_where_dotfiles_are_denied(
    tmp_path: Path, make_settings: Callable[..., Settings]
) -> None:
    server = Nginx(tmp_path / "nodot", extra=r"location ~ /\. { deny all; }")
    try:
        red_hat_tree(server, "centos/os", {"images/pxeboot/vmlinuz": f"sha256:{sha(KERNEL)}"},
                     name="treeinfo")
        server.put("centos/os/.treeinfo", b"denied anyway")
        url = server.url("centos/os/images/pxeboot/vmlinuz")
        async with assemble.fetcher(make_settings()) as source:
            m = await find_manifest(source, url)
        assert m is not None
        assert (m.url, m.label, m.base_url) == (
            server.url("centos/os/treeinfo"), "treeinfo", server.url("centos/os/"))
        assert gets(server, "/centos/os/.treeinfo") == [403]
        assert check(m, url, sha(KERNEL), "require", "boot/c").how == (
            f"sha256 matches treeinfo at {server.url('centos/os/treeinfo')}")
    finally:
        server.stop()


async def test_debian_sha256sums_in_images_verifies_the_netboot_kernel_and_initrd(
    nginx: Nginx, texts: Fetcher
) -> None:
    d = f"{D_I}/netboot/debian-installer/amd64"
    nginx.put(f"{d}/linux", KERNEL)
    nginx.put(f"{d}/initrd.gz", INITRD)
    sums = dict(DEBIAN_SUMS)
    sums["netboot/debian-installer/amd64/linux"] = sha(KERNEL)
    stale = b"yesterday's initrd"
    sums["netboot/debian-installer/amd64/initrd.gz"] = sha(stale)
    nginx.put(f"{D_I}/SHA256SUMS", sha256sums(sums).encode())
    cache = ManifestCache(texts)
    linux = await verify(cache, nginx.url(f"{d}/linux"), sha(KERNEL), "require", "boot/d-linux")
    assert linux.how == f"sha256 matches SHA256SUMS at {nginx.url(D_I + '/SHA256SUMS')}"
    with pytest.raises(VerificationError) as info:
        await verify(cache, nginx.url(f"{d}/initrd.gz"), sha(INITRD), "auto", "boot/d-initrd.gz")
    assert str(info.value) == (
        f"boot/d-initrd.gz: checksum mismatch for {nginx.url(d + '/initrd.gz')}: SHA256SUMS at "
        f"{nginx.url(D_I + '/SHA256SUMS')} says sha256 {sha(stale)}, downloaded file has "
        f"{sha(INITRD)}; the mirror may be syncing, try again later")
    assert gets(nginx, f"/{D_I}/SHA256SUMS") == [200]
    # .treeinfo probes come first at each level, and were not repeated for the second file.
    assert gets(nginx, f"/{d}/.treeinfo") == [404]
    assert gets(nginx, f"/{D_I}/.treeinfo") == [404]


async def test_soft_404_pages_are_skipped_and_the_search_goes_on(
    tmp_path: Path, make_settings: Callable[..., Settings]
) -> None:
    # Some mirrors answer every missing path with 200 and an HTML page.
    server = Nginx(tmp_path / "soft", extra="error_page 404 =200 /notfound.html;")
    try:
        server.put("notfound.html", b"<!DOCTYPE html>\n<html><body>No such file</body></html>\n")
        d = f"{D_I}/netboot/debian-installer/amd64"
        server.put(f"{d}/linux", KERNEL)
        server.put(f"{D_I}/SHA256SUMS",
                   sha256sums({"netboot/debian-installer/amd64/linux": sha(KERNEL)}).encode())
        async with assemble.fetcher(make_settings()) as source:
            m = await find_manifest(source, server.url(f"{d}/linux"))
        assert m is not None
        assert m.url == server.url(f"{D_I}/SHA256SUMS")
        assert m.expected(server.url(f"{d}/linux")) == sha(KERNEL)
    finally:
        server.stop()


async def test_a_server_error_on_a_candidate_is_an_error_naming_the_url(
    tmp_path: Path, make_settings: Callable[..., Settings]
) -> None:
    server = Nginx(tmp_path / "err", extra="location = /os/.treeinfo { return 503; }")
    try:
        red_hat_tree(server, "os", {"images/pxeboot/vmlinuz": f"sha256:{sha(KERNEL)}"})
        url = server.url("os/images/pxeboot/vmlinuz")
        async with assemble.fetcher(make_settings(retries=1, retry_backoff=0.01)) as source:
            with pytest.raises(UpstreamError) as info:
                await find_manifest(source, url)
            assert str(info.value) == (f"{server.url('os/.treeinfo')}: HTTP 503 Service "
                                       "Temporarily Unavailable (after 2 attempts)")
            assert gets(server, "/os/.treeinfo") == [503, 503]
            # For a fetch job that is a "try again later", in auto mode too.
            with pytest.raises(VerificationError) as failed:
                await verify(ManifestCache(source), url, sha(KERNEL), "auto", "boot/e")
            assert str(failed.value).startswith(
                f"boot/e: cannot look for checksums of {url}: {server.url('os/.treeinfo')}: "
                "HTTP 503")
            assert str(failed.value).endswith("; try again later")
    finally:
        server.stop()


async def test_an_oversized_manifest_is_refused(nginx: Nginx, texts: Fetcher) -> None:
    nginx.put("big/.treeinfo", b"[header]\nversion = 1.2\n" + b"; padding\n" * 2000)
    with pytest.raises(UpstreamError, match=r"/big/\.treeinfo: \d+ bytes, more than a manifest "
                       r"may be \(4096\)"):
        await find_manifest(texts, nginx.url("big/vmlinuz"), limit=4096)
    assert await find_manifest(texts, nginx.url("big/vmlinuz")) is not None


async def test_concurrent_members_share_one_lookup(nginx: Nginx, texts: Fetcher) -> None:
    red_hat_tree(nginx, "os", {"images/pxeboot/vmlinuz": f"sha256:{sha(KERNEL)}",
                               "images/pxeboot/initrd.img": f"sha256:{sha(INITRD)}"})
    cache = ManifestCache(texts)
    a, b = await asyncio.gather(
        cache.for_url(nginx.url("os/images/pxeboot/vmlinuz")),
        cache.for_url(nginx.url("os/images/pxeboot/initrd.img")))
    assert a is b
    assert a is not None and a.url == nginx.url("os/.treeinfo")
    assert gets(nginx, "/os/.treeinfo") == [200]
    assert gets(nginx, "/os/images/pxeboot/.treeinfo") == [404]


async def test_tls_and_proxy_settings_apply(
    tls_nginx: tuple[Nginx, Path], nginx: Nginx, tmp_path: Path,
    make_settings: Callable[..., Settings]
) -> None:
    server, ca = tls_nginx
    red_hat_tree(server, "os", {"images/pxeboot/vmlinuz": f"sha256:{sha(KERNEL)}"})
    url = f"https://127.0.0.1:{server.port}/os/images/pxeboot/vmlinuz"
    async with assemble.fetcher(make_settings()) as source:
        with pytest.raises(UpstreamError, match=r"TLS error: .*certificate verify failed"):
            await find_manifest(source, url)
    for settings in (make_settings(ca_bundle=ca), make_settings(verify_server_cert=False)):
        async with assemble.fetcher(settings) as source:
            m = await find_manifest(source, url)
        assert m is not None and m.expected(url) == sha(KERNEL)

    red_hat_tree(nginx, "os", {"images/pxeboot/vmlinuz": f"sha256:{sha(KERNEL)}"})
    proxy = Nginx(tmp_path / "proxy",
                  extra=f"location / {{ proxy_pass http://127.0.0.1:{nginx.port}; }}")
    try:
        async with assemble.fetcher(make_settings(http_proxy=f"http://127.0.0.1:{proxy.port}")
                                  ) as source:
            m = await find_manifest(source, nginx.url("os/images/pxeboot/vmlinuz"))
        assert m is not None and m.url == nginx.url("os/.treeinfo")
        assert gets(proxy, "/os/.treeinfo") == [200]
    finally:
        proxy.stop()
