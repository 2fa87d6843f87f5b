"""Which URLs tftproxy fetches, decided before any job starts, and who fetches each.

smart-proxy fetches http, https and ftp (curl) and accepts nfs without fetching it (Foreman
sends nfs media paths too); so does tftproxy, and it pulls ``oci://`` sources from registries.
:class:`Fetchers` is the one downloader the jobs see: http(s) goes to
:mod:`tftproxy.fetch.http`, ftp to :mod:`tftproxy.fetch.ftp`, and OCI sources to its
registry client (:mod:`tftproxy.fetch.oci`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from tftproxy.errors import UnsupportedSource, printable
from tftproxy.fetch.http import Fetcher
from tftproxy.fetch.oci import OciClient
from tftproxy.fetch.ocispec import SCHEMES as OCI_SCHEMES
from tftproxy.fetch.ocispec import parse_source
from tftproxy.fetch.options import FetchOptions
from tftproxy.fetch.results import (
    Downloaded,
    Downloader,
    FetchObserver,
    NotModified,
    OnResponse,
    ProgressFn,
    SinkFactory,
)

if TYPE_CHECKING:
    from tftproxy.fetch.ftp import FtpFetcher

FETCHED = ("http", "https", "ftp", *OCI_SCHEMES)
IGNORED = ("nfs",)


def check_scheme(url: str) -> str:
    """The URL's scheme if we fetch it; ``nfs`` is returned for the caller to ignore."""
    try:
        scheme = urlsplit(url).scheme.lower()
    except ValueError as exc:  # "http://[::1", a bracket in the wrong place
        raise UnsupportedSource(f"{printable(url)!r} is not a valid URL: {exc}") from None
    if scheme in FETCHED or scheme in IGNORED:
        return scheme
    if not scheme:
        raise UnsupportedSource(f"{url!r} is not a URL (no scheme)")
    raise UnsupportedSource(f"unsupported URL scheme {scheme!r} (use http, https, ftp or oci)")


def file_name(url: str) -> str | None:
    """The file name a source names when it is not its URL's last path segment: an OCI
    layer's title (BadSource if the reference is malformed); None for the rest."""
    if urlsplit(url).scheme.lower() in OCI_SCHEMES:
        return parse_source(url).title
    return None


class Fetchers:
    """The one downloader of a process: http(s) and ftp behind one
    :class:`~tftproxy.fetch.results.Downloader`, and the registry client of OCI sources
    (``oci``), which works over the http(s) session."""

    def __init__(self, options: FetchOptions, observer: FetchObserver | None = None) -> None:
        self.http = Fetcher(options, observer)
        self.oci = OciClient(self.http)
        self.observer = observer
        self._ftp: FtpFetcher | None = None

    @property
    def options(self) -> FetchOptions:
        return self.http.options

    @options.setter
    def options(self, options: FetchOptions) -> None:
        """New limits (a reload), for every scheme's next request."""
        self.http.options = options
        if self._ftp is not None:
            self._ftp.options = options

    def _ftp_fetcher(self) -> FtpFetcher:
        if self._ftp is None:
            # Imported on first use: most trees are served over http only.
            from tftproxy.fetch.ftp import FtpFetcher

            self._ftp = FtpFetcher(self.options, self.observer)
        return self._ftp

    def _for(self, url: str) -> Downloader:
        scheme = urlsplit(url).scheme.lower()
        if scheme in OCI_SCHEMES:
            raise UnsupportedSource(f"{url}: an OCI source is pulled through its registry "
                                    f"(Fetchers.oci), not downloaded as a URL")
        return self._ftp_fetcher() if scheme == "ftp" else self.http

    async def fetch(self, url: str, sink: SinkFactory, *, etag: str | None = None,
                    last_modified: str | None = None, size: int | None = None,
                    on_response: OnResponse | None = None,
                    progress: ProgressFn | None = None,
                    preflight: bool = False) -> Downloaded | NotModified:
        """One conditional download by the URL's scheme; ``preflight`` (a HEAD first) is
        HTTP's: an FTP download asks SIZE and MDTM before anything anyway."""
        downloader = self._for(url)
        if downloader is self.http:
            return await self.http.fetch(url, sink, etag=etag, last_modified=last_modified,
                                         size=size, on_response=on_response,
                                         progress=progress, preflight=preflight)
        return await downloader.fetch(url, sink, etag=etag, last_modified=last_modified,
                                      size=size, on_response=on_response, progress=progress)

    async def get_text(self, url: str, limit: int) -> str | None:
        return await self._for(url).get_text(url, limit)

    async def close(self) -> None:
        await self.http.close()
        if self._ftp is not None:
            await self._ftp.close()

    async def __aenter__(self) -> Fetchers:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
