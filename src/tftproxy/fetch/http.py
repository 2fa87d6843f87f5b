"""The HTTP fetcher: one conditional HTTP(S) download into a sink, hashed as it streams.

It knows nothing of names or links; :mod:`tftproxy.jobs` decides what a result means.
Bytes are stored exactly as the server sent them (``Accept-Encoding: identity``, never
decoded), as curl does without ``--compressed``. A trickling server is cut off: with
``min_rate``, the response headers must come within ``rate_window`` seconds and the body at
``min_rate`` bytes/s or more over each ``rate_window``, so a name hidden for a refresh is not
kept hidden for an hour by a few bytes a second. Every aiohttp failure becomes an
:class:`~tftproxy.errors.UpstreamError` with a one-line reason in one place
(:meth:`Fetcher.mapped_errors`); transient ones are retried with backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import aiohttp

from tftproxy import __version__
from tftproxy.errors import UpstreamError
from tftproxy.fetch.options import FetchOptions
from tftproxy.fetch.results import (
    Downloaded,
    FetchObserver,
    NotModified,
    OnResponse,
    ProgressFn,
    Sink,
    SinkFactory,
    Validators,
)
from tftproxy.fetch.retry import retrying
from tftproxy.fetch.writer import BodyBroken, copy_body

log = logging.getLogger(__name__)

READ_BUFSIZE = 256 * 1024

T = TypeVar("T")


# For a manifest probe, "the server will not give it to us" means "not here": besides 404 and
# 410, mirrors commonly deny dotfiles (nginx `location ~ /\.`) with 403, which is exactly why
# some trees also ship `treeinfo` without the dot.
ABSENT = frozenset({401, 403, 404, 410})


def _content_length(resp: aiohttp.ClientResponse) -> int | None:
    raw = resp.headers.get("Content-Length")
    if raw is None or resp.headers.get("Transfer-Encoding"):
        return None
    try:
        value = int(raw)
    except ValueError:
        return None
    return value if value >= 0 else None


class Fetcher:
    """Downloads with the timeouts, retries, TLS and proxy rules of the settings."""

    def __init__(self, options: FetchOptions, observer: FetchObserver | None = None) -> None:
        self.options = options
        self.observer = observer
        self._session: aiohttp.ClientSession | None = None
        self._session_lock = asyncio.Lock()

    def _ssl(self) -> ssl.SSLContext | bool:
        if not self.options.verify_server_cert:
            return False
        ctx = ssl.create_default_context()
        if self.options.ca_bundle is not None:
            ctx.load_verify_locations(cafile=str(self.options.ca_bundle))
        return ctx

    async def session(self) -> aiohttp.ClientSession:
        """The one client session (TLS, timeouts, no decoding) every upstream request uses."""
        async with self._session_lock:
            if self._session is None or self._session.closed:
                # Reading the CA certificates is file work: not on the event loop.
                self._session = self._new_session(await asyncio.to_thread(self._ssl))
        return self._session

    def _new_session(self, ssl_context: ssl.SSLContext | bool) -> aiohttp.ClientSession:
        o = self.options
        return aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=ssl_context, limit=64),
            timeout=aiohttp.ClientTimeout(
                total=None, connect=o.connect_timeout, sock_read=o.stall_timeout
            ),
            auto_decompress=False,
            read_bufsize=READ_BUFSIZE,
            headers={"User-Agent": f"tftproxy/{__version__}"},
            trust_env=False,
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def __aenter__(self) -> Fetcher:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def fetch(
        self,
        url: str,
        sink: SinkFactory,
        *,
        etag: str | None = None,
        last_modified: str | None = None,
        size: int | None = None,
        on_response: OnResponse | None = None,
        progress: ProgressFn | None = None,
        preflight: bool = False,
    ) -> Downloaded | NotModified:
        """GET ``url``, conditionally when validators are given, retrying what is transient.

        ``sink()`` gives a fresh, empty file for each attempt that gets a body: a failed
        attempt's bytes are never continued. ``on_response`` runs once a 200's headers are
        in, before the body. ``size`` is not sent: HTTP's validators say enough. With
        ``preflight`` (smart-proxy's tftp_http_download_preflight) an unconditional download
        is preceded by a HEAD, and a HEAD the server refuses fails it before anything is
        downloaded or hidden.
        """
        if preflight and not (etag or last_modified):
            await self.retrying(url, lambda: self._preflight(url))
        return await self.retrying(url, lambda: self._attempt(
            url, sink, etag, last_modified, on_response, progress))

    async def get_text(self, url: str, limit: int) -> str | None:
        """A small document (a checksum manifest), whole; None when the server says it is
        not there (401, 403, 404, 410: mirrors often deny dotfiles).

        Same TLS, proxy, timeouts, redirects and retries as downloads; failures raise
        UpstreamError naming the URL.
        """
        try:
            return await self.retrying(url, lambda: self._text_attempt(url, limit))
        except UpstreamError as exc:
            raise UpstreamError(f"{url}: {exc.reason}", local=exc.local) from None

    async def retrying(self, url: str, attempt_once: Callable[[], Awaitable[T]]) -> T:
        """:func:`tftproxy.fetch.retry.retrying` with this fetcher's options (the OCI client
        runs its registry calls through it)."""
        return await retrying(self.options, url, attempt_once)

    async def _attempt(
        self,
        url: str,
        sink: SinkFactory,
        etag: str | None,
        last_modified: str | None,
        on_response: OnResponse | None,
        progress: ProgressFn | None,
    ) -> Downloaded | NotModified:
        headers = {"Accept-Encoding": "identity"}
        if etag:
            headers["If-None-Match"] = etag
        if last_modified:
            headers["If-Modified-Since"] = last_modified
        o = self.options
        # Headers trickled byte by byte would hold the job (and its set's lock) for hours.
        header_limit = max(o.rate_window, o.stall_timeout) if o.min_rate else None
        headers_due = asyncio.timeout(header_limit)
        try:
            return await self._response(url, headers, headers_due, etag, last_modified, sink,
                                        on_response, progress)
        except TimeoutError:
            if not headers_due.expired():
                raise  # the total time limit, named by the caller
            raise UpstreamError(f"too slow: no response headers within {header_limit:g} s",
                                retryable=True) from None

    async def _response(self, url: str, headers: dict[str, str], headers_due: asyncio.Timeout,
                        etag: str | None, last_modified: str | None, sink: SinkFactory,
                        on_response: OnResponse | None,
                        progress: ProgressFn | None) -> Downloaded | NotModified:
        with self.mapped_errors():
            async with headers_due, await self.request("GET", url, headers) as resp:
                headers_due.reschedule(None)
                if self.observer is not None:
                    self.observer.response(resp.status, "download")
                final_url = str(resp.url)
                validators = Validators(
                    etag=resp.headers.get("ETag"),
                    last_modified=resp.headers.get("Last-Modified"),
                    content_length=_content_length(resp),
                )
                if resp.status == 304 and (etag or last_modified):
                    return NotModified(final_url, validators)
                if resp.status >= 500:
                    raise UpstreamError(f"HTTP {resp.status} {resp.reason or ''}".rstrip(),
                                        retryable=True)
                if resp.status != 200:
                    raise UpstreamError(f"HTTP {resp.status} {resp.reason or ''}".rstrip())
                self._check_size(validators.content_length)
                if on_response is not None:
                    await on_response(validators)
                # The staging file is made only now: an up-to-date check creates no file.
                return await stream_body(resp, await sink(), final_url, validators, progress,
                                         self.options, observer=self.observer)

    async def _preflight(self, url: str) -> None:
        with self.mapped_errors():
            async with await self.request("HEAD", url, {"Accept-Encoding": "identity"}) as resp:
                # A server without HEAD (405, 501) leaves the decision to the GET.
                if resp.status < 400 or resp.status in (405, 501):
                    return
                reason = f"preflight HEAD answered HTTP {resp.status} {resp.reason or ''}"
                raise UpstreamError(reason.rstrip(), retryable=resp.status >= 500)

    async def _text_attempt(self, url: str, limit: int) -> str | None:
        with self.mapped_errors():
            async with await self.request("GET", url, {"Accept-Encoding": "identity"}) as resp:
                if self.observer is not None:
                    self.observer.response(resp.status, "manifest")
                if resp.status in ABSENT:
                    return None
                if resp.status >= 500:
                    raise UpstreamError(f"HTTP {resp.status} {resp.reason or ''}".rstrip(),
                                        retryable=True)
                if resp.status != 200:
                    raise UpstreamError(f"HTTP {resp.status} {resp.reason or ''}".rstrip())
                length = _content_length(resp)
                if length is not None and length > limit:
                    raise UpstreamError(f"{length} bytes, more than a manifest may be ({limit})")
                body = bytearray()
                async for chunk in resp.content.iter_chunked(64 * 1024):
                    body += chunk
                    if len(body) > limit:
                        raise UpstreamError(f"more than {limit} bytes, more than a manifest may be")
                # Manifests are ASCII; undecodable bytes only make the parser reject them.
                return bytes(body).decode("utf-8-sig", errors="replace")

    async def request(self, method: str, url: str, headers: dict[str, str]) -> Any:
        """One request with the redirect and proxy rules of the settings (``async with``)."""
        o = self.options
        return (await self.session()).request(
            method, url,
            headers=headers,
            # aiohttp counts the responses, not the redirects followed.
            allow_redirects=o.max_redirects > 0,
            max_redirects=o.max_redirects + 1,
            proxy=o.http_proxy,
            # Per request, not per session: a reload (SIGHUP) applies to the next request.
            timeout=aiohttp.ClientTimeout(total=None, connect=o.connect_timeout,
                                          sock_read=o.stall_timeout),
        )

    @contextlib.contextmanager
    def mapped_errors(self) -> Iterator[None]:
        """aiohttp's exceptions as one-line UpstreamErrors, transient ones marked retryable."""
        o = self.options
        try:
            yield
        except aiohttp.TooManyRedirects:
            raise UpstreamError(f"more than {o.max_redirects} redirects (a redirect loop?)"
                                ) from None
        except aiohttp.InvalidURL as exc:
            raise UpstreamError(f"invalid URL {exc}") from None
        except aiohttp.ClientSSLError as exc:
            raise UpstreamError(f"TLS error: {exc}") from None
        except aiohttp.ClientPayloadError as exc:
            raise UpstreamError(f"transfer broken off: {_cause(exc)}", retryable=True) from None
        except aiohttp.ConnectionTimeoutError:
            raise UpstreamError(f"connect timed out after {o.connect_timeout:g} s",
                             retryable=True) from None
        except aiohttp.ServerTimeoutError:
            raise UpstreamError(f"stalled: no data for {o.stall_timeout:g} s",
                             retryable=True) from None
        except aiohttp.ClientProxyConnectionError as exc:
            raise UpstreamError(f"cannot connect to the HTTP proxy {o.http_proxy}: "
                                f"{_os_reason(exc.os_error)}", retryable=True) from None
        except aiohttp.ClientConnectorError as exc:
            raise UpstreamError(f"cannot connect: {_os_reason(exc.os_error)}",
                             retryable=True) from None
        except (aiohttp.ClientConnectionError, ConnectionError) as exc:
            raise UpstreamError(f"connection lost: {_cause(exc)}", retryable=True) from None
        except aiohttp.ClientError as exc:
            raise UpstreamError(f"HTTP client error: {exc}") from None

    def _check_size(self, length: int | None) -> None:
        o = self.options
        if length is None:
            return
        if length > o.max_file_size:
            raise UpstreamError(
                f"file is {length} bytes, more than max_file_size ({o.max_file_size})"
            )


async def stream_body(
    resp: aiohttp.ClientResponse,
    sink: Sink,
    final_url: str,
    validators: Validators,
    progress: ProgressFn | None,
    options: FetchOptions,
    *,
    limit: int | None = None,
    limit_name: str = "max_file_size",
    observer: FetchObserver | None = None,
) -> Downloaded:
    """The body into ``sink``, hashed on the way; its length checked against
    ``validators.content_length``; more than ``limit`` bytes (``options.max_file_size``
    unless given; ``limit_name`` in the message) stops it at once, and so does a body slower
    than ``options.min_rate`` over ``options.rate_window``. ``observer`` hears how many bytes
    were written, whatever the outcome."""

    async def read() -> bytes:
        try:
            return await resp.content.readany()
        except aiohttp.ServerTimeoutError:
            raise UpstreamError(f"stalled: no data for {options.stall_timeout:g} s",
                                retryable=True) from None
        except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError,
                ConnectionError) as exc:
            raise BodyBroken() from exc

    sha256, size = await copy_body(
        read, sink, expected=validators.content_length, progress=progress,
        max_file_size=options.max_file_size if limit is None else limit, limit_name=limit_name,
        min_rate=options.min_rate, rate_window=options.rate_window,
        written=observer.downloaded if observer is not None else None)
    return Downloaded(final_url, validators, sha256, size)


def _os_reason(err: OSError) -> str:
    # asyncio words a refused connect "Connect call failed (addr)"; the errno says it plainly.
    if err.errno:
        return os.strerror(err.errno)
    return err.strerror or str(err)


def _cause(exc: BaseException) -> str:
    text = str(exc)
    with contextlib.suppress(Exception):
        if exc.__cause__ is not None and not text:
            text = str(exc.__cause__)
    return text or type(exc).__name__
