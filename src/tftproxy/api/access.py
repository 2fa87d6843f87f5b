"""The access log: one line per request, with the body bytes actually sent.

aiohttp's own ``%b`` reads the writer's buffer counter, which misses files sent with
sendfile() (every ``/httpboot`` download logged 0 bytes) and is reset while a large body
streams; here a file response says what it sent, and everything else is counted from the
writer's output less the header block. HEAD, 204 and 304 send no body.
"""

from __future__ import annotations

import logging

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from tftproxy.errors import printable
from tftproxy.logs import fields

ACCESS_LOG = logging.getLogger("tftproxy.access")


def sent_bytes(request: web.BaseRequest, response: web.StreamResponse) -> int:
    """The body bytes ``response`` put on the wire."""
    if request.method == "HEAD" or response.status in (204, 304) or response.status < 200:
        return 0
    sent = getattr(response, "sent_bytes", None)
    if isinstance(sent, int):
        return sent
    body = getattr(response, "body", None)
    if isinstance(body, bytes | bytearray):
        return len(body)
    return max(0, response.body_length)


class AccessLogger(AbstractAccessLogger):
    def log(self, request: web.BaseRequest, response: web.StreamResponse,
            time: float) -> None:
        size = sent_bytes(request, response)
        client = request.remote or "-"
        path = printable(request.path_qs)
        self.logger.info(
            '%s "%s %s HTTP/%d.%d" %d %d bytes %.1f ms', client, request.method, path,
            request.version.major, request.version.minor, response.status, size, time * 1000,
            extra=fields(client=client, method=request.method, path=path,
                         status=response.status, bytes=size))
