"""ftp:// media through the API, against vsftpd: the guarantees HTTP media have.

Downloaded aside and hashed; SIZE and MDTM kept as validators, so an unchanged file costs no
download (vsftpd's log counts the RETRs); a changed one is hidden while it downloads; checked
against the tree's .treeinfo fetched over FTP too; a failure keeps the previous version.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path

import pytest

from tests.helpers.ftp import Vsftpd
from tests.helpers.nginx import free_port
from tests.tftp.clients import wait_for
from tftproxy.jobs.status import status_report
from tftproxy.store import BootStore

TREE = "rocky/9/BaseOS/x86_64/os"
K1, I1 = os.urandom(200_000), os.urandom(300_000)
MTIME = 1_700_000_000


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def slow_ftp(tmp_path: Path) -> Iterator[Vsftpd]:
    server = Vsftpd(tmp_path / "slow-ftp", rate=400_000)
    yield server
    server.stop()


def put_tree(ftp: Vsftpd, kernel: bytes, initrd: bytes) -> None:
    ftp.put(f"{TREE}/images/pxeboot/vmlinuz", kernel, mtime=MTIME)
    ftp.put(f"{TREE}/images/pxeboot/initrd.img", initrd, mtime=MTIME)
    ftp.put(f"{TREE}/.treeinfo", (
        "[header]\ntype = productmd.treeinfo\nversion = 1.2\n\n"
        "[release]\nname = Rocky Linux\nshort = Rocky\nversion = 9.4\n\n"
        "[tree]\narch = x86_64\nplatforms = x86_64\n\n"
        "[images-x86_64]\nkernel = images/pxeboot/vmlinuz\ninitrd = images/pxeboot/initrd.img\n\n"
        f"[checksums]\nimages/pxeboot/vmlinuz = sha256:{sha(kernel)}\n"
        f"images/pxeboot/initrd.img = sha256:{sha(initrd)}\n").encode())


async def test_ftp_media_are_published_verified_and_refetched_without_a_download(
        api, ftp: Vsftpd, root: Path) -> None:
    put_tree(ftp, K1, I1)
    proxy = await api()
    for name, data in (("vmlinuz", K1), ("initrd.img", I1)):
        status, _, body = await proxy.fetch_boot_file(
            "boot/rocky9", ftp.url(f"{TREE}/images/pxeboot/{name}"))
        assert (status, body["status"], body["sha256"]) == (200, "published", sha(data))
        assert (root / f"boot/rocky9-{name}").read_bytes() == data
    report = status_report(BootStore(root, create=False))
    files = {f["name"]: f["current"] for f in report["files"]}
    kernel = files["boot/rocky9-vmlinuz"]
    assert kernel["verified"] == f"sha256 matches .treeinfo at {ftp.url(TREE + '/.treeinfo')}"
    assert kernel["content_length"] == len(K1)  # SIZE
    assert kernel["last_modified"] == format_datetime(  # MDTM, as an HTTP date
        datetime.fromtimestamp(MTIME, UTC), usegmt=True)
    assert kernel["etag"] is None

    for _ in range(3):
        status, _, body = await proxy.fetch_boot_file(
            "boot/rocky9", ftp.url(f"{TREE}/images/pxeboot/vmlinuz"))
        assert (status, body["status"]) == (200, "unchanged")
    assert ftp.retrs(f"{TREE}/images/pxeboot/vmlinuz") == 1, "unchanged SIZE+MDTM: no RETR"

    # Same size, new time (a respin of equal length): downloaded, and found to be the same.
    ftp.put(f"{TREE}/images/pxeboot/vmlinuz", K1, mtime=MTIME + 60)
    status, _, body = await proxy.fetch_boot_file(
        "boot/rocky9", ftp.url(f"{TREE}/images/pxeboot/vmlinuz"))
    assert (status, body["status"]) == (200, "unchanged")
    assert ftp.retrs(f"{TREE}/images/pxeboot/vmlinuz") == 2


async def test_a_changed_ftp_file_is_hidden_while_it_downloads(
        api, slow_ftp: Vsftpd, root: Path) -> None:
    old, new = os.urandom(300_000), os.urandom(1_200_000)
    slow_ftp.put("images/vmlinuz", old, mtime=MTIME)
    proxy = await api(fetch_wait=0.2, verify="off")
    status, _, job = await proxy.fetch_boot_file("boot/slow", slow_ftp.url("images/vmlinuz"))
    outcome = await proxy.files.job(job["id"]).outcome() if status == 202 else None
    assert outcome is None or outcome.status == "published"
    name = "boot/slow-vmlinuz"
    assert (root / name).read_bytes() == old

    slow_ftp.put("images/vmlinuz", new, mtime=MTIME + 3600)
    status, _, job = await proxy.fetch_boot_file("boot/slow", slow_ftp.url("images/vmlinuz"))
    assert status == 202  # 1.2 MB at 400 kB/s
    serving = BootStore(root, create=False).serving
    assert await asyncio.to_thread(wait_for, lambda: serving.is_refreshing(name))
    assert serving.is_refreshing(name) and not os.path.lexists(root / name), \
        "a host put in build mode waits for the new file instead of booting the old one"
    result = await proxy.files.job(job["id"]).outcome()
    assert (result.status, result.sha256) == ("published", sha(new))
    assert (root / name).read_bytes() == new
    assert not serving.is_refreshing(name)


async def test_ftp_failures_are_clear_and_keep_the_previous_version(
        api, ftp: Vsftpd, root: Path) -> None:
    ftp.put("images/vmlinuz", K1, mtime=MTIME)
    proxy = await api(verify="off")
    assert (await proxy.fetch_boot_file("boot/f", ftp.url("images/vmlinuz")))[0] == 200
    (ftp.files / "images/vmlinuz").unlink()
    status, _, body = await proxy.fetch_boot_file("boot/f", ftp.url("images/vmlinuz"))
    assert status == 502
    assert body == (f"TFTP: Failed to fetch boot file: {ftp.url('images/vmlinuz')}: "
                    f"FTP 550 Failed to open file.; previous version kept")
    assert (root / "boot/f-vmlinuz").read_bytes() == K1
    closed = f"ftp://127.0.0.1:{free_port()}/images/vmlinuz"
    status, _, body = await proxy.fetch_boot_file("boot/g", closed)
    assert status == 502
    assert body == (f"TFTP: Failed to fetch boot file: {closed}: cannot connect: Connect "
                    f"call failed ('127.0.0.1', {closed.split(':')[2].split('/')[0]}); "
                    f"nothing published")
    assert not os.path.lexists(root / "boot/g-vmlinuz")
