"""smart-proxy's PXE-config routes and ``GET /tftp/serverName``.

Status codes and messages are smart-proxy's: a bad MAC or variant is 403, a missing parameter
400, a missing config on GET 404; every success is 200 with an empty body (serverName: JSON).
The MAC is checked before the variant, as smart-proxy does, and both before the body is read.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from tftproxy.api.errors import text_response
from tftproxy.api.params import ParamError, read_params
from tftproxy.config import Settings
from tftproxy.pxeconfig import (
    HostParams,
    Mac,
    PxeConfigs,
    PxeError,
    Variant,
    parse_variant,
    printable,
)

routes = web.RouteTableDef()
_CONFIGS: web.AppKey[PxeConfigs] = web.AppKey("pxe_configs", PxeConfigs)
_SETTINGS: web.AppKey[Settings] = web.AppKey("pxe_settings", Settings)

CREATE = "TFTP: Failed to create pxe config file"
CREATE_DEFAULT = "TFTP: Failed to create PXE default file"
RETRIEVE = "TFTP: Failed to retrieve pxe config file"
DELETE = "TFTP: Failed to delete pxe config file"
HOST_DIR = "TFTP: Failed to setup host specific bootloader directory"


def _fail(context: str, exc: PxeError | ParamError) -> web.Response:
    # A bad MAC or variant is answered without context, exactly as smart-proxy does.
    if exc.status == 403:
        return text_response(403, str(exc))
    return text_response(exc.status, f"{context}: {exc}")


def _ok() -> web.Response:
    # Empty: Foreman's success rule takes any 2xx with an empty body as success.
    return web.Response(status=200)


async def _create(request: web.Request, variant_text: str, mac_text: str) -> web.Response:
    configs = request.app[_CONFIGS]
    try:
        mac = Mac.parse(mac_text)
        variant = parse_variant(variant_text)
        params = await read_params(request)
    except (PxeError, ParamError) as exc:
        return _fail(CREATE, exc)
    content = params.get("pxeconfig", params.get("syslinux_config"))
    if content is None:
        return text_response(400, f"{CREATE}: Invalid parameters received")
    try:
        host = HostParams.from_params(params)
    except PxeError as exc:
        return _fail(HOST_DIR, exc)
    try:
        await asyncio.to_thread(configs.write, variant, mac, content, host)
    except PxeError as exc:
        return _fail(CREATE, exc)
    return _ok()


async def _create_default(request: web.Request, variant_text: str) -> web.Response:
    configs = request.app[_CONFIGS]
    try:
        variant = parse_variant(variant_text)
        params = await read_params(request)
    except (PxeError, ParamError) as exc:
        return _fail(CREATE_DEFAULT, exc)
    if variant in (Variant.ZTP, Variant.POAP):
        return text_response(400, f"{CREATE_DEFAULT}: the {variant} variant has no default file")
    menu = params.get("menu")
    if menu is None:
        return text_response(400, f"{CREATE_DEFAULT}: Default config not supplied")
    try:
        await asyncio.to_thread(configs.write_default, variant, menu)
    except PxeError as exc:
        return _fail(CREATE_DEFAULT, exc)
    return _ok()


async def _delete(request: web.Request, variant_text: str, mac_text: str) -> web.Response:
    try:
        mac = Mac.parse(mac_text)
        variant = parse_variant(variant_text)
        await asyncio.to_thread(request.app[_CONFIGS].delete, variant, mac)
    except PxeError as exc:
        return _fail(DELETE, exc)
    return _ok()


async def _server_name(request: web.Request) -> web.Response:
    return web.json_response({"serverName": request.app[_SETTINGS].tftp_servername or ""})


async def _get(request: web.Request, variant_text: str, mac_text: str) -> web.Response:
    try:
        mac = Mac.parse(mac_text)
        variant = parse_variant(variant_text)
        content = await asyncio.to_thread(request.app[_CONFIGS].read, variant, mac)
    except PxeError as exc:
        return _fail(RETRIEVE, exc)
    return web.Response(body=content, content_type="text/plain")


def _not_allowed(request: web.Request, *allowed: str) -> web.Response:
    methods = sorted({*allowed, "HEAD"} if "GET" in allowed else set(allowed))
    return text_response(405, f"Method Not Allowed: {request.method} {printable(request.path)}",
                         {"Allow": ",".join(methods)})


# smart-proxy's routes overlap (``/tftp/:mac`` also matches ``/tftp/serverName``); each path
# shape is dispatched here so that a method a path does not have is a 405 naming the methods it
# does have, rather than, say, a 403 "Invalid MAC address: serverName".

@routes.route("*", "/tftp/{name}")
async def tftp_one(request: web.Request) -> web.Response:
    name, method = request.match_info["name"], request.method
    if name == "serverName":
        return await _server_name(request) if method in ("GET", "HEAD") else (
            _not_allowed(request, "GET"))
    if name == "create_default":
        return await _create_default(request, "syslinux") if method == "POST" else (
            _not_allowed(request, "POST"))
    if name in ("fetch_boot_file", "prune"):  # served by tftproxy.api.bootfiles: POST only
        return _not_allowed(request, "POST")
    if name == "status":  # served by tftproxy.api.bootfiles: GET only
        return _not_allowed(request, "GET")
    if method == "POST":
        return await _create(request, "syslinux", name)
    if method == "DELETE":
        return await _delete(request, "syslinux", name)
    return _not_allowed(request, "POST", "DELETE")


@routes.route("*", "/tftp/{variant}/{mac}")
async def tftp_two(request: web.Request) -> web.Response:
    variant, mac, method = request.match_info["variant"], request.match_info["mac"], (
        request.method)
    if variant == "fetch_boot_file":  # its status route is GET, in tftproxy.api.bootfiles
        return _not_allowed(request, "GET")
    if mac == "create_default":
        return await _create_default(request, variant) if method == "POST" else (
            _not_allowed(request, "POST"))
    if method in ("GET", "HEAD"):
        return await _get(request, variant, mac)
    if method == "POST":
        return await _create(request, variant, mac)
    if method == "DELETE":
        return await _delete(request, variant, mac)
    return _not_allowed(request, "GET", "POST", "DELETE")


def setup(app: web.Application, settings: Settings) -> None:
    """Add the routes; register them after ``/tftp/fetch_boot_file`` and its status route."""
    app[_CONFIGS] = PxeConfigs(settings.tftproot)
    app[_SETTINGS] = settings
    app.add_routes(routes)
