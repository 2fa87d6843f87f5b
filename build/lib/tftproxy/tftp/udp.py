"""UDP for the TFTP server: listening and reply sockets, request addresses, GSO window sends."""

from __future__ import annotations

import contextlib
import errno
import socket
import struct
from collections.abc import Iterable
from typing import Any, Final

from tftproxy._addr import parse_hostport

IP_PKTINFO: Final = getattr(socket, "IP_PKTINFO", 8)  # Linux value; absent from Python 3.11
UDP_SEGMENT: Final = getattr(socket, "UDP_SEGMENT", 103)  # Linux >= 4.18: UDP GSO
_GSO_MAX_SEGMENTS: Final = 64
_GSO_MAX_BYTES: Final = 65000  # a GSO send is one UDP datagram to the stack until it splits
_PKTINFO4 = struct.Struct("=I4s4s")  # struct in_pktinfo: ifindex, spec_dst, addr
_PKTINFO6 = struct.Struct("=16sI")  # struct in6_pktinfo: addr, ifindex
CMSG_SPACE: Final = socket.CMSG_SPACE(_PKTINFO6.size)
_LISTEN_RCVBUF: Final = 1 << 20
_GSO_UNSUPPORTED: Final = (errno.EIO, errno.EINVAL, errno.EMSGSIZE, errno.EOPNOTSUPP,
                           errno.ENOPROTOOPT)

Address = tuple[Any, ...]
LocalAddress = tuple[str, int]  # (address, ifindex) a request was sent to


def is_wildcard(host: str) -> bool:
    return host in ("", "*", "0.0.0.0", "::")


def listen_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` as given in tftp_listen (port 69 if omitted; ``*`` is every IPv4 address)."""
    host, port = parse_hostport(text, default_port=69)
    return ("0.0.0.0" if host == "*" else host), port


def bind_listener(host: str, port: int, *, reuseport: bool = False) -> socket.socket:
    """A listening UDP socket; on a wildcard address it reports each request's destination."""
    family, _, _, _, sockaddr = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0]
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if reuseport:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            # Explicit families: 0.0.0.0:69 and [::]:69 may both be listed without conflict.
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _LISTEN_RCVBUF)
        if is_wildcard(host):
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
            else:
                sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
        sock.bind(sockaddr)
    except BaseException:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


def bind_listeners(addresses: Iterable[str]) -> list[socket.socket]:
    """A listening socket on each ``HOST:PORT``; none is left open if one cannot be bound."""
    sockets: list[socket.socket] = []
    try:
        for text in addresses:
            sockets.append(bind_listener(*listen_address(text)))
    except BaseException:
        for s in sockets:
            s.close()
        raise
    return sockets


def local_address(ancdata: list[tuple[int, int, bytes]]) -> LocalAddress | None:
    """The (address, ifindex) a request was sent to, from IP_PKTINFO / IPV6_PKTINFO."""
    for level, kind, data in ancdata:
        if level == socket.IPPROTO_IP and kind == IP_PKTINFO and len(data) >= _PKTINFO4.size:
            ifindex, _, addr = _PKTINFO4.unpack_from(data)
            return socket.inet_ntop(socket.AF_INET, addr), ifindex
        if (level == socket.IPPROTO_IPV6 and kind == socket.IPV6_PKTINFO
                and len(data) >= _PKTINFO6.size):
            addr6, ifindex = _PKTINFO6.unpack_from(data)
            return socket.inet_ntop(socket.AF_INET6, addr6), ifindex
    return None


class Listener:
    """A listening socket and what replies to its requests need to know."""

    __slots__ = ("family", "host", "sock", "wildcard")

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.family = sock.family
        self.host = sock.getsockname()[0]
        self.wildcard = is_wildcard(self.host)

    def reply_socket(self, local: LocalAddress | None) -> socket.socket:
        """A socket on a new port, sending from the address the client sent its request to."""
        sock = socket.socket(self.family, socket.SOCK_DGRAM)
        try:
            if local is not None:
                host, ifindex = local
                if self.family == socket.AF_INET6:
                    sock.bind((host, 0, 0, ifindex if host.startswith("fe80") else 0))
                else:
                    sock.bind((host, 0))
            elif self.family == socket.AF_INET6:
                sock.bind((self.host, 0, 0, 0))
            else:
                sock.bind((self.host, 0))
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        return sock


def gso_chunk(segment: int) -> int:
    """Bytes per GSO send for runs of ``segment``-sized datagrams (0: not worth it)."""
    segments = min(_GSO_MAX_SEGMENTS, _GSO_MAX_BYTES // segment)
    return segments * segment if segments >= 2 else 0


def send_segments(sock: socket.socket, packet: bytes | memoryview, segment: int,
                  chunk: int) -> bool:
    """Send ``packet`` as datagrams of ``segment`` bytes: GSO sends of ``chunk`` bytes, or
    one send per datagram when ``chunk`` is 0. Returns False when GSO turned out to be
    unsupported here (the caller then stops asking for it).

    The segment size travels with each send (a control message), not as a socket option: a
    socket-wide UDP_SEGMENT would also cut an OACK or ERROR longer than a tiny block.
    """
    gso_ok = True
    if chunk:
        cmsg = [(socket.SOL_UDP, UDP_SEGMENT, struct.pack("=H", segment))]
        sendmsg = sock.sendmsg
        try:
            for i in range(0, len(packet), chunk):
                sendmsg((packet[i : i + chunk],), cmsg)
            return True
        except OSError as exc:
            if exc.errno not in _GSO_UNSUPPORTED:
                raise
            gso_ok = False  # no UDP GSO on this kernel or route
    send = sock.send
    for i in range(0, len(packet), segment):
        send(packet[i : i + segment])
    return gso_ok


def send_error(lst: Listener, local: LocalAddress | None, client: Address,
               packet: bytes) -> None:
    """Send one ERROR packet from a new port, as a transfer would answer; raises OSError
    only when no reply socket can be opened."""
    sock = lst.reply_socket(local)
    with contextlib.closing(sock), contextlib.suppress(OSError):
        sock.sendto(packet, client)
