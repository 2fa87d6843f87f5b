"""The OpenAPI document's part for smart-proxy's httpboot and logs modules (/httpboot/,
/EFI/, /logs/)."""

from __future__ import annotations

from typing import Any

from tftproxy.api.openapi import _BINARY, _DENIED, _TEXT, _error, _json

_LOGS = {
    "type": "object", "required": ["info", "logs"],
    "properties": {
        "info": {"type": "object", "required": ["size", "tail_size", "level", "level_tail",
                                                "failed_modules"]},
        "logs": {"type": "array", "items": {
            "type": "object", "required": ["timestamp", "level", "message"],
            "properties": {"timestamp": {"type": "number"},
                           "level": {"type": "string",
                                     "enum": ["DEBUG", "INFO", "WARN", "ERROR", "FATAL"]},
                           "message": {"type": "string"}, "backtrace": {"type": "string"},
                           "request_id": {"type": "string"}}}},
    },
}


def _httpboot(op_id: str, summary: str) -> dict[str, Any]:
    return {
        "operationId": op_id, "summary": summary,
        "parameters": [{"name": "path", "in": "path", "required": True,
                        "description": "Path relative to the HTTP boot tree",
                        "schema": {"type": "string"}}],
        "responses": {
            "200": {"description": "The file", "content": _BINARY},
            "206": {"description": "Part of the file (Range)", "content": _BINARY},
            "304": {"description": "Not modified since (If-None-Match, If-Modified-Since)"},
            "400": _error("Bad path"),
            "403": {"description": "`Invalid or empty path` or `Directory listing not allowed`",
                    "content": _TEXT},
            "404": {"description": "`Not found`, or the httpboot module is not enabled on this "
                                   "listener", "content": _TEXT},
            "412": {"description": "Precondition failed (If-Match, If-Unmodified-Since)"},
            "416": _error("Unsatisfiable range"),
            "503": {"description": "`Not a regular file`", "content": _TEXT},
        },
    }


MODULE_PATHS: dict[str, Any] = {
    **{f"{prefix}/{{path}}": {
        "get": _httpboot(f"get{name}File",
                         "Download a file of the HTTP boot tree (UEFI HTTP boot)"),
        "head": _httpboot(f"head{name}File", "Size and date of a file of the HTTP boot tree"),
    } for prefix, name in (("/httpboot", "HttpBoot"), ("/EFI", "Efi"))},
    **{path: {"get": {
        "operationId": op_id,
        "summary": "smart-proxy's log buffer, as Foreman lists it",
        "parameters": [{"name": "from_timestamp", "in": "query", "required": False,
                        "description": "Only records at or after this epoch time (0: all)",
                        "schema": {"type": "string"}}],
        "responses": {
            "200": _json(_LOGS, "The buffer's shape and its records, oldest first"),
            "403": _DENIED,
            "404": _error("The logs module is not enabled on this listener"),
        },
    }} for path, op_id in (("/logs/", "getLogs"), ("/logs", "getLogsNoSlash"))},
}
