"""The fetcher: one conditional HTTP(S) download into a staging file, hashed as it streams.

It knows nothing of names or links; :mod:`tftproxy.bootfiles` decides what a result means.
Bytes are stored exactly as the server sent them (``Accept-Encoding: identity``, never
decoded), as curl does without ``--compressed``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit

import aiohttp

from tftproxy import __version__
from tftproxy.config import Settings

log = logging.getLogger(__name__)

# Large batches keep per-chunk Python overhead small; two in flight bound memory (~2 MiB).
BATCH = 1024 * 1024
READ_BUFSIZE = 256 * 1024


class FetchError(Exception):
    """A download failed; ``str()`` is a one-line reason fit for Foreman's error dialog."""

    def __init__(self, reason: str, *, retryable: bool = False, local: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable
        self.local = local


class UnsupportedScheme(FetchError):
    """The URL's scheme is not one we fetch (answered with 400)."""


class Sink(Protocol):
    fd: int

    def write(self, data: bytes | memoryview) -> None: ...


@dataclass(frozen=True)
class Validators:
    """What the server told us about the representation, kept verbatim."""

    etag: str | None
    last_modified: str | None
    content_length: int | None


@dataclass(frozen=True)
class NotModified:
    final_url: str
    validators: Validators


@dataclass(frozen=True)
class Downloaded:
    final_url: str
    validators: Validators
    sha256: str
    size: int


ProgressFn = Callable[[int, int | None], None]
OnResponse = Callable[[Validators], Awaitable[None]]


def check_scheme(url: str) -> str:
    """The URL's scheme if we fetch it; ``nfs`` is returned for the caller to ignore."""
    scheme = urlsplit(url).scheme.lower()
    if scheme in ("http", "https", "nfs"):
        return scheme
    if scheme == "ftp":
        raise UnsupportedScheme(
            "ftp URLs are not supported: no well-kept asynchronous FTP client is in our "
            "dependencies; publish the media over http or https"
        )
    if not scheme:
        raise UnsupportedScheme(f"{url!r} is not a URL (no scheme)")
    raise UnsupportedScheme(f"unsupported URL scheme {scheme!r} (use http or https)")


class _HashingWriter:
    """Hashes and writes batches on one worker thread, so hashing overlaps the network.

    hashlib and os.write release the GIL for large buffers; with one batch being received
    while the previous one is hashed and written, sha256 costs little wall time.
    """

    def __init__(self, sink: Sink, executor: ThreadPoolExecutor) -> None:
        self._sink = sink
        self._hash = hashlib.sha256()
        self._executor = executor
        self._pending: Future[None] | None = None

    def _work(self, data: bytes) -> None:
        self._hash.update(data)
        self._sink.write(data)

    async def submit(self, data: bytes) -> None:
        await self.drain()
        self._pending = self._executor.submit(self._work, data)

    async def drain(self) -> None:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            await asyncio.wrap_future(pending)

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


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

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._session: aiohttp.ClientSession | None = None
        self._executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="tftproxy-hash")

    def _ssl(self) -> ssl.SSLContext | bool:
        if not self.settings.verify_server_cert:
            return False
        ctx = ssl.create_default_context()
        if self.settings.ca_bundle is not None:
            ctx.load_verify_locations(cafile=str(self.settings.ca_bundle))
        return ctx

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            s = self.settings
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self._ssl(), limit=64),
                timeout=aiohttp.ClientTimeout(
                    total=None, connect=s.tftp_connect_timeout, sock_read=s.stall_timeout
                ),
                auto_decompress=False,
                read_bufsize=READ_BUFSIZE,
                headers={"User-Agent": f"tftproxy/{__version__}"},
                trust_env=False,
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
        self._executor.shutdown(wait=False)

    async def fetch(
        self,
        url: str,
        sink: Callable[[], Sink],
        *,
        etag: str | None = None,
        last_modified: str | None = None,
        on_response: OnResponse | None = None,
        progress: ProgressFn | None = None,
    ) -> Downloaded | NotModified:
        """GET ``url``, conditionally when validators are given, retrying what is transient.

        ``sink()`` gives a fresh, empty file for each attempt: a failed attempt's bytes are
        never continued. ``on_response`` runs once a 200's headers are in, before the body.
        """
        s = self.settings
        attempt = 0
        deadline = time.monotonic() + s.fetch_timeout
        while True:
            try:
                async with asyncio.timeout_at(_loop_deadline(deadline)):
                    return await self._attempt(url, sink(), etag, last_modified, on_response,
                                               progress)
            except TimeoutError:
                raise FetchError(
                    f"gave up after the total time limit of {s.fetch_timeout:g} s"
                ) from None
            except FetchError as exc:
                if not exc.retryable or attempt >= s.retries:
                    if attempt:
                        raise FetchError(f"{exc.reason} (after {attempt + 1} attempts)",
                                         local=exc.local) from None
                    raise
                delay = s.retry_backoff * (2**attempt)
                attempt += 1
                log.warning("%s: %s; retry %d/%d in %.1f s", url, exc.reason, attempt,
                            s.retries, delay)
                await asyncio.sleep(delay)

    async def _attempt(
        self,
        url: str,
        sink: Sink,
        etag: str | None,
        last_modified: str | None,
        on_response: OnResponse | None,
        progress: ProgressFn | None,
    ) -> Downloaded | NotModified:
        s = self.settings
        headers = {"Accept-Encoding": "identity"}
        if etag:
            headers["If-None-Match"] = etag
        if last_modified:
            headers["If-Modified-Since"] = last_modified
        try:
            async with self._get_session().get(
                url,
                headers=headers,
                # aiohttp counts the responses, not the redirects followed.
                allow_redirects=s.max_redirects > 0,
                max_redirects=s.max_redirects + 1,
                proxy=s.http_proxy,
            ) as resp:
                final_url = str(resp.url)
                validators = Validators(
                    etag=resp.headers.get("ETag"),
                    last_modified=resp.headers.get("Last-Modified"),
                    content_length=_content_length(resp),
                )
                if resp.status == 304 and (etag or last_modified):
                    return NotModified(final_url, validators)
                if resp.status >= 500:
                    raise FetchError(f"HTTP {resp.status} {resp.reason or ''}".rstrip(),
                                     retryable=True)
                if resp.status != 200:
                    raise FetchError(f"HTTP {resp.status} {resp.reason or ''}".rstrip())
                self._check_size(validators.content_length)
                if on_response is not None:
                    await on_response(validators)
                return await self._stream(resp, sink, final_url, validators, progress)
        except aiohttp.TooManyRedirects:
            raise FetchError(f"more than {s.max_redirects} redirects (a redirect loop?)") from None
        except aiohttp.InvalidURL as exc:
            raise FetchError(f"invalid URL {exc}") from None
        except aiohttp.ClientSSLError as exc:
            raise FetchError(f"TLS error: {exc}") from None
        except aiohttp.ClientPayloadError as exc:
            raise FetchError(f"transfer broken off: {_cause(exc)}", retryable=True) from None
        except aiohttp.ConnectionTimeoutError:
            raise FetchError(f"connect timed out after {s.tftp_connect_timeout:g} s",
                             retryable=True) from None
        except aiohttp.ServerTimeoutError:
            raise FetchError(f"stalled: no data for {s.stall_timeout:g} s",
                             retryable=True) from None
        except aiohttp.ClientConnectorError as exc:
            raise FetchError(f"cannot connect: {exc.os_error.strerror or exc}",
                             retryable=True) from None
        except (aiohttp.ClientConnectionError, ConnectionError) as exc:
            raise FetchError(f"connection lost: {_cause(exc)}", retryable=True) from None
        except aiohttp.ClientError as exc:
            raise FetchError(f"HTTP client error: {exc}") from None

    def _check_size(self, length: int | None) -> None:
        s = self.settings
        if length is None:
            return
        if length > s.max_file_size:
            raise FetchError(
                f"file is {length} bytes, more than max_file_size ({s.max_file_size})"
            )

    async def _stream(
        self,
        resp: aiohttp.ClientResponse,
        sink: Sink,
        final_url: str,
        validators: Validators,
        progress: ProgressFn | None,
    ) -> Downloaded:
        s = self.settings
        expected = validators.content_length
        writer = _HashingWriter(sink, self._executor)
        size = 0
        batch = bytearray()
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
                if size > s.max_file_size:
                    raise FetchError(
                        f"file grew past max_file_size ({s.max_file_size} bytes)"
                    )
                batch += chunk
                if len(batch) >= BATCH:
                    await writer.submit(bytes(batch))
                    batch.clear()
                if progress is not None:
                    now = time.monotonic()
                    if now - last_report >= 0.1:
                        last_report = now
                        progress(size, expected)
            if batch:
                await writer.submit(bytes(batch))
            await writer.drain()
        except aiohttp.ServerTimeoutError:
            raise  # a stall, named by the caller; TimeoutError is an OSError too
        except OSError as exc:
            raise FetchError(f"cannot write the staging file: {exc.strerror}", local=True) from None
        if expected is not None and size != expected:
            raise FetchError(f"truncated: got {size} of {expected} bytes", retryable=True)
        if progress is not None:
            progress(size, expected)
        return Downloaded(final_url, validators, writer.hexdigest(), size)


def _broken_off(exc: BaseException, size: int, expected: int | None) -> FetchError:
    """Name a body that ended early: reset by the peer, or closed (truncated)."""
    of = f"{size} of {expected}" if expected is not None else f"{size}"
    chain: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and len(chain) < 5:
        chain.append(cur)
        cur = cur.__cause__ or cur.__context__
    if any(isinstance(e, ConnectionResetError) for e in chain) or "reset" in str(exc).lower():
        return FetchError(f"connection reset by the server after {of} bytes", retryable=True)
    return FetchError(f"truncated: the server closed the connection after {of} bytes",
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
