"""Real TFTP clients against our server: curl, tftp-hpa's tftp and atftp, byte for byte."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from tests.tftp.clients import atftp_get, curl_get, in_tftpd, running_server, tftp_hpa_get
from tftproxy.store import BootStore
from tftproxy.tftp.server import ServerConfig, TftpServer


@pytest.mark.parametrize("blksize", [None, 512, 1468, 8192])
def test_curl(port: int, tree: dict[str, bytes], tmp_path: Path, blksize: int | None) -> None:
    # Not empty.cfg: curl refuses "tsize 0" in an OACK, from in.tftpd as from us.
    for name in ("pxelinux.0", "boot/grub/grubx64.efi", "images/vmlinuz"):
        out = tmp_path / "out"
        result = curl_get(port, name, out, blksize=blksize)
        assert result.returncode == 0, result.stderr
        assert out.read_bytes() == tree[name], name


def test_curl_without_options(port: int, tree: dict[str, bytes], tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert curl_get(port, "pxelinux.0", out, options=False).returncode == 0
    assert out.read_bytes() == tree["pxelinux.0"]


def test_block_numbers_wrap(store: BootStore, server: TftpServer, tmp_path: Path) -> None:
    """65,600 blocks of 8 bytes: the block counter wraps and the client follows.

    atftp with windows keeps this quick; lock-step wrapping is covered in test_protocol.
    """
    data = os.urandom(8 * 65_600)
    (store.root / "wrap.bin").write_bytes(data)
    out = tmp_path / "out"
    result = atftp_get(server.addresses[0][1], "wrap.bin", out,
                       options={"blksize": 8, "windowsize": 64})
    assert result.returncode == 0, result.stderr
    assert out.read_bytes() == data


def test_tftp_hpa_binary(port: int, tree: dict[str, bytes], tmp_path: Path) -> None:
    for name in ("pxelinux.0", "images/vmlinuz", "/boot/grub/grubx64.efi", "kernel-link",
                 "empty.cfg", "\\boot\\grub\\grubx64.efi"):
        out = tmp_path / "out"
        result = tftp_hpa_get(port, name, out)
        assert result.returncode == 0, result.stderr
        assert out.read_bytes() == tree[name.replace("\\", "/").lstrip("/")], name


def test_tftp_hpa_netascii(port: int, tmp_path: Path) -> None:
    """Netascii on the wire, undone by the client: the text arrives as it is on disk."""
    out = tmp_path / "out"
    result = tftp_hpa_get(port, "pxelinux.cfg/default", out, mode="netascii")
    assert result.returncode == 0, result.stderr
    assert out.read_bytes() == b"DEFAULT linux\nLABEL linux\n  KERNEL vmlinuz\n"


@pytest.mark.parametrize("options", [{}, {"blksize": 1468}, {"windowsize": 4},
                                     {"windowsize": 16, "blksize": 1468},
                                     {"windowsize": 64, "blksize": 1024, "tsize": 0}])
def test_atftp(port: int, tree: dict[str, bytes], tmp_path: Path,
               options: dict[str, int]) -> None:
    for name in ("images/vmlinuz", "boot/grub/grubx64.efi", "empty.cfg"):
        out = tmp_path / "out"
        result = atftp_get(port, name, out, options=options)
        assert result.returncode == 0, result.stderr
        assert out.read_bytes() == tree[name], name


def test_missing_and_refused_names(port: int, tmp_path: Path) -> None:
    out = tmp_path / "out"
    missing = curl_get(port, "pxelinux.cfg/01-52-54-00-12-34-56", out)
    assert missing.returncode == 68  # CURLE_TFTP_NOTFOUND: ERROR 1
    for name in ("escape", "boot/escape2", "../../etc/passwd", "boot", ".tftproxy/private/meta",
                 ".tftproxy/private/meta/x.json", "/../secret"):
        if ".." not in name:  # curl resolves dot segments in its URL before sending
            result = curl_get(port, name, out)
            assert result.returncode == 69, name  # CURLE_TFTP_PERM: ERROR 2
        result = tftp_hpa_get(port, name, out)
        assert "Error code 2: access violation" in result.stdout, (name, result.stdout)


def test_ipv6(store: BootStore, tree: dict[str, bytes], config: ServerConfig,
              tmp_path: Path) -> None:
    with running_server(store, config, ("[::1]:0",)) as srv:
        out = tmp_path / "out"
        result = curl_get(srv.addresses[0][1], "pxelinux.0", out, host="::1", blksize=1468)
        assert result.returncode == 0, result.stderr
        assert out.read_bytes() == tree["pxelinux.0"]


def test_log_line_and_counters(port: int, server: TftpServer, tree: dict[str, bytes],
                               tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "tftproxy.tftp")
    out = tmp_path / "out"
    assert curl_get(port, "pxelinux.0", out, blksize=1468).returncode == 0
    curl_get(port, "nothing-here", out)
    lines = [r.getMessage() for r in caplog.records]
    done = [line for line in lines if "'pxelinux.0'" in line]
    assert len(done) == 1
    line = done[0]
    # client, file, options, bytes, seconds, outcome
    assert line.startswith("tftp 127.0.0.1:")
    assert "blksize=1468" in line and f"tsize={len(tree['pxelinux.0'])}" in line
    assert f"{len(tree['pxelinux.0'])} bytes in " in line and line.endswith("complete")
    assert any("'nothing-here': file not found (error 1)" in line for line in lines)
    counters = server.counters.snapshot()
    assert counters["transfers"] == 1 and counters["complete"] == 1
    assert counters["not_found"] == 1
    assert counters["bytes_sent"] == len(tree["pxelinux.0"])
    assert counters["active"] == 0


def test_same_bytes_as_in_tftpd_chrooted(store: BootStore, tree: dict[str, bytes], port: int,
                                         tmp_path: Path) -> None:
    """in.tftpd -s over the same root gives the same bytes for every published name."""
    names = [rec.name for rec in store.records.records()]
    assert len(names) == 5
    with in_tftpd(store.root) as theirs:
        for name in names:
            ours_out, theirs_out = tmp_path / "ours", tmp_path / "theirs"
            assert tftp_hpa_get(port, name, ours_out).returncode == 0
            assert tftp_hpa_get(theirs, name, theirs_out).returncode == 0
            assert ours_out.read_bytes() == theirs_out.read_bytes() == tree[name], name
