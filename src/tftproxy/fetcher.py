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
import os
import ssl
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar
from urllib.parse import urlsplit

import aiohttp

from tftproxy import __version__
from tftproxy.config import Settings

log = logging.getLogger(__name__)

# Large batches keep per-batch thread hand-offs rare; a few in flight bound memory (~5 MiB).
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
T = TypeVar("T")

# For a manifest probe, "the server will not give it to us" means "not here": besides 404 and
# 410, mirrors commonly deny dotfiles (nginx `location ~ /\.`) with 403, which is exactly why
# some trees also ship `treeinfo` without the dot.
ABSENT = frozenset({401, 403, 404, 410})
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
    """Hashes and writes batches on a worker thread, so hashing overlaps the network.

    hashlib and os.write release the GIL for large buffers. Batches are lists of the chunks
    as received (no copy in the event loop); at most ``INFLIGHT`` wait, which bounds memory.
    Every ``SYNC_EVERY`` bytes a second thread starts an fdatasync, so the disk writes while
    the download goes on and the final fsync before publishing has little left to do.
    """

    INFLIGHT = 4
    SYNC_EVERY = 64 * 1024 * 1024

    def __init__(self, sink: Sink) -> None:
        self._sink = sink
        self._hash = hashlib.sha256()
        # One worker keeps batches in order; a separate one flushes without blocking it.
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tftproxy-write")
        self._flusher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tftproxy-sync")
        self._pending: deque[Future[None]] = deque()
        self._flush: Future[None] | None = None
        self._unsynced = 0

    def _work(self, chunks: list[bytes]) -> None:
        update = self._hash.update
        for chunk in chunks:
            update(chunk)
        written = 0
        for chunk in chunks:
            self._sink.write(chunk)
            written += len(chunk)
        self._unsynced += written
        if self._unsynced >= self.SYNC_EVERY and (self._flush is None or self._flush.done()):
            self._unsynced = 0
            self._flush = self._flusher.submit(os.fdatasync, self._sink.fd)

    async def submit(self, chunks: list[bytes]) -> None:
        while len(self._pending) >= self.INFLIGHT:
            await asyncio.wrap_future(self._pending.popleft())
        self._pending.append(self._worker.submit(self._work, chunks))

    async def drain(self) -> None:
        while self._pending:
            await asyncio.wrap_future(self._pending.popleft())
        if self._flush is not None:
            await asyncio.wrap_future(self._flush)

    def close(self) -> None:
        for fut in self._pending:
            fut.cancel()
        self._worker.shutdown(wait=True)
        self._flusher.shutdown(wait=True)

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

    async def __aenter__(self) -> Fetcher:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

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

        ``sink()`` gives a fresh, empty file for each attempt that gets a body: a failed
        attempt's bytes are never continued. ``on_response`` runs once a 200's headers are
        in, before the body.
        """
        return await self._retrying(url, lambda: self._attempt(
            url, sink, etag, last_modified, on_response, progress))

    async def get_text(self, url: str, limit: int) -> str | None:
        """A small document (a checksum manifest), whole; None when the server says it is
        not there (401, 403, 404, 410: mirrors often deny dotfiles).

        Same TLS, proxy, timeouts, redirects and retries as downloads; failures raise
        FetchError naming the URL.
        """
        try:
            return await self._retrying(url, lambda: self._text_attempt(url, limit))
        except FetchError as exc:
            raise FetchError(f"{url}: {exc.reason}", local=exc.local) from None

    async def _retrying(self, url: str, attempt_once: Callable[[], Awaitable[T]]) -> T:
        """Run attempts until one succeeds, retrying only what is transient, within the
        total time limit."""
        s = self.settings
        attempt = 0
        deadline = time.monotonic() + s.fetch_timeout
        while True:
            try:
                async with asyncio.timeout_at(_loop_deadline(deadline)):
                    return await attempt_once()
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
        sink: Callable[[], Sink],
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
        with self._mapped_errors():
            async with self._get(url, headers) as resp:
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
                # The staging file is made only now: an up-to-date check creates no file.
                return await self._stream(resp, sink(), final_url, validators, progress)

    async def _text_attempt(self, url: str, limit: int) -> str | None:
        with self._mapped_errors():
            async with self._get(url, {"Accept-Encoding": "identity"}) as resp:
                if resp.status in ABSENT:
                    return None
                if resp.status >= 500:
                    raise FetchError(f"HTTP {resp.status} {resp.reason or ''}".rstrip(),
                                     retryable=True)
                if resp.status != 200:
                    raise FetchError(f"HTTP {resp.status} {resp.reason or ''}".rstrip())
                length = _content_length(resp)
                if length is not None and length > limit:
                    raise FetchError(f"{length} bytes, more than a manifest may be ({limit})")
                body = bytearray()
                async for chunk in resp.content.iter_chunked(64 * 1024):
                    body += chunk
                    if len(body) > limit:
                        raise FetchError(f"more than {limit} bytes, more than a manifest may be")
                # Manifests are ASCII; undecodable bytes only make the parser reject them.
                return bytes(body).decode("utf-8-sig", errors="replace")

    def _get(self, url: str, headers: dict[str, str]) -> Any:
        s = self.settings
        return self._get_session().get(
            url,
            headers=headers,
            # aiohttp counts the responses, not the redirects followed.
            allow_redirects=s.max_redirects > 0,
            max_redirects=s.max_redirects + 1,
            proxy=s.http_proxy,
        )

    @contextlib.contextmanager
    def _mapped_errors(self) -> Iterator[None]:
        """aiohttp's exceptions as one-line FetchErrors, transient ones marked retryable."""
        s = self.settings
        try:
            yield
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
        writer = _HashingWriter(sink)
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
                if size > s.max_file_size:
                    raise FetchError(
                        f"file grew past max_file_size ({s.max_file_size} bytes)"
                    )
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
            raise FetchError(f"cannot write the staging file: {exc.strerror}", local=True) from None
        finally:
            writer.close()
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
