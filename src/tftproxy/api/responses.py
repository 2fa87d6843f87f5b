"""How the API answers: plain-text errors from one status table, and the net under handlers.

Every error is plain text ``<context>: <reason>``, a readable sentence; which status answers
which kind of error is decided here and nowhere else. The middleware is the net under the
handlers: an exception nobody expected becomes a 500 that says so (and is logged with its
traceback), and aiohttp's own errors (404, 405, 413...) get the same plain-text form.
"""

from __future__ import annotations

import logging

from aiohttp import web
from aiohttp.typedefs import Handler

from tftproxy.errors import (
    BodyTooLarge,
    Conflict,
    InputError,
    InvalidMac,
    LocalFailure,
    NotFound,
    Refused,
    TftproxyError,
    UnknownVariant,
    UnsupportedMediaType,
    UpstreamError,
    printable,
)

log = logging.getLogger(__name__)

# Most specific first; smart-proxy answers a bad MAC or variant with 403.
STATUS: tuple[tuple[type[TftproxyError], int], ...] = (
    (InvalidMac, 403),
    (UnknownVariant, 403),
    (BodyTooLarge, 413),
    (UnsupportedMediaType, 415),
    (InputError, 400),
    (Refused, 403),
    (Conflict, 409),
    (NotFound, 404),
    (UpstreamError, 502),
    (LocalFailure, 500),
)


def status_of(exc: TftproxyError) -> int:
    for kind, status in STATUS:
        if isinstance(exc, kind):
            return status
    return 500


def text_response(status: int, text: str, headers: dict[str, str] | None = None) -> web.Response:
    """A plain-text answer, as every error of the API is."""
    return web.Response(status=status, text=text + "\n", content_type="text/plain",
                        headers=headers)


def error_response(context: str, exc: TftproxyError) -> web.Response:
    """``<context>: <reason>`` with the status of the error's kind.

    A bad MAC or variant is answered without context, exactly as smart-proxy does.
    """
    status = status_of(exc)
    if isinstance(exc, InvalidMac | UnknownVariant):
        return text_response(status, str(exc))
    return text_response(status, f"{context}: {exc}")


def not_allowed(request: web.Request, allowed: set[str]) -> web.Response:
    """405 naming the methods the path does have (HEAD wherever GET is)."""
    methods = sorted(allowed | {"HEAD"} if "GET" in allowed else allowed)
    return text_response(405, f"Method Not Allowed: {request.method} {printable(request.path)}",
                         {"Allow": ",".join(methods)})


@web.middleware
async def plain_text_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        reason = exc.text if exc.text and not exc.text.startswith(f"{exc.status}:") else None
        text = f"{exc.reason}: {reason or printable(request.path)}"
        headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow",)}
        return text_response(exc.status, text.rstrip(), headers)
    except Exception:
        # The request may be odd, but the bug is ours: say so and keep the details in the log.
        log.exception("unexpected error answering %s %s", request.method, request.path)
        return text_response(500, f"Internal error: {request.method} {printable(request.path)} "
                                  f"failed unexpectedly; the proxy's log has the details")
