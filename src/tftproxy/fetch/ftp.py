"""The FTP fetcher: ``ftp://`` media with the same guarantees as HTTP (aioftp underneath).

What HTTP's validators do, FTP's ``SIZE`` and ``MDTM`` do here: both are asked before any
download and kept as the version's Content-Length and Last-Modified (MDTM written as an
HTTP date). A refetch whose ``MDTM`` (and ``SIZE``, where the server has it) equals the
published version's downloads nothing (:class:`NotModified`); a changed one is announced to
``on_response`` before the body, so the name can be hidden while it downloads. The body goes
into the sink hashed as it streams, is checked against ``SIZE`` and against the server's
final reply (226, not 426), exactly as an HTTP body is checked against Content-Length.

Paths are relative to the login directory, as curl reads ``ftp://host/dir/file``; the user
is ``anonymous`` unless the URL names one. Every aioftp failure becomes an
:class:`~tftproxy.errors.UpstreamError` with a one-line reason in one place
(:func:`_mapped_errors`); transient ones (4xx replies, connections) are retried.
``http_proxy`` does not apply: FTP is fetched directly.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime
from email.utils import format_datetime
from urllib.parse import unquote, urlsplit

import aioftp

from tftproxy.errors import UpstreamError
from tftproxy.fetch.options import FetchOptions
from tftproxy.fetch.results import (
    Downloaded,
    FetchObserver,
    NotModified,
    OnResponse,
    ProgressFn,
    SinkFactory,
    Validators,
)
from tftproxy.fetch.retry import retrying
from tftproxy.fetch.writer import BodyBroken, copy_body

READ_SIZE = 256 * 1024
_MDTM = re.compile(r"(\d{14})(?:\.\d+)?")


def mdtm_to_http_date(value: str) -> str | None:
    """``20240102030405`` (MDTM, UTC) as ``Tue, 02 Jan 2024 03:04:05 GMT``; None if not one."""
    match = _MDTM.fullmatch(value.strip())
    if match is None:
        return None
    try:
        stamp = datetime.strptime(match.group(1), "%Y%m%d%H%M%S").replace(tzinfo=UTC)
    except ValueError:
        return None
    return format_datetime(stamp, usegmt=True)


class FtpFetcher:
    """Downloads ``ftp://`` URLs with the timeouts, retries and size limit of the settings."""

    def __init__(self, options: FetchOptions, observer: FetchObserver | None = None) -> None:
        self.options = options
        self.observer = observer

    async def close(self) -> None:
        """Nothing is kept between downloads: each opens its own control connection."""

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
    ) -> Downloaded | NotModified:
        """RETR ``url`` unless its MDTM (and SIZE) say the published version is current.

        ``last_modified`` and ``size`` are the published version's; ``etag`` is never one of
        FTP's. ``sink()`` gives a fresh, empty file for each attempt that gets a body.
        """
        return await retrying(self.options, url, lambda: self._attempt(
            url, sink, last_modified, size, on_response, progress))

    async def get_text(self, url: str, limit: int) -> str | None:
        """A small document (a checksum manifest), whole; None when the server has no such
        file (550). Failures raise UpstreamError naming the URL."""
        try:
            return await retrying(self.options, url, lambda: self._text_attempt(url, limit))
        except UpstreamError as exc:
            raise UpstreamError(f"{url}: {exc.reason}", local=exc.local) from None

    async def _attempt(self, url: str, sink: SinkFactory, last_modified: str | None,
                       size: int | None, on_response: OnResponse | None,
                       progress: ProgressFn | None) -> Downloaded | NotModified:
        path = _path(url)
        async with self._session(url) as client:
            with _mapped_errors(self.options):
                validators = Validators(etag=None, last_modified=await _mdtm(client, path),
                                        content_length=await _size(client, path))
                if _unchanged(last_modified, size, validators):
                    return NotModified(url, validators)
                length = validators.content_length
                if length is not None and length > self.options.max_file_size:
                    raise UpstreamError(f"file is {length} bytes, more than max_file_size "
                                        f"({self.options.max_file_size})")
                if on_response is not None:
                    await on_response(validators)
                async with _retr(client, path) as stream:
                    # The staging file is made only once the server agreed to send the file.
                    sha256, got = await copy_body(
                        _reader(stream, self.options), await sink(), expected=length,
                        progress=progress, max_file_size=self.options.max_file_size,
                        min_rate=self.options.min_rate, rate_window=self.options.rate_window,
                        written=self.observer.downloaded if self.observer else None)
                return Downloaded(url, validators, sha256, got)

    async def _text_attempt(self, url: str, limit: int) -> str | None:
        path = _path(url)
        async with self._session(url) as client:
            with _mapped_errors(self.options):
                body = bytearray()
                try:
                    async with _retr(client, path) as stream:
                        read = _reader(stream, self.options)
                        while chunk := await read():
                            body += chunk
                            if len(body) > limit:
                                raise UpstreamError(f"more than {limit} bytes, more than a "
                                                    f"manifest may be")
                except aioftp.StatusCodeError as exc:
                    if "550" in (str(code) for code in exc.received_codes):
                        return None  # "no such file": the manifest is not here
                    raise
                # Manifests are ASCII; undecodable bytes only make the parser reject them.
                return bytes(body).decode("utf-8-sig", errors="replace")

    @contextlib.asynccontextmanager
    async def _session(self, url: str) -> AsyncIterator[aioftp.Client]:
        """A logged-in control connection to the URL's server, closed afterwards."""
        o = self.options
        parts = urlsplit(url)
        host = parts.hostname
        if not host:
            raise UpstreamError(f"invalid URL {url}: no host")
        try:
            port = parts.port or aioftp.DEFAULT_PORT
        except ValueError:
            raise UpstreamError(f"invalid URL {url}: bad port") from None
        client = aioftp.Client(socket_timeout=o.stall_timeout,
                               connection_timeout=o.connect_timeout)
        try:
            try:
                await client.connect(host, port)
            except TimeoutError:
                raise UpstreamError(f"connect timed out after {o.connect_timeout:g} s",
                                    retryable=True) from None
            except OSError as exc:
                raise UpstreamError(f"cannot connect: {exc.strerror or exc}",
                                    retryable=True) from None
            with _mapped_errors(o):
                await client.login(unquote(parts.username or aioftp.DEFAULT_USER),
                                   unquote(parts.password or aioftp.DEFAULT_PASSWORD))
                await client.command("TYPE I", "200")  # SIZE is in bytes only in binary mode
            yield client
        finally:
            client.close()


def _path(url: str) -> str:
    path = unquote(urlsplit(url).path).lstrip("/")
    if not path or path.endswith("/"):
        raise UpstreamError(f"invalid URL {url}: no file name")
    if any(c in path for c in "\r\n\x00"):
        raise UpstreamError(f"invalid URL {url}: control characters in the path")
    return path


async def _file_status(client: aioftp.Client, command: str, path: str) -> str | None:
    """The value of a ``213`` reply to SIZE or MDTM, or None where the server does not say
    (the download then tells what it can)."""
    try:
        _, info = await client.command(f"{command} {path}", "213")
    except aioftp.StatusCodeError:
        return None
    words = " ".join(info).split()
    return words[-1] if words else None


async def _size(client: aioftp.Client, path: str) -> int | None:
    value = await _file_status(client, "SIZE", path)
    return int(value) if value is not None and value.isdigit() else None


async def _mdtm(client: aioftp.Client, path: str) -> str | None:
    value = await _file_status(client, "MDTM", path)
    return mdtm_to_http_date(value) if value is not None else None


def _retr(client: aioftp.Client, path: str) -> contextlib.AbstractAsyncContextManager[
        aioftp.DataConnectionThrottleStreamIO]:
    # Leaving the block reads the server's final reply: 226, or a 4xx for a broken transfer.
    return client.download_stream(path)


def _unchanged(last_modified: str | None, size: int | None, now: Validators) -> bool:
    """The published version is current: the same MDTM, and the same SIZE where both have one
    (what curl's --time-cond checks, plus the size)."""
    if last_modified is None or now.last_modified != last_modified:
        return False
    return size is None or now.content_length is None or now.content_length == size


def _reader(stream: aioftp.DataConnectionThrottleStreamIO,
            options: FetchOptions) -> Callable[[], Awaitable[bytes]]:
    async def read() -> bytes:
        try:
            return await stream.read(READ_SIZE)
        except TimeoutError:
            raise UpstreamError(f"stalled: no data for {options.stall_timeout:g} s",
                                retryable=True) from None
        except ConnectionError as exc:
            raise BodyBroken() from exc

    return read


@contextlib.contextmanager
def _mapped_errors(options: FetchOptions) -> Iterator[None]:
    """aioftp's exceptions as one-line UpstreamErrors, transient ones marked retryable."""
    try:
        yield
    except aioftp.StatusCodeError as exc:
        received = exc.received_codes[0] if exc.received_codes else None
        code = str(received) if received is not None else "?"
        reason = " ".join(line.strip() for line in exc.info or []).strip()
        # 4xx is FTP's "transient negative completion": worth another attempt.
        raise UpstreamError(f"FTP {code} {reason}".rstrip(),
                            retryable=code.startswith("4")) from None
    except TimeoutError:
        raise UpstreamError(f"stalled: no answer for {options.stall_timeout:g} s",
                            retryable=True) from None
    except ConnectionError as exc:
        raise UpstreamError(f"connection lost: {exc.strerror or exc}", retryable=True) from None
    except aioftp.AIOFTPException as exc:
        raise UpstreamError(f"FTP client error: {exc}") from None
