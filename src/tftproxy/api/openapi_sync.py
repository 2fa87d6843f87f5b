"""The OpenAPI document's part for ``POST /tftp/sync`` and ``GET /tftp/sync/{run_id}``."""

from __future__ import annotations

from typing import Any

from tftproxy.api.openapi import _DENIED, _FETCH_RESULT, _error, _json

_SET_OUTCOME = {
    "type": "object",
    "required": ["set", "status", "checked"],
    "properties": {
        "set": {"type": "string"},
        "status": {"type": "string", "enum": ["unchanged", "updated", "failed"]},
        "checked": {"type": "string"},
        "from_generation": {"type": "integer", "nullable": True,
                            "description": "updated: the generation replaced"},
        "generation": {"type": "integer", "nullable": True,
                       "description": "The set's generation now current."},
        "error": {"type": "string", "description": "failed: why; the last good generation "
                  "is kept"},
        "files": {"type": "array", "items": _FETCH_RESULT},
    },
}
_SYNC_RUN = {
    "type": "object",
    "required": ["id", "url", "state", "total", "unchanged", "updated", "failed", "sets",
                 "pending"],
    "properties": {
        "id": {"type": "string"},
        "url": {"type": "string", "description": "This run's status route."},
        "state": {"type": "string", "enum": ["running", "done"]},
        "started": {"type": "string"},
        "finished": {"type": "string"},
        "total": {"type": "integer"},
        "unchanged": {"type": "integer"},
        "updated": {"type": "integer"},
        "failed": {"type": "integer"},
        "sets": {"type": "array", "items": _SET_OUTCOME},
        "pending": {"type": "array", "items": {"type": "string"}},
    },
}

SYNC_PATHS: dict[str, Any] = {
    "/tftp/sync": {"post": {
        "operationId": "syncBootFiles",
        "summary": "Revalidate boot sets now (Sync boot files)",
        "description": "Every published boot set, or the set of `prefix`, is checked "
                       "upstream with conditional requests; a change is published as one "
                       "new generation. Waits up to `fetch_wait` seconds, then answers "
                       "202 with the run's status URL. `prefix` may also be sent in the "
                       "query string.",
        "requestBody": {"required": False, "content": {
            "application/x-www-form-urlencoded": {"schema": {
                "type": "object", "properties": {"prefix": {
                    "type": "string", "pattern": "^[^/\\s]",
                    "description": "A boot set's prefix, as given to fetch_boot_file "
                    "(relative to the root); absent: every set."}}}}}},
        "responses": {
            "200": _json(_SYNC_RUN, "Every set is unchanged or updated"),
            "202": {**_json(_SYNC_RUN, "Still running; poll the run's URL"),
                    "headers": {"Location": {"schema": {"type": "string"},
                                             "description": "The run's status URL"}}},
            "400": _error("Bad prefix or parameters"),
            "403": _DENIED,
            "404": _error("No boot set under that prefix, or the tftp module is not "
                          "enabled on this listener"),
            "413": _error("The body is larger than 1 MiB"),
            "415": _error("The body's Content-Type or charset is not supported"),
            "502": _error("A set failed; each failed set is named, its last good "
                          "generation kept"),
        },
    }},
    "/tftp/sync/{run_id}": {"get": {
        "operationId": "getSyncRun", "summary": "Status of a boot-set sync run",
        "parameters": [{"name": "run_id", "in": "path", "required": True,
                        "schema": {"type": "string"}}],
        "responses": {
            "200": _json(_SYNC_RUN, "The run"),
            "403": _DENIED,
            "404": _error("Unknown or expired run"),
        },
    }},
}
