"""Which URLs tftproxy fetches, decided before any job starts, and who fetches each.

smart-proxy fetches http, https and ftp (curl) and accepts nfs without fetching it (Foreman
sends nfs media paths too); so does tftproxy. :class:`Fetchers` is the one downloader the
jobs see: http(s) goes to :mod:`tftproxy.fetch.http`, ftp to :mod:`tftproxy.fetch.ftp`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from tftproxy.errors import UnsupportedSource
from tftproxy.fetch.http import Fetcher
from tftproxy.fetch.options import FetchOptions
from tftproxy.fetch.results import (
    Downloaded,
    NotModified,
    OnResponse,
    ProgressFn,
    SinkFactory,
)

if TYPE_CHECKING:
    from tftproxy.fetch.ftp import FtpFetcher

FETCHED = ("http", "https", "ftp")
IGNORED = ("nfs",)


def check_scheme(url: str) -> str:
    """The URL's scheme if we fetch it; ``nfs`` is returned for the caller to ignore."""
    scheme = urlsplit(url).scheme.lower()
    if scheme in FETCHED or scheme in IGNORED:
        return scheme
    if not scheme:
        raise UnsupportedSource(f"{url!r} is not a URL (no scheme)")
    raise UnsupportedSource(f"unsupported URL scheme {scheme!r} (use http, https or ftp)")


class Fetchers:
    """http(s) and ftp behind one :class:`~tftproxy.fetch.results.Downloader`."""

    def __init__(self, options: FetchOptions) -> None:
        self.options = options
        self.http = Fetcher(options)
        self._ftp: FtpFetcher | None = None

    def _ftp_fetcher(self) -> FtpFetcher:
        if self._ftp is None:
            # Imported on first use: most trees are served over http only.
            from tftproxy.fetch.ftp import FtpFetcher

            self._ftp = FtpFetcher(self.options)
        return self._ftp

    def _for(self, url: str) -> Fetcher | FtpFetcher:
        return self._ftp_fetcher() if urlsplit(url).scheme.lower() == "ftp" else self.http

    async def fetch(self, url: str, sink: SinkFactory, *, etag: str | None = None,
                    last_modified: str | None = None, size: int | None = None,
                    on_response: OnResponse | None = None,
                    progress: ProgressFn | None = None) -> Downloaded | NotModified:
        return await self._for(url).fetch(url, sink, etag=etag, last_modified=last_modified,
                                          size=size, on_response=on_response,
                                          progress=progress)

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
