"""The HTTP fetcher: one conditional HTTP(S) download into a sink, hashed as it streams.

It knows nothing of names or links; :mod:`tftproxy.jobs` decides what a result means.
Bytes are stored exactly as the server sent them (``Accept-Encoding: identity``, never
decoded), as curl does without ``--compressed``. Every aiohttp failure becomes an
:class:`~tftproxy.errors.UpstreamError` with a one-line reason in one place
(:meth:`Fetcher.mapped_errors`); transient ones are retried with backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import aiohttp

from tftproxy import __version__
from tftproxy.errors import UpstreamError
from tftproxy.fetch.options import FetchOptions
from tftproxy.fetch.results import (
    Downloaded,
    NotModified,
    OnResponse,
    ProgressFn,
    Sink,
    SinkFactory,
    Validators,
)
from tftproxy.fetch.writer import HashingWriter

log = logging.getLogger(__name__)

# Large batches keep per-batch thread hand-offs rare; a few in flight bound memory (~5 MiB).
BATCH = 1024 * 1024
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

    def __init__(self, options: FetchOptions) -> None:
        self.options = options
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
        on_response: OnResponse | None = None,
        progress: ProgressFn | None = None,
        preflight: bool = False,
    ) -> Downloaded | NotModified:
        """GET ``url``, conditionally when validators are given, retrying what is transient.

        ``sink()`` gives a fresh, empty file for each attempt that gets a body: a failed
        attempt's bytes are never continued. ``on_response`` runs once a 200's headers are
        in, before the body. With ``preflight`` (smart-proxy's tftp_http_download_preflight)
        an unconditional download is preceded by a HEAD, and a HEAD the server refuses
        fails it before anything is downloaded or hidden.
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
        """Run attempts until one succeeds, retrying only what is transient, within the
        total time limit."""
        o = self.options
        attempt = 0
        deadline = time.monotonic() + o.total_timeout
        while True:
            try:
                async with asyncio.timeout_at(_loop_deadline(deadline)):
                    return await attempt_once()
            except TimeoutError:
                raise UpstreamError(
                    f"gave up after the total time limit of {o.total_timeout:g} s"
                ) from None
            except UpstreamError as exc:
                if not exc.retryable or attempt >= o.retries:
                    if attempt:
                        raise UpstreamError(f"{exc.reason} (after {attempt + 1} attempts)",
                                         local=exc.local) from None
                    raise
                delay = o.retry_backoff * (2**attempt)
                attempt += 1
                log.warning("%s: %s; retry %d/%d in %.1f s", url, exc.reason, attempt,
                            o.retries, delay)
                await asyncio.sleep(delay)

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
        with self.mapped_errors():
            async with await self.request("GET", url, headers) as resp:
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
                                         self.options.max_file_size)

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
        except aiohttp.ClientConnectorError as exc:
            raise UpstreamError(f"cannot connect: {exc.os_error.strerror or exc}",
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
    max_file_size: int,
    limit_name: str = "max_file_size",
) -> Downloaded:
    """The body into ``sink``, hashed on the way; its length checked against
    ``validators.content_length``; more than ``max_file_size`` bytes (``limit_name`` in the
    message) stops it at once."""
    expected = validators.content_length
    writer = HashingWriter(sink)
    size = 0
    batch: list[bytes] = []
    batch_size = 0
    last_report = time.monotonic()
    if progress is not None:
        progress(0, expected)
    try:
        while True:
            try:
                chunk = await resp.content.readany()
            except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError,
                    ConnectionError) as exc:
                if isinstance(exc, aiohttp.ServerTimeoutError):
                    raise
                raise _broken_off(exc, size, expected) from None
            if not chunk:
                break
            size += len(chunk)
            if size > max_file_size:
                raise UpstreamError(f"file grew past {limit_name} ({max_file_size} bytes)")
            batch.append(chunk)
            batch_size += len(chunk)
            if batch_size >= BATCH:
                await writer.submit(batch)
                batch, batch_size = [], 0
            if progress is not None:
                now = time.monotonic()
                if now - last_report >= 0.1:
                    last_report = now
                    progress(size, expected)
        if batch:
            await writer.submit(batch)
        await writer.drain()
    except aiohttp.ServerTimeoutError:
        raise  # a stall, named by the caller; TimeoutError is an OSError too
    except OSError as exc:
        raise UpstreamError(f"cannot write the staging file: {exc.strerror}",
                            local=True) from None
    finally:
        writer.close()
    if expected is not None and size != expected:
        raise UpstreamError(f"truncated: got {size} of {expected} bytes", retryable=True)
    if progress is not None:
        progress(size, expected)
    return Downloaded(final_url, validators, writer.hexdigest(), size)


def _broken_off(exc: BaseException, size: int, expected: int | None) -> UpstreamError:
    """Name a body that ended early: reset by the peer, or closed (truncated)."""
    of = f"{size} of {expected}" if expected is not None else f"{size}"
    chain: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and len(chain) < 5:
        chain.append(cur)
        cur = cur.__cause__ or cur.__context__
    if any(isinstance(e, ConnectionResetError) for e in chain) or "reset" in str(exc).lower():
        return UpstreamError(f"connection reset by the server after {of} bytes", retryable=True)
    return UpstreamError(f"truncated: the server closed the connection after {of} bytes",
                      retryable=True)


def _loop_deadline(monotonic_deadline: float) -> float:
    loop = asyncio.get_running_loop()
    return loop.time() + (monotonic_deadline - time.monotonic())


def _cause(exc: BaseException) -> str:
    text = str(exc)
    with contextlib.suppress(Exception):
        if exc.__cause__ is not None and not text:
            text = str(exc.__cause__)
    return text or type(exc).__name__
