"""Two machines boot over TFTP while their boot set changes: each gets one whole generation."""

from __future__ import annotations

import asyncio
import subprocess
import threading
from pathlib import Path

from tests.helpers.upstream import Reply, Upstream, static
from tests.tftp.clients import need, running_server
from tftproxy.store import BootStore
from tftproxy.tftp.protocol import Policy
from tftproxy.tftp.server import ServerConfig

K1, I1 = b"kernel gen one " * 20_000, b"initrd gen one " * 50_000
K2, I2 = b"kernel gen two! " * 21_000, b"initrd gen two! " * 52_000


def tftp_get(port: int, name: str, out: Path, source: str) -> bytes:
    """curl's TFTP client from a given loopback address, as one machine of the network."""
    done = subprocess.run(
        [need("curl"), "-sS", "--interface", source, "--tftp-blksize", "1468", "-o", str(out),
         f"tftp://127.0.0.1:{port}/{name}"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return out.read_bytes()


async def test_two_clients_each_boot_one_generation(api, upstream: Upstream, root: Path,
                                                    tmp_path: Path) -> None:
    upstream.routes["/os/vmlinuz"] = static(K1, etag='"k1"')
    upstream.routes["/os/initrd.img"] = static(I1, etag='"i1"')
    proxy = await api(pin_window=60, stall_timeout=30)
    for f in ("vmlinuz", "initrd.img"):
        assert (await proxy.fetch_boot_file("boot/c", upstream.url(f"/os/{f}")))[0] == 200
    store = BootStore(root, create=False, pin_window=60)
    config = ServerConfig(policy=Policy(max_blksize=1468, timeout=1.0, retries=5),
                          refresh_hold=20.0)
    with running_server(store, config) as server:
        port = server.addresses[0][1]
        # Machine A (127.0.0.2) has loaded its kernel when the media is respun.
        a_kernel = await asyncio.to_thread(tftp_get, port, "boot/c-vmlinuz", tmp_path / "ak",
                                           "127.0.0.2")
        gate = threading.Event()
        upstream.routes["/os/vmlinuz"] = static(K2, etag='"k2"')
        upstream.routes["/os/initrd.img"] = lambda s: Reply(
            body=I2, headers={"ETag": '"i2"'}, pause_at=100_000, pause=gate)
        change = asyncio.create_task(proxy.fetch_boot_file("boot/c", upstream.url("/os/vmlinuz")))
        for _ in range(500):
            if upstream.requests_for("/os/initrd.img")[1:]:
                break
            await asyncio.sleep(0.01)
        assert store.serving.is_refreshing("boot/c-vmlinuz"), "the set change should be under way"
        # While the new generation is prepared: A gets the initrd of its own generation at
        # once; machine B (127.0.0.3) starts booting and is held until the switch.
        a_initrd = await asyncio.to_thread(tftp_get, port, "boot/c-initrd.img",
                                           tmp_path / "ai", "127.0.0.2")
        b_kernel_task = asyncio.create_task(asyncio.to_thread(
            tftp_get, port, "boot/c-vmlinuz", tmp_path / "bk", "127.0.0.3"))
        await asyncio.sleep(0.5)
        assert not b_kernel_task.done()
        gate.set()
        status, _, body = await change
        assert (status, body["status"]) == (200, "published")
        b_kernel = await b_kernel_task
        b_initrd = await asyncio.to_thread(tftp_get, port, "boot/c-initrd.img",
                                           tmp_path / "bi", "127.0.0.3")
        # A finishes its boot on generation 2 (the old pair) even after the switch.
        a_again = await asyncio.to_thread(tftp_get, port, "boot/c-initrd.img",
                                          tmp_path / "ai2", "127.0.0.2")
    assert (a_kernel, a_initrd, a_again) == (K1, I1, I1)
    assert (b_kernel, b_initrd) == (K2, I2)
