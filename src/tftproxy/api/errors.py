"""Every failure as a plain-text ``<context>: <reason>`` answer, never a stack trace.

Foreman shows a non-2xx body to the user as it is, so it must be a readable sentence. Handlers
answer their own errors; this middleware is the net under them: an exception nobody expected
becomes a 500 that says so (and is logged with its traceback), and aiohttp's own errors (404,
405, 413...) get the same plain-text form.
"""

from __future__ import annotations

import logging

from aiohttp import web
from aiohttp.typedefs import Handler

from tftproxy.pxeconfig import printable

log = logging.getLogger(__name__)


def text_response(status: int, text: str, headers: dict[str, str] | None = None) -> web.Response:
    """A plain-text answer, as every error of the API is."""
    return web.Response(status=status, text=text + "\n", content_type="text/plain",
                        headers=headers)


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
