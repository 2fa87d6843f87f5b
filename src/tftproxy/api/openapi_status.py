"""The OpenAPI document's part for ``GET /tftp/status`` and the status page (``/``,
``/status``)."""

from __future__ import annotations

from typing import Any

from tftproxy.api.openapi import _DENIED, _FETCH_JOB, _error, _json

_HTML = {"text/html": {"schema": {"type": "string"}}}
_OBJECTS = {"type": "array", "items": {"type": "object"}}

STATUS_PATHS: dict[str, Any] = {
    "/tftp/status": {"get": {
        "operationId": "getStatus",
        "summary": "Published boot files, boot sets and their generations, downloads in "
                   "progress",
        "responses": {
            "200": _json({"type": "object", "required": ["root", "files", "sets", "downloads"],
                          "properties": {
                              "root": {"type": "string"}, "files": _OBJECTS, "sets": _OBJECTS,
                              "unmanaged": _OBJECTS,
                              "disk": {"type": "object", "nullable": True},
                              "sync": {"type": "object"},
                              "downloads": {"type": "array", "items": _FETCH_JOB,
                                            "description": "Fetches running now, oldest "
                                            "first, with rate and time left"}}},
                         "Same as `tftproxy status --json`"),
            "403": _DENIED,
            "404": _error("The tftp module is not enabled on this listener"),
        },
    }},
    **{path: {"get": {
        "operationId": op_id,
        "summary": "The status page for browsers (HTML, refreshes itself)",
        "description": "Who may read it is the status_page setting: trusted (as "
                       "/tftp/status), open, or off (404).",
        "responses": {
            "200": {"description": "The page", "content": _HTML},
            "403": _DENIED,
            "404": _error("status_page is off"),
        },
    }} for path, op_id in (("/", "getStatusPage"), ("/status", "getStatusPageAlias"))},
}
