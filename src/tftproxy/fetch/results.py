"""What a download yields: the server's validators and one of two outcomes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol


class Sink(Protocol):
    """Where a download's bytes go: a file written in order (a staging file)."""

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
    """The server confirmed the version we have (304)."""

    final_url: str
    validators: Validators


@dataclass(frozen=True)
class Downloaded:
    """A complete body, written to the sink; its sha256 was computed as it streamed."""

    final_url: str
    validators: Validators
    sha256: str
    size: int


ProgressFn = Callable[[int, int | None], None]
SinkFactory = Callable[[], Awaitable[Sink]]
OnResponse = Callable[[Validators], Awaitable[None]]


class Downloader(Protocol):
    """One protocol's downloader (http(s), ftp), which :class:`~tftproxy.fetch.schemes.Fetchers`
    picks by the URL's scheme for the jobs.

    ``fetch`` is one conditional download: ``etag``, ``last_modified`` and ``size`` are the
    published version's, ``sink()`` gives a fresh file per attempt, ``on_response`` hears
    the new validators before the body. ``get_text`` reads a small document (None: absent).
    """

    async def fetch(self, url: str, sink: SinkFactory, *, etag: str | None = None,
                    last_modified: str | None = None, size: int | None = None,
                    on_response: OnResponse | None = None,
                    progress: ProgressFn | None = None) -> Downloaded | NotModified: ...

    async def get_text(self, url: str, limit: int) -> str | None: ...

    async def close(self) -> None: ...


class FetchObserver(Protocol):
    """Told what upstream answered (metrics); every method must be cheap and never raise."""

    def response(self, status: int, kind: str) -> None:
        """An HTTP response's status code, each attempt counted; ``kind`` is ``download``
        (a boot file) or ``manifest`` (a checksum manifest probe)."""

    def downloaded(self, size: int) -> None:
        """Bytes of a response body written to a staging file."""
