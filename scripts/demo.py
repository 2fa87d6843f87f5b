"""`make run`: a working demo of tftproxy on unprivileged loopback ports.

It serves a small "installation media" directory over HTTP (as a mirror would), starts
`tftproxy serve` with its HTTP API on 127.0.0.1:8000 and TFTP on 127.0.0.1:6969, publishes
a kernel and an initrd through POST /tftp/fetch_boot_file exactly as Foreman does, and
keeps serving until Ctrl-C. Ports can be changed with DEMO_API, DEMO_TFTP and DEMO_MEDIA.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import os
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import aiohttp

from tftproxy._addr import parse_hostport
from tftproxy.service import run_server
from tftproxy.settings.sources import load_settings

HERE = Path(__file__).resolve().parent.parent
DEMO = HERE / ".cache" / "demo"


def _media(directory: Path) -> None:
    """Deterministic stand-ins for a kernel and an initrd, as a mirror would publish them."""
    pxeboot = directory / "os" / "images" / "pxeboot"
    pxeboot.mkdir(parents=True, exist_ok=True)
    for name, size in (("vmlinuz", 2 * 1024 * 1024), ("initrd.img", 6 * 1024 * 1024)):
        path = pxeboot / name
        if not path.exists() or path.stat().st_size != size:
            seed = hashlib.sha256(name.encode()).digest()
            blocks = bytearray()
            while len(blocks) < size:
                seed = hashlib.sha256(seed).digest()
                blocks += seed * 64
            path.write_bytes(bytes(blocks[:size]))


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def _serve_media(directory: Path, address: str) -> ThreadingHTTPServer:
    host, port = parse_hostport(address)
    handler = functools.partial(_Quiet, directory=str(directory))
    server = ThreadingHTTPServer((host, port), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


async def _publish(api: str, media: str) -> None:
    async with aiohttp.ClientSession() as session:
        for name in ("vmlinuz", "initrd.img"):
            url = f"http://{media}/os/images/pxeboot/{name}"
            async with session.post(f"http://{api}/tftp/fetch_boot_file",
                                    data={"prefix": "boot/demo-centos", "path": url},
                                    headers={"Accept": "json"}) as resp:
                print(f"  POST /tftp/fetch_boot_file {name}: {resp.status} "
                      f"{(await resp.text()).strip()}")
        menu = ("DEFAULT demo\nLABEL demo\n  KERNEL boot/demo-centos-vmlinuz\n"
                "  APPEND initrd=boot/demo-centos-initrd.img console=ttyS0\n")
        async with session.post(f"http://{api}/tftp/syslinux/create_default",
                                data={"menu": menu}) as resp:
            print(f"  POST /tftp/syslinux/create_default: {resp.status} -> pxelinux.cfg/default")


async def main() -> int:
    api = os.environ.get("DEMO_API", "127.0.0.1:8000")
    tftp = os.environ.get("DEMO_TFTP", "127.0.0.1:6969")
    media_addr = os.environ.get("DEMO_MEDIA", "127.0.0.1:8081")
    media_dir = DEMO / "media"
    _media(media_dir)
    media = _serve_media(media_dir, media_addr)
    root = DEMO / "tftpboot"
    root.mkdir(parents=True, exist_ok=True)
    settings = load_settings(overrides={"tftproot": root, "listen": api, "tftp_listen": [tftp]})
    ready = asyncio.Event()
    server = asyncio.create_task(run_server(settings, ready=ready))
    waiter = asyncio.create_task(ready.wait())
    await asyncio.wait({server, waiter}, return_when=asyncio.FIRST_COMPLETED)
    if server.done():
        media.shutdown()
        return server.result()
    print(f"\ntftproxy demo: TFTP root {root}")
    print(f"  media (a mirror) on http://{media_addr}/os/images/pxeboot/")
    await _publish(api, media_addr)
    print(f"""
Try it:
  curl -s tftp://{tftp}/boot/demo-centos-vmlinuz | sha256sum
  curl -s http://{api}/httpboot/boot/demo-centos-initrd.img | sha256sum
  curl -d prefix=boot/demo-centos -d path=http://{media_addr}/os/images/pxeboot/vmlinuz \\
       -H 'Accept: json' http://{api}/tftp/fetch_boot_file
  .venv/bin/tftproxy status --root {root}
  ls -l {root}/boot
  the status page: http://{api}/ in a browser
Ctrl-C stops the demo.
""", flush=True)
    try:
        return await server
    finally:
        media.shutdown()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    with contextlib.suppress(KeyboardInterrupt):
        raise SystemExit(asyncio.run(main()))
