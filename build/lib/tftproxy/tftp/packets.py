"""TFTP packets (RFC 1350, options per RFC 2347): parse and build, nothing else.

Parsing never raises anything but :class:`PacketError`, whatever the bytes: a server reads
these straight off the network.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Final

# Re-exported: the parser's one exception belongs with it for callers.
from tftproxy.errors import PacketError as PacketError

RRQ: Final = 1
WRQ: Final = 2
DATA: Final = 3
ACK: Final = 4
ERROR: Final = 5
OACK: Final = 6

# Limits from RFC 2348 (blksize), RFC 2349 (timeout) and RFC 7440 (windowsize).
MIN_BLKSIZE: Final = 8
MAX_BLKSIZE: Final = 65464
DEFAULT_BLKSIZE: Final = 512
MIN_TIMEOUT: Final = 1
MAX_TIMEOUT: Final = 255
MAX_WINDOWSIZE: Final = 65535

# A request is small; this cap keeps a hostile one from costing anything to parse.
MAX_REQUEST: Final = 65535

_HEADER = struct.Struct("!HH")
# Opcode and block number: the four bytes in front of every DATA block.
HEADER: Final = _HEADER


class ErrorCode(IntEnum):
    NOT_DEFINED = 0
    FILE_NOT_FOUND = 1
    ACCESS_VIOLATION = 2
    DISK_FULL = 3
    ILLEGAL_OPERATION = 4
    UNKNOWN_TID = 5
    FILE_EXISTS = 6
    NO_SUCH_USER = 7
    OPTION_REFUSED = 8  # RFC 2347: the client refuses the OACK (EDK2 ends its size probe so)


@dataclass(frozen=True, slots=True)
class Request:
    """An RRQ or WRQ. ``options`` keeps the client's order and spelling of option names."""

    opcode: int
    filename: str
    mode: str
    options: tuple[tuple[str, str], ...] = ()

    @property
    def is_read(self) -> bool:
        return self.opcode == RRQ

    def option(self, name: str) -> tuple[str, str] | None:
        """The first ``(spelling, value)`` pair for an option name, case-insensitively."""
        lname = name.lower()
        for key, value in self.options:
            if key.lower() == lname:
                return key, value
        return None


@dataclass(frozen=True, slots=True)
class Data:
    block: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class Ack:
    block: int


@dataclass(frozen=True, slots=True)
class Error:
    code: int
    message: str


@dataclass(frozen=True, slots=True)
class OAck:
    options: tuple[tuple[str, str], ...] = field(default=())


Packet = Request | Data | Ack | Error | OAck


def _decode(raw: bytes) -> str:
    # File names are bytes on the wire and on disk; surrogateescape keeps every byte intact
    # through str and back into os.open().
    return raw.decode("utf-8", "surrogateescape")


def _strings(body: bytes) -> list[bytes]:
    """NUL-terminated strings; tolerant of the padding some boot ROMs append after the last,
    and of a missing final NUL."""
    parts = body.split(b"\x00")
    if not parts[-1]:
        parts.pop()  # the empty string after the final NUL
    while len(parts) > 2 and parts[-1] == b"":
        parts.pop()
    return parts


def parse_request(data: bytes | bytearray | memoryview) -> Request:
    """Parse an RRQ or WRQ; :class:`PacketError` for anything else or anything malformed."""
    raw = bytes(data)
    if len(raw) < 2:
        raise PacketError("datagram shorter than an opcode")
    if len(raw) > MAX_REQUEST:
        raise PacketError("request too long")
    opcode = (raw[0] << 8) | raw[1]
    if opcode not in (RRQ, WRQ):
        raise PacketError(f"opcode {opcode} is not a request")
    parts = _strings(raw[2:])
    if len(parts) < 2:
        raise PacketError("request lacks a file name or mode")
    filename, mode = parts[0], parts[1]
    if not filename:
        raise PacketError("empty file name")
    if not mode:
        raise PacketError("empty mode")
    try:
        mode_text = mode.decode("ascii").lower()
    except UnicodeDecodeError:
        raise PacketError("mode is not ASCII") from None
    rest = parts[2:]
    if len(rest) % 2:
        # An option name without a value: RFC 2347 has no such thing; drop it rather than
        # refuse the whole request, as in.tftpd does.
        rest = rest[:-1]
    options = tuple(
        (rest[i].decode("latin-1"), rest[i + 1].decode("latin-1"))
        for i in range(0, len(rest), 2)
        if rest[i]
    )
    return Request(opcode, _decode(filename), mode_text, options)


def parse_packet(data: bytes | bytearray | memoryview) -> Packet:
    """Parse any TFTP packet; :class:`PacketError` if it is not one."""
    raw = bytes(data)
    if len(raw) < 2:
        raise PacketError("datagram shorter than an opcode")
    opcode = (raw[0] << 8) | raw[1]
    if opcode in (RRQ, WRQ):
        return parse_request(raw)
    if opcode == DATA:
        if len(raw) < 4:
            raise PacketError("truncated DATA")
        return Data(_HEADER.unpack_from(raw)[1], raw[4:])
    if opcode == ACK:
        if len(raw) < 4:
            raise PacketError("truncated ACK")
        return Ack(_HEADER.unpack_from(raw)[1])
    if opcode == ERROR:
        if len(raw) < 4:
            raise PacketError("truncated ERROR")
        code = _HEADER.unpack_from(raw)[1]
        message = raw[4:].split(b"\x00", 1)[0].decode("utf-8", "replace")
        return Error(code, message)
    if opcode == OACK:
        parts = _strings(raw[2:]) if len(raw) > 2 else []
        if len(parts) % 2:
            raise PacketError("OACK option without a value")
        return OAck(tuple(
            (parts[i].decode("latin-1"), parts[i + 1].decode("latin-1"))
            for i in range(0, len(parts), 2)
        ))
    raise PacketError(f"unknown opcode {opcode}")


def build_request(
    filename: str,
    mode: str = "octet",
    options: dict[str, str] | None = None,
    *,
    write: bool = False,
) -> bytes:
    out = bytearray(struct.pack("!H", WRQ if write else RRQ))
    out += filename.encode("utf-8", "surrogateescape") + b"\x00" + mode.encode("ascii") + b"\x00"
    for key, value in (options or {}).items():
        out += key.encode("latin-1") + b"\x00" + value.encode("latin-1") + b"\x00"
    return bytes(out)


def build_data(block: int, payload: bytes) -> bytes:
    return _HEADER.pack(DATA, block & 0xFFFF) + payload


def build_ack(block: int) -> bytes:
    return _HEADER.pack(ACK, block & 0xFFFF)


def build_error(code: int, message: str) -> bytes:
    return _HEADER.pack(ERROR, code) + message.encode("utf-8", "replace") + b"\x00"


def build_oack(options: tuple[tuple[str, str], ...] | list[tuple[str, str]]) -> bytes:
    out = bytearray(b"\x00\x06")
    for key, value in options:
        out += key.encode("latin-1") + b"\x00" + value.encode("latin-1") + b"\x00"
    return bytes(out)


def pack_data_header(buf: bytearray | memoryview, offset: int, block: int) -> None:
    """Write a DATA header in place, so a block is sent from one preallocated buffer."""
    _HEADER.pack_into(buf, offset, DATA, block & 0xFFFF)


def netascii_encode(chunk: bytes) -> bytes:
    """RFC 764 netascii: CR becomes CR NUL and LF becomes CR LF.

    Each byte maps on its own, so chunks convert independently.
    """
    return chunk.replace(b"\r", b"\r\x00").replace(b"\n", b"\r\n")
