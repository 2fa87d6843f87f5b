"""Socket addresses as admins write them: ``HOST:PORT``, ``[v6]:PORT``, lists of them."""

from __future__ import annotations

WILDCARD = "*"


def format_hostport(host: str, port: int) -> str:
    """``host:port``, with an IPv6 address in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_hostport(value: str, default_port: int | None = None) -> tuple[str, int]:
    """Split ``HOST:PORT`` (``[v6]:PORT`` for IPv6) into its parts, with a clear error.

    An empty host means 127.0.0.1; without a port, ``default_port`` (or a ValueError).
    """
    text = value.strip()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
        if not sep:
            raise ValueError(f"bad address {value!r}: missing ']'")
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    elif text.count(":") > 1:
        raise ValueError(f"bad address {value!r}: write IPv6 addresses as [ADDR]:PORT")
    else:
        host, port_text = text, ""
    if not port_text:
        if default_port is None:
            raise ValueError(f"bad address {value!r}: expected HOST:PORT")
        return host or "127.0.0.1", default_port
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"bad address {value!r}: port {port_text!r} is not a number") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"bad address {value!r}: port {port} is out of range")
    return host or "127.0.0.1", port


def parse_listen(value: str) -> list[tuple[str | None, int]]:
    """Parse ``HOST:PORT[,HOST:PORT...]``; host ``*`` (every address) becomes None."""
    addresses: list[tuple[str | None, int]] = []
    for part in value.split(","):
        if not part.strip():
            raise ValueError(f"bad address list {value!r}: empty entry")
        host, port = parse_hostport(part)
        addresses.append((None if host == WILDCARD else host, port))
    return addresses


def join_addresses(hosts: list[str], port: int) -> str:
    """The ``HOST:PORT,...`` list for several hosts on one port."""
    return ",".join(format_hostport(h, port) for h in hosts)
