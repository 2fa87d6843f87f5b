"""A respin of an OCI artifact (its tag moved to a new manifest) while machines boot over
TFTP: every machine gets one complete release, never a kernel of one and an initrd of the
other.

Real parts throughout: docker-registry holds the artifact (pushed with oras-py), nginx between
tftproxy and the registry slows the respin's download to seconds (the configured
``http_proxy``), tftproxy's TFTP server serves the tree, and each machine is curl's TFTP
client on its own loopback address.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from tests.helpers.nginx import Nginx
from tests.helpers.registry import Pusher, Registry
from tests.tftp.clients import curl_get, running_server
from tftproxy.store import BootStore
from tftproxy.tftp.protocol import Policy
from tftproxy.tftp.server import ServerConfig

REPO = "fedora/netboot"
K1, I1 = os.urandom(1_000_000), os.urandom(2_500_000)
K2, I2 = os.urandom(1_100_000), os.urandom(2_600_000)
RELEASES = {(K1, I1): "A", (K2, I2): "B"}


def tftp_get(port: int, name: str, out: Path, source: str) -> bytes:
    done = curl_get(port, name, out, blksize=1468, source=source)
    assert done.returncode == 0, done.stderr
    return out.read_bytes()


def boot(port: int, machine: str, work: Path) -> tuple[bytes, bytes]:
    """What a PXE machine does: the kernel, a moment, then the initrd."""
    kernel = tftp_get(port, "boot/f40-vmlinuz", work / f"{machine}-k", machine)
    time.sleep(0.1)
    return kernel, tftp_get(port, "boot/f40-initrd.img", work / f"{machine}-i", machine)


async def test_every_machine_boots_one_release_across_a_respin(api, tmp_path: Path,
                                                               root: Path) -> None:
    registry = Registry(tmp_path / "registry")
    # Slow (1 MB/s a connection) once the flag file exists: for the respin only.
    flag = tmp_path / "slow"
    slow = Nginx(tmp_path / "proxy", extra=f"location / {{ proxy_pass http://{registry.host}; "
                                           f"if (-f {flag}) {{ set $limit_rate 1m; }} }}")
    try:
        pusher = Pusher(registry, tmp_path / "push")
        pusher.push(REPO, "40-amd64", {"vmlinuz": K1, "initrd.img": I1})
        proxy = await api(pin_window=60, refresh_hold=30, stall_timeout=30, fetch_wait=60,
                          http_proxy=f"http://127.0.0.1:{slow.port}")
        for title in ("vmlinuz", "initrd.img"):
            status, _, body = await proxy.fetch_boot_file(
                "boot/f40", registry.url(f"{REPO}:40-amd64", title))
            assert status == 200, body
        store = BootStore(root, create=False, pin_window=60)
        config = ServerConfig(policy=Policy(max_blksize=1468, timeout=1.0, retries=5),
                              refresh_hold=30.0)
        work = tmp_path / "machines"
        work.mkdir()
        with running_server(store, config) as server:
            port = server.addresses[0][1]
            early = [f"127.0.0.{i}" for i in (10, 11, 12)]
            kernels = await asyncio.gather(*(asyncio.to_thread(
                tftp_get, port, "boot/f40-vmlinuz", work / f"{m}-k", m) for m in early))
            # The release is respun: the tag moves to a new manifest, Foreman asks again.
            pusher.push(REPO, "40-amd64", {"vmlinuz": K2, "initrd.img": I2})
            flag.touch()
            change = asyncio.create_task(proxy.fetch_boot_file(
                "boot/f40", registry.url(f"{REPO}:40-amd64", "vmlinuz")))
            for _ in range(500):
                if store.serving.is_refreshing("boot/f40-vmlinuz"):
                    break
                await asyncio.sleep(0.01)
            assert store.serving.is_refreshing("boot/f40-vmlinuz"), "the respin is under way"
            # Machines that start now wait for the new release; those that had their kernel
            # finish on the old one, at once.
            during = [asyncio.create_task(asyncio.to_thread(boot, port, f"127.0.0.{i}", work))
                      for i in (20, 21, 22, 23)]
            initrds = await asyncio.gather(*(asyncio.to_thread(
                tftp_get, port, "boot/f40-initrd.img", work / f"{m}-i", m) for m in early))
            assert store.serving.is_refreshing("boot/f40-vmlinuz"), \
                "the early machines finished while the respin was still downloading"
            assert not any(t.done() for t in during)
            status, _, body = await change
            assert (status, body["status"]) == (200, "published"), body
            during_boots = await asyncio.gather(*during)
            after_boots = [await asyncio.to_thread(boot, port, f"127.0.0.{i}", work)
                           for i in (30, 31, 32)]
        early_boots = list(zip(kernels, initrds, strict=True))
        seen = [RELEASES.get(pair, "mixed") for pair in early_boots + during_boots + after_boots]
        assert seen == ["A"] * 3 + ["B"] * 7
    finally:
        slow.stop()
        registry.stop()
