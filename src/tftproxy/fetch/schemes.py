"""Which URLs tftproxy fetches, decided before any job starts."""

from __future__ import annotations

from urllib.parse import urlsplit

from tftproxy.errors import UnsupportedSource
from tftproxy.fetch.ocispec import SCHEMES as OCI_SCHEMES
from tftproxy.fetch.ocispec import parse_source

FETCHED = ("http", "https", *OCI_SCHEMES)
# Foreman sends nfs media paths too; smart-proxy accepts and ignores them.
IGNORED = ("nfs",)


def check_scheme(url: str) -> str:
    """The URL's scheme if we fetch it; ``nfs`` is returned for the caller to ignore."""
    scheme = urlsplit(url).scheme.lower()
    if scheme in FETCHED or scheme in IGNORED:
        return scheme
    if scheme == "ftp":
        raise UnsupportedSource(
            "ftp URLs are not supported: no well-kept asynchronous FTP client is in our "
            "dependencies; publish the media over http or https"
        )
    if not scheme:
        raise UnsupportedSource(f"{url!r} is not a URL (no scheme)")
    raise UnsupportedSource(f"unsupported URL scheme {scheme!r} (use http, https or oci)")


def file_name(url: str) -> str | None:
    """The file name a source names when it is not its URL's last path segment: an OCI
    layer's title (BadSource if the reference is malformed); None for the rest."""
    if urlsplit(url).scheme.lower() in OCI_SCHEMES:
        return parse_source(url).title
    return None
