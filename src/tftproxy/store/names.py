"""Name rules: which published names a request may create, and which a client may read.

A published name is a path relative to the TFTP root. Publishing derives it as smart-proxy
does and refuses anything that could leave the root or reach tftproxy's own state
(:class:`~tftproxy.errors.NameRefused`); reading normalises what a TFTP or HTTP client asks
for and refuses what leaves the root (:class:`~tftproxy.errors.Refused`).
"""

from __future__ import annotations

import hashlib
import os
from urllib.parse import urlsplit

from tftproxy._paths import dot_segments, is_within, plain_segments
from tftproxy.errors import NameRefused, Refused
from tftproxy.store.layout import STATE_DIRNAME, Layout


def name_key(name: str) -> str:
    """A fixed-length file-system-safe key for a published name (its record's file name)."""
    return hashlib.sha256(name.encode("utf-8", "surrogateescape")).hexdigest()[:40]


def url_basename(url: str) -> str:
    """The file name smart-proxy takes from a URL: the last segment of its path.

    The query string is not part of it (``.../vmlinuz?x=1`` publishes ``vmlinuz``).
    """
    return urlsplit(url).path.rsplit("/", 1)[-1]


def served_name(requested: str) -> str:
    """Normalise a client's request to a name relative to the root, or raise Refused.

    A leading ``/`` is stripped and ``\\`` read as ``/`` (Windows boot loaders send it).
    """
    if "\x00" in requested:
        raise Refused("file name contains a NUL byte")
    parts = dot_segments(requested.replace("\\", "/"), above_root="refuse")
    if parts is None:
        raise Refused(f"{requested!r} leaves the root")
    if not parts:
        raise Refused(f"{requested!r} names no file")
    return "/".join(parts)


class Names:
    """The publishing rules of one store, which look at what exists under its root."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout

    def destination(self, prefix: str, url: str) -> str:
        """The published name for ``(prefix, url)``, or NameRefused: :meth:`derive` and
        :meth:`check_path` together."""
        name = self.derive(prefix, url)
        self.check_path(name)
        return name

    def derive(self, prefix: str, url: str, file_name: str | None = None) -> str:
        """The name for ``(prefix, url)`` as smart-proxy derives it, checked as text only.

        ``prefix-basename``, or ``prefix + basename`` when the prefix ends in ``/``; relative to
        the root; an absolute prefix is accepted only when it lies inside the root. The
        basename is the URL's last path segment unless the source names its file otherwise
        (``file_name``: an OCI layer's title). Touches no file: what exists on the way is
        :meth:`check_path`'s business.
        """
        if "\x00" in prefix or "\x00" in url:
            raise NameRefused("prefix or path contains a NUL byte")
        if not prefix.strip():
            raise NameRefused("prefix is empty")
        base = url_basename(url) if file_name is None else file_name
        if not base:
            raise NameRefused(f"path {url!r} does not end in a file name")
        if base in (".", ".."):
            raise NameRefused(f"path {url!r} ends in {base!r}, which is not a file name")
        prefix = self._relative_prefix(prefix)
        name = prefix + base if prefix.endswith("/") else f"{prefix}-{base}"
        return self.check_text(name)

    def _relative_prefix(self, prefix: str) -> str:
        if not prefix.startswith("/"):
            return prefix
        real_prefix = os.path.normpath(prefix)
        root = str(self.layout.root)
        if not is_within(real_prefix, root) or real_prefix == root:
            raise NameRefused(f"prefix {prefix!r} is an absolute path outside the TFTP root "
                              f"{root}")
        tail = "/" if prefix.endswith("/") else ""
        return os.path.relpath(real_prefix, root) + tail

    def set_id(self, prefix: str) -> str:
        """The boot set a prefix names: the files Foreman publishes under one prefix."""
        prefix = self._relative_prefix(prefix)
        tail = "/" if prefix.endswith("/") else ""
        return "/".join(plain_segments(prefix)) + tail

    def check_name(self, name: str) -> str:
        """Validate a relative published name and return it normalised, or raise NameRefused."""
        name = self.check_text(name)
        self.check_path(name)
        return name

    def check_text(self, name: str) -> str:
        """The rules a name's text must follow; returns it normalised, or raises NameRefused."""
        if "\x00" in name:
            raise NameRefused("name contains a NUL byte")
        if name.startswith("/"):
            raise NameRefused(f"{name!r} is an absolute path; names are relative to the TFTP "
                              f"root")
        parts = plain_segments(name)
        if not parts:
            raise NameRefused(f"{name!r} names no file")
        if ".." in parts:
            raise NameRefused(f"{name!r} contains '..', which could leave the TFTP root")
        if parts[0] == STATE_DIRNAME:
            raise NameRefused(f"{name!r} is inside tftproxy's private directory "
                              f"{STATE_DIRNAME}/")
        return "/".join(parts)

    def check_path(self, name: str) -> None:
        """What exists on the way to a (normalised) name must let it be published: any
        symlink stays inside the root and out of tftproxy's state; no file where a directory
        must be, no directory where the link goes. Run before every link is made."""
        parts = name.split("/")
        real_root = self.layout.real_root
        current = real_root
        for i, part in enumerate(parts):
            candidate = os.path.join(current, part)
            last = i == len(parts) - 1
            shown = "/".join(parts[: i + 1])
            if os.path.islink(candidate):
                target = os.path.realpath(candidate)
                if not is_within(target, real_root):
                    raise NameRefused(f"{shown!r} is a symlink leading outside the TFTP root")
                if is_within(target, self.layout.real_state) and not last:
                    raise NameRefused(f"{shown!r} leads into tftproxy's private directory")
                current = target
            elif os.path.exists(candidate):
                if not last and not os.path.isdir(candidate):
                    raise NameRefused(f"{shown!r} exists and is not a directory")
                if last and os.path.isdir(candidate):
                    raise NameRefused(f"{shown!r} is an existing directory")
                current = candidate
            else:
                current = candidate
