"""The OpenAPI 3.0 document of every route, served at ``GET /apidoc/openapi.json``.

It is written by hand against the contract rather than generated from the handlers, so that it
states what Foreman relies on; schemathesis checks the server against it in the test suite.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from tftproxy import __version__
from tftproxy.pxe import COMPONENT_PATTERN, MAC_PATTERN, WITH_DEFAULT, Variant

PATH = "/apidoc/openapi.json"


def _any_case(names: list[str]) -> str:
    # Path parameters are matched case-insensitively; JSON Schema regexes have no flag for that.
    return "^(?:" + "|".join(
        "".join(f"[{c.upper()}{c}]" if c.isalpha() else c for c in name) for name in names
    ) + ")$"


_WITH_DEFAULT = [v.value for v in WITH_DEFAULT]
_MAC_RE = f"^(?:{MAC_PATTERN})$"
_COMPONENT = COMPONENT_PATTERN

_TEXT = {"text/plain": {"schema": {"type": "string"}}}
_BINARY = {"*/*": {"schema": {"type": "string", "format": "binary"}}}


def _error(description: str) -> dict[str, Any]:
    return {"description": description + " (plain text `<context>: <reason>`)",
            "content": _TEXT}


_DENIED = _error("The client is not allowed: no client certificate over HTTPS, or not in "
                 "trusted_hosts")
_EMPTY_OK = {"description": "Done; the body is empty (Foreman's success rule)."}
_BAD_MAC_OR_VARIANT = {
    "description": "`Invalid MAC address: <mac>` or `Unrecognized pxeboot config type: "
                   "<variant>`, or the client is not allowed",
    "content": _TEXT,
}

_VARIANT = {
    "name": "variant", "in": "path", "required": True,
    "description": "PXE loader kind, case-insensitive: " + ", ".join(v.value for v in Variant)
                   + " (Foreman sends PXELinux, PXEGrub, PXEGrub2, iPXE, ZTP, POAP).",
    "schema": {"type": "string", "pattern": _any_case([v.value for v in Variant])},
}
_VARIANT_WITH_DEFAULT = {
    **_VARIANT,
    "description": "PXE loader kind, case-insensitive: " + ", ".join(_WITH_DEFAULT)
                   + " (ztp and poap have no default file: 400).",
    "schema": {"type": "string", "pattern": _any_case(_WITH_DEFAULT)},
}
_MAC = {
    "name": "mac", "in": "path", "required": True,
    "description": "MAC address: 6 (Ethernet) or 20 (InfiniBand) colon-separated groups of "
                   "one or two hex digits.",
    "schema": {"type": "string", "pattern": _MAC_RE},
}


def _form(schema: dict[str, Any]) -> dict[str, Any]:
    # What Foreman sends. multipart/form-data and a JSON object are accepted too, but not
    # described: a multipart part name cannot hold every character a property name can.
    return {"required": True,
            "content": {"application/x-www-form-urlencoded": {"schema": schema}}}


_CONFIG_BODY = _form({
    "type": "object",
    "description": "`pxeconfig` (or the legacy `syslinux_config`) is the file's content. The "
                   "optional targetos, release, arch and bootfile_suffix (newer Foreman) also "
                   "build `host-config/<mac>/`; when one is given, targetos and arch are needed.",
    "properties": {
        "pxeconfig": {"type": "string"},
        "syslinux_config": {"type": "string"},
        "targetos": {"type": "string", "pattern": f"^{_COMPONENT}$"},
        "release": {"type": "string", "pattern": f"^(?:{_COMPONENT})?$"},
        "arch": {"type": "string", "pattern": f"^{_COMPONENT}$"},
        "bootfile_suffix": {"type": "string", "pattern": f"^(?:{_COMPONENT})?$"},
        "universe_archive": {"type": "string"},
        "universe_kernel": {"type": "string"},
        "universe_initrd": {"type": "string"},
        "universe_source_digest": {"type": "string",
                                   "description": "sha256 (hex) of the archive's source URL"},
    },
    "anyOf": [{"required": ["pxeconfig"]}, {"required": ["syslinux_config"]}],
    "allOf": [{"anyOf": [
        {"not": {"anyOf": [{"required": [k]} for k in
                           ("targetos", "release", "arch", "bootfile_suffix")]}},
        {"required": ["targetos", "arch"]},
    ]}],
})
_MENU_BODY = _form({
    "type": "object",
    "properties": {"menu": {"type": "string", "description": "The default menu's content."}},
    "required": ["menu"],
})


def _create(op_id: str, summary: str, parameters: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "operationId": op_id, "summary": summary, "parameters": parameters,
        "requestBody": _CONFIG_BODY,
        "responses": {
            "200": _EMPTY_OK,
            "400": _error("`pxeconfig` missing, a host-config parameter invalid, or the "
                          "files cannot be written"),
            "403": _BAD_MAC_OR_VARIANT,
            "404": _error("The tftp module is not enabled on this listener"),
            "409": _error("pxegrub2: the host's bootloader universe is being fetched, or the "
                          "universe_* parameters name one that is missing or not from that "
                          "source"),
            "413": _error("The body is larger than 1 MiB"),
            "415": _error("The body's Content-Type or charset is not supported"),
        },
    }


def _delete(op_id: str, summary: str, parameters: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "operationId": op_id, "summary": summary, "parameters": parameters,
        "responses": {
            "200": {"description": "Removed, or was already absent; empty body."},
            "400": _error("The files cannot be removed"),
            "403": _BAD_MAC_OR_VARIANT,
            "404": _error("The tftp module is not enabled on this listener"),
        },
    }


def _create_default(op_id: str, summary: str,
                    parameters: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "operationId": op_id, "summary": summary, "parameters": parameters,
        "requestBody": _MENU_BODY,
        "responses": {
            "200": _EMPTY_OK,
            "400": _error("`menu` missing, the variant (ztp, poap) has no default file, or the "
                          "file cannot be written"),
            "403": _BAD_MAC_OR_VARIANT,
            "404": _error("The tftp module is not enabled on this listener"),
            "413": _error("The body is larger than 1 MiB"),
            "415": _error("The body's Content-Type or charset is not supported"),
        },
    }


_FETCH_RESULT = {
    "type": "object",
    "required": ["name", "status", "source"],
    "properties": {
        "name": {"type": "string", "description": "Published name, relative to the root."},
        "status": {"type": "string", "enum": ["published", "unchanged", "ignored", "failed"]},
        "source": {"type": "string"},
        "size": {"type": "integer", "nullable": True},
        "sha256": {"type": "string", "nullable": True},
        "final_url": {"type": "string"},
        "error": {"type": "string", "nullable": True},
        "set": {"type": "string", "description": "The boot set (prefix) the file belongs to."},
        "generation": {"type": "integer", "nullable": True,
                       "description": "The set's generation now current."},
    },
}
_GC_REPORT = {
    "type": "object",
    "required": ["dry_run", "grace", "deleted", "freed_bytes", "kept_objects", "kept_bytes",
                 "dropped_generations", "disk_total", "disk_free"],
    "properties": {
        "dry_run": {"type": "boolean"},
        "grace": {"type": "number"},
        "deleted": {"type": "array", "items": {"type": "string"},
                    "description": "sha256 of each deleted (or, dry run, deletable) object"},
        "freed_bytes": {"type": "integer"},
        "kept_objects": {"type": "integer"},
        "kept_bytes": {"type": "integer"},
        "dropped_generations": {"type": "array", "items": {"type": "string"}},
        "busy_sets": {"type": "array", "items": {"type": "string"}},
        "disk_total": {"type": "integer"},
        "disk_free": {"type": "integer"},
    },
}
_FETCH_JOB = {
    "type": "object",
    "required": ["id", "name", "source", "state", "progress", "url"],
    "properties": {
        "id": {"type": "string"},
        "name": {"type": "string"},
        "source": {"type": "string"},
        "state": {"type": "string"},
        "progress": {"type": "object", "properties": {
            "bytes": {"type": "integer"}, "total": {"type": "integer", "nullable": True},
            "rate": {"type": "integer", "nullable": True, "description": "bytes/s, last 10 s"},
            "eta": {"type": "number", "nullable": True, "description": "seconds left"},
            "percent": {"type": "number", "nullable": True}}},
        "started": {"type": "string"},
        "finished": {"type": "string"},
        "url": {"type": "string", "description": "This job's status route."},
        "result": _FETCH_RESULT,
    },
}
_V2_MODULE = {
    "type": "object",
    "required": ["http_enabled", "https_enabled", "settings", "state", "capabilities"],
    "properties": {
        "http_enabled": {"type": "boolean"},
        "https_enabled": {"type": "boolean"},
        "settings": {"type": "object", "description": "tftp: tftp_servername; httpboot: "
                     "http_port, https_port (null where the module is off); logs: none"},
        "state": {"type": "string", "enum": ["running", "disabled"]},
        "capabilities": {"type": "array", "items": {"type": "string"}},
    },
}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def openapi_document() -> dict[str, Any]:
    """The document; every route the API serves is in it."""
    variant_mac = [_VARIANT, _MAC]
    paths: dict[str, Any] = {
        "/features": {"get": {
            "operationId": "getFeatures", "summary": "Enabled modules (no authentication)",
            "responses": {"200": _json({"type": "array", "items": {"type": "string"}},
                                       'e.g. `["tftp"]`')},
        }},
        "/version": {"get": {
            "operationId": "getVersion",
            "summary": "Versions of the proxy and its modules (no authentication)",
            "responses": {"200": _json({
                "type": "object", "required": ["version", "modules", "tftproxy"],
                "properties": {"version": {"type": "string", "description": "The smart-proxy "
                                           "version reported to Foreman"},
                               "tftproxy": {"type": "string",
                                            "description": "tftproxy's own version"},
                               "modules": {"type": "object",
                                           "additionalProperties": {"type": "string"}}},
            }, "Version document")},
        }},
        "/health": {"get": {
            "operationId": "getHealth", "summary": "Liveness: the service answers (no "
            "authentication)",
            "responses": {"200": {"description": "`ok`", "content": _TEXT}},
        }},
        "/ready": {"get": {
            "operationId": "getReady",
            "summary": "Readiness: store recovered, listeners and TFTP workers up, not "
            "stopping (no authentication)",
            "responses": {"200": {"description": "`ready`", "content": _TEXT},
                          "503": _error("What is not ready")},
        }},
        "/metrics": {"get": {
            "operationId": "getMetrics",
            "summary": "Prometheus metrics, every TFTP worker summed (no authentication)",
            "responses": {"200": {"description": "Prometheus text exposition format",
                                  "content": _TEXT},
                          "404": _error("Metrics are turned off (metrics: false)")},
        }},
        "/v2/features": {"get": {
            "operationId": "getFeaturesV2",
            "summary": "Modules with their state, listeners, settings and capabilities",
            "responses": {
                "200": _json({"type": "object", "properties": {
                    m: _V2_MODULE for m in ("tftp", "httpboot", "logs")}},
                    "One entry per module"),
                "403": _DENIED,
            },
        }},
        "/tftp/serverName": {"get": {
            "operationId": "getServerName",
            "summary": "The TFTP server name Foreman gives DHCP as next-server",
            "responses": {
                "200": _json({"type": "object", "required": ["serverName"],
                              "properties": {"serverName": {"type": "string"}}},
                             "`tftp_servername`, or an empty string"),
                "403": _DENIED,
                "404": _error("The tftp module is not enabled on this listener"),
            },
        }},
        "/tftp/fetch_boot_file": {"post": {
            "operationId": "fetchBootFile",
            "summary": "Fetch a boot file into the TFTP root, transactionally",
            "description": "The destination is `prefix + '-' + basename(path)`, or "
                           "`prefix + basename(path)` when prefix ends in `/`; for an oci "
                           "source the basename is the layer's title. The request "
                           "waits up to `fetch_wait` seconds for the result, then answers 202 "
                           "with the job's status URL. Parameters may also be sent in the "
                           "query string.",
            "requestBody": _form({
                "type": "object", "required": ["prefix", "path"],
                "properties": {
                    "prefix": {"type": "string", "description": "Destination prefix, "
                               "relative to the TFTP root (Foreman: `boot/<medium>-<hash>`)."},
                    "path": {"type": "string", "description": "Source URL: http(s), ftp, "
                             "or oci://REGISTRY/REPOSITORY:TAG#FILE (also @sha256:DIGEST, "
                             "oci+http:// for a plain-HTTP registry); nfs is accepted and "
                             "ignored."},
                },
            }),
            "responses": {
                "200": _json(_FETCH_RESULT, "The file is published (or was up to date)"),
                "202": {**_json(_FETCH_JOB, "Still downloading; poll the job's URL"),
                        "headers": {"Location": {"schema": {"type": "string"},
                                                 "description": "The job's status URL"}}},
                "400": _error("Bad prefix, destination or URL"),
                "403": _DENIED,
                "404": _error("The tftp module is not enabled on this listener"),
                "502": _error("The download failed"),
            },
        }},
        "/tftp/fetch_and_process": {"post": {
            "operationId": "fetchAndProcess",
            "summary": "Fetch an archive and publish members of it as a bootloader universe",
            "description": "smart-proxy PR #958. `extract`: the archive from `source` is "
                           "published as `destination`, each `files` entry (TFTP name -> "
                           "archive member) extracted from it and each `symlinks` entry "
                           "(link -> one of the files) made, all in the archive's directory "
                           "and switched as one generation. Without `extract`, `source` is "
                           "fetched to the exact name `destination`. Query parameters win "
                           "over the JSON body's keys. `POST /tftp/fetch_boot_file` accepts "
                           "the same JSON.",
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "type": "object",
                "properties": {
                    "extract": {"type": "object", "required": ["source", "destination",
                                                               "type", "files"],
                                "properties": {
                                    "source": {"type": "string"},
                                    "destination": {"type": "string"},
                                    "type": {"type": "string", "enum": ["tgz", "iso"]},
                                    "files": {"type": "object",
                                              "additionalProperties": {"type": "string"}},
                                    "symlinks": {"type": "object",
                                                 "additionalProperties": {"type": "string"}},
                                }},
                    "source": {"type": "string"},
                    "destination": {"type": "string"},
                },
            }}}},
            "responses": {
                "200": _json(_FETCH_RESULT, "The archive and its universe are published (or "
                                            "were up to date)"),
                "202": {**_json(_FETCH_JOB, "Still running; poll the job's URL"),
                        "headers": {"Location": {"schema": {"type": "string"},
                                                 "description": "The job's status URL"}}},
                "400": _error("A bad name, member, link, type or URL"),
                "403": _DENIED,
                "404": _error("The tftp module is not enabled on this listener"),
                "415": {"description": "`Invalid JSON content in body of request: ...`",
                        "content": _TEXT},
                "502": _error("The download, an extraction or a verification failed; nothing "
                              "was published"),
            },
        }},
        "/tftp/fetch_boot_file/{job_id}": {"get": {
            "operationId": "getFetchJob", "summary": "Status of a boot-file fetch job",
            "parameters": [{"name": "job_id", "in": "path", "required": True,
                            "schema": {"type": "string"}}],
            "responses": {
                "200": _json(_FETCH_JOB, "The job"),
                "403": _DENIED,
                "404": _error("Unknown or expired job"),
            },
        }},
        "/tftp/prune": {"post": {
            "operationId": "prune",
            "summary": "Delete old generations and content nothing uses",
            "description": "Content unused for at least `age` seconds goes, unless a published "
                           "name, a kept generation or a pinned client still uses it.",
            "parameters": [
                {"name": "age", "in": "query", "required": True,
                 "schema": {"type": "number", "exclusiveMinimum": True, "minimum": 0},
                 "description": "Grace period in seconds (> 0)"},
                {"name": "dry_run", "in": "query", "required": False,
                 "schema": {"type": "string", "enum": ["0", "1", "true", "false"]}},
            ],
            "responses": {
                "200": _json(_GC_REPORT, "What was (or would be) freed, and disk use"),
                "400": _error("age missing, not a number, or not positive"),
                "403": _DENIED,
                "404": _error("The tftp module is not enabled on this listener"),
            },
        }},
        "/tftp/create_default": {"post": _create_default(
            "createDefaultLegacy", "Write the syslinux default menu (legacy form)", [])},
        "/tftp/{variant}/create_default": {"post": _create_default(
            "createDefault", "Write the variant's default menu", [_VARIANT_WITH_DEFAULT])},
        "/tftp/{variant}/{mac}": {
            "get": {
                "operationId": "getConfig",
                "summary": "Read the host's config (the variant's first file)",
                "parameters": variant_mac,
                "responses": {
                    "200": {"description": "The file's content", "content": _TEXT},
                    "403": _BAD_MAC_OR_VARIANT,
                    "404": _error("No such config, or the tftp module is not enabled on this "
                                  "listener"),
                },
            },
            "post": _create("createConfig", "Write the host's config files", variant_mac),
            "delete": _delete("deleteConfig", "Remove the host's config files", variant_mac),
        },
        "/tftp/{mac}": {
            "post": _create("createConfigLegacy",
                            "Write the host's syslinux config (legacy form)", [_MAC]),
            "delete": _delete("deleteConfigLegacy",
                              "Remove the host's syslinux config (legacy form)", [_MAC]),
        },
    }
    # The other parts build on this module's.
    from tftproxy.api.openapi_modules import MODULE_PATHS
    from tftproxy.api.openapi_status import STATUS_PATHS
    from tftproxy.api.openapi_sync import SYNC_PATHS

    paths.update(MODULE_PATHS)
    paths[PATH] = {"get": {
        "operationId": "getOpenApi", "summary": "This document",
        "responses": {"200": _json({"type": "object"}, "OpenAPI 3.0 document")},
    }}
    paths.update(STATUS_PATHS)
    paths.update(SYNC_PATHS)
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "tftproxy",
            "version": __version__,
            "description": "Foreman smart-proxy's TFTP, HTTPBoot and Logs APIs. Over HTTPS, "
                           "/tftp/*, /logs/ and /v2/features need a client certificate signed "
                           "by ssl_ca_file; "
                           "with trusted_hosts set, the caller must be listed (certificate "
                           "CN over HTTPS, forward-verified reverse DNS over HTTP).",
        },
        "paths": paths,
    }


async def document(request: web.Request) -> web.Response:
    return web.json_response(openapi_document())
