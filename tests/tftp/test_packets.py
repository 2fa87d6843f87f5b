"""Packet parsing and building against the byte layouts of RFC 1350 and RFC 2347."""

from __future__ import annotations

import pytest

from tftproxy.tftp.packets import (
    RRQ,
    WRQ,
    Ack,
    Data,
    Error,
    OAck,
    PacketError,
    Request,
    build_ack,
    build_data,
    build_error,
    build_oack,
    build_request,
    netascii_encode,
    parse_packet,
    parse_request,
)


def test_rrq_layout() -> None:
    raw = b"\x00\x01pxelinux.0\x00octet\x00tsize\x000\x00blksize\x001468\x00"
    assert build_request("pxelinux.0", "octet", {"tsize": "0", "blksize": "1468"}) == raw
    req = parse_request(raw)
    assert req == Request(RRQ, "pxelinux.0", "octet", (("tsize", "0"), ("blksize", "1468")))
    assert req.is_read
    assert req.option("BLKSIZE") == ("blksize", "1468")
    assert req.option("windowsize") is None


def test_wrq_and_mode_case() -> None:
    req = parse_request(b"\x00\x02a\x00NetASCII\x00")
    assert req.opcode == WRQ and not req.is_read
    assert req.mode == "netascii"


def test_padding_and_missing_final_nul_are_tolerated() -> None:
    # Some boot ROMs pad requests with NULs or drop the last terminator.
    assert parse_request(b"\x00\x01f\x00octet\x00\x00\x00\x00").options == ()
    assert parse_request(b"\x00\x01f\x00octet").mode == "octet"
    assert parse_request(b"\x00\x01f\x00octet\x00blksize\x00").options == ()


def test_file_names_keep_every_byte() -> None:
    req = parse_request(b"\x00\x01caf\xe9/\xff\x00octet\x00")
    assert req.filename.encode("utf-8", "surrogateescape") == b"caf\xe9/\xff"
    assert parse_request(b"\x00\x01\xc3\xa9\x00octet\x00").filename == "\u00e9"


@pytest.mark.parametrize("raw", [
    b"", b"\x00", b"\x00\x01", b"\x00\x01\x00octet\x00", b"\x00\x01f\x00\x00",
    b"\x00\x01f\x00", b"\x00\x01f", b"\x00\x01f\x00oct\xe9t\x00", b"\x00\x03\x00\x01",
    b"\x00\x01" + b"a" * 70000 + b"\x00octet\x00",
])
def test_malformed_requests(raw: bytes) -> None:
    with pytest.raises(PacketError):
        parse_request(raw)


def test_other_packets() -> None:
    assert parse_packet(build_data(7, b"abc")) == Data(7, b"abc")
    assert build_data(65536 + 7, b"") == b"\x00\x03\x00\x07"
    assert parse_packet(build_ack(0)) == Ack(0)
    assert build_error(1, "File not found") == b"\x00\x05\x00\x01File not found\x00"
    assert parse_packet(build_error(1, "File not found")) == Error(1, "File not found")
    assert parse_packet(b"\x00\x05\x00\x02") == Error(2, "")
    assert build_oack([("blksize", "1468")]) == b"\x00\x06blksize\x001468\x00"
    assert parse_packet(b"\x00\x06") == OAck(())


@pytest.mark.parametrize("raw", [b"\x00\x03\x00", b"\x00\x04\x00", b"\x00\x05\x00",
                                 b"\x00\x06a\x00", b"\x00\x09", b"\x07"])
def test_malformed_packets(raw: bytes) -> None:
    with pytest.raises(PacketError):
        parse_packet(raw)


def test_netascii() -> None:
    assert netascii_encode(b"a\nb\rc\r\n") == b"a\r\nb\r\x00c\r\x00\r\n"
    # Byte by byte, so chunks convert independently.
    text = b"x\r\n\ny\r" * 50
    assert b"".join(netascii_encode(text[i : i + 7]) for i in range(0, len(text), 7)) == \
        netascii_encode(text)
