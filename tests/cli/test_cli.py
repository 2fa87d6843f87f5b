"""The command line, run as an admin would: real processes against nginx."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

from tests.helpers.nginx import Nginx


def tftproxy(*args: str) -> subprocess.CompletedProcess[str]:
    # No serve of these tests listens on the discard port: status asks nobody else's.
    env = {**os.environ, "TFTPROXY_MIN_FREE_SPACE": "0", "TFTPROXY_LISTEN": "127.0.0.1:9"}
    return subprocess.run([sys.executable, "-m", "tftproxy", *args], capture_output=True,
                          text=True, timeout=60, env=env)


def lines(text: str) -> list[str]:
    """Output lines with their alignment folded (one space between words)."""
    return [" ".join(line.split()) for line in text.splitlines()]


def test_fetch_status_and_gc(nginx: Nginx, root: Path) -> None:
    data = os.urandom(100_000)
    nginx.put("os/images/pxeboot/vmlinuz", data)
    url = nginx.url("os/images/pxeboot/vmlinuz")
    sha = hashlib.sha256(data).hexdigest()
    done = tftproxy("fetch", "--root", str(root), "boot/cli", url)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"published: boot/cli-vmlinuz 97.7 KiB (100000 bytes) sha256 {sha}\n"
    assert done.stderr == ""  # a pipe: no progress bar
    done = tftproxy("fetch", "--root", str(root), "boot/cli", url)
    assert done.stdout == f"unchanged: boot/cli-vmlinuz 97.7 KiB (100000 bytes) sha256 {sha}\n"
    done = tftproxy("fetch", "--root", str(root), "boot/cli", nginx.url("nope/vmlinuz"))
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr == (f"failed: boot/cli-vmlinuz <- {nginx.url('nope/vmlinuz')}: "
                           "HTTP 404 Not Found; previous version kept\n")
    assert (root / "boot/cli-vmlinuz").read_bytes() == data

    status = json.loads(tftproxy("status", "--root", str(root), "--json").stdout)
    [entry] = status["files"]
    assert entry["current"]["sha256"] == sha and entry["current"]["source"] == url
    assert status["sets"][0]["set"] == "boot/cli"
    text = lines(tftproxy("status", "--root", str(root), "--long").stdout)
    assert f"sha256: {sha}" in text and f"source: {url}" in text
    assert "size: 97.7 KiB (100000 bytes)" in text

    gc = tftproxy("gc", "--root", str(root), "--dry-run")
    assert gc.returncode == 0
    assert gc.stdout.startswith("would free 0 B in 0 object(s), would drop 0 old generation(s);"
                                " kept 1 object(s), 97.7 KiB; disk ")
    assert " free of " in gc.stdout and "bytes" not in gc.stdout


def test_sync_names_each_set_and_its_outcome(nginx: Nginx, root: Path) -> None:
    import time

    for f in ("vmlinuz", "initrd.img"):
        nginx.put(f"os/{f}", os.urandom(50_000))
        assert tftproxy("fetch", "--root", str(root), "boot/cli", nginx.url(f"os/{f}")
                        ).returncode == 0
    done = tftproxy("sync", "--root", str(root))
    assert (done.returncode, done.stdout, done.stderr) == (
        0, "unchanged: boot/cli generation 2\n", "")
    nginx.put("os/vmlinuz", os.urandom(50_001), mtime=time.time() + 5)
    done = tftproxy("sync", "--root", str(root), "boot/cli")
    assert (done.returncode, done.stdout) == (0, "updated: boot/cli generation 2 -> 3\n")
    done = tftproxy("sync", "--root", str(root), "boot/none")
    assert (done.returncode, done.stderr) == (
        2, "failed: no boot set is published under prefix 'boot/none'\n")
    (nginx.www / "os/initrd.img").unlink()
    done = tftproxy("sync", "--root", str(root), "--json")
    assert done.returncode == 1
    report = json.loads(done.stdout)
    [outcome] = report["sets"]
    assert (outcome["set"], outcome["status"], outcome["generation"]) == ("boot/cli", "failed", 3)
    assert outcome["error"] == ("boot set boot/cli not switched: boot/cli-initrd.img: HTTP 404 "
                                "Not Found; previous version kept")
    text = tftproxy("status", "--root", str(root), "--long").stdout
    assert "failed (1x): boot set boot/cli not switched" in text
    assert "; next check in " in text and "next check none" not in text


def test_bad_input_and_settings_are_named(root: Path, tmp_path: Path) -> None:
    done = tftproxy("fetch", "--root", str(root), "../escape", "http://127.0.0.1:1/vmlinuz")
    assert done.returncode == 2
    assert done.stderr == ("failed: '../escape-vmlinuz' contains '..', which could leave the "
                           "TFTP root\n")
    config = tmp_path / "bad.yml"
    config.write_text("fetch_wait: soon\n")
    done = tftproxy("status", "--root", str(root), "--config", str(config))
    assert done.returncode == 2
    assert "fetch_wait" in done.stderr and str(config) in done.stderr


def test_help_names_every_command() -> None:
    out = tftproxy("--help").stdout
    for command in ("serve", "fetch", "sync", "status", "tftpd", "gc", "config"):
        assert command in out
    assert "--tftp-listen" in tftproxy("serve", "--help").stdout
    assert "--dry-run" in tftproxy("gc", "--help").stdout


def test_serve_on_a_busy_address_says_so(nginx: Nginx, root: Path) -> None:
    done = tftproxy("serve", "--root", str(root), "--listen", f"127.0.0.1:{nginx.port}")
    assert done.returncode == 1
    assert done.stderr.strip().endswith("address already in use")
    assert "Traceback" not in done.stderr


def test_fetch_and_status_of_an_oci_source(tmp_path: Path, root: Path) -> None:
    from tests.helpers.registry import Pusher, Registry

    registry = Registry(tmp_path / "registry")
    try:
        data = os.urandom(50_000)
        digest = Pusher(registry, tmp_path / "push").push("fedora/netboot", "40-amd64",
                                                          {"vmlinuz": data})
        url = registry.url("fedora/netboot:40-amd64", "vmlinuz")
        done = tftproxy("fetch", "--root", str(root), "boot/oci", url)
        assert done.returncode == 0, done.stderr
        sha = hashlib.sha256(data).hexdigest()
        assert done.stdout == (f"published: boot/oci-vmlinuz 48.8 KiB ({len(data)} bytes) "
                               f"sha256 {sha}\n")
        done = tftproxy("status", "--root", str(root), "--long")
        text = lines(done.stdout)
        assert f"source: {url}" in text
        assert (f"fetched from: oci+http://{registry.host}/fedora/netboot@{digest}#vmlinuz"
                in text)
        manifest = text.index(f"manifest: {digest}")
        assert text[manifest + 1] == f"layer: sha256:{sha}"
        assert "verified: digest: sha256 is the layer's digest in manifest" in " ".join(text)
        done = tftproxy("fetch", "--root", str(root), "boot/oci",
                        registry.url("fedora/netboot:40-amd64"))
        assert done.returncode == 2
        assert "names no file of the artifact: add #TITLE" in done.stderr
    finally:
        registry.stop()
