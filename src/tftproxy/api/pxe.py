"""smart-proxy's PXE-config routes and ``GET /tftp/serverName``.

Status codes and messages are smart-proxy's: a bad MAC or variant is 403, a missing parameter
400, a missing config on GET 404; every success is 200 with an empty body (serverName: JSON).
The MAC is checked before the variant, as smart-proxy does, and both before the body is read.
"""

from __future__ import annotations

from aiohttp import web

from tftproxy.api.context import ApiContext, context
from tftproxy.api.params import read_params
from tftproxy.api.responses import error_response, text_response
from tftproxy.errors import Conflict, PxeInputError, TftproxyError
from tftproxy.pxe import HostParams, Mac, UniverseParams, Variant, parse_variant, universe_dir

CREATE = "TFTP: Failed to create pxe config file"
CREATE_DEFAULT = "TFTP: Failed to create PXE default file"
RETRIEVE = "TFTP: Failed to retrieve pxe config file"
DELETE = "TFTP: Failed to delete pxe config file"
HOST_DIR = "TFTP: Failed to setup host specific bootloader directory"


def _ok() -> web.Response:
    # Empty: Foreman's success rule takes any 2xx with an empty body as success.
    return web.Response(status=200)


async def _create(request: web.Request, variant_text: str, mac_text: str) -> web.Response:
    try:
        mac = Mac.parse(mac_text)
        variant = parse_variant(variant_text)
        params = await read_params(request)
    except TftproxyError as exc:
        return error_response(CREATE, exc)
    content = params.get("pxeconfig", params.get("syslinux_config"))
    if content is None:
        return text_response(400, f"{CREATE}: Invalid parameters received")
    try:
        host = HostParams.from_params(params)
    except PxeInputError as exc:
        return error_response(HOST_DIR, exc)
    ctx = context(request)
    try:
        if host is not None and variant is Variant.PXEGRUB2:
            await _check_universe(ctx, host, UniverseParams.from_params(params))
        await ctx.store.call(lambda s: s.configs.write(variant, mac, content, host))
    except TftproxyError as exc:
        return error_response(CREATE, exc)
    return _ok()


async def _check_universe(ctx: ApiContext, host: HostParams,
                          wanted: UniverseParams | None) -> None:
    """Conflict (409) while the host's universe is being fetched (its links would miss what
    is hidden), or when the universe Foreman relies on is not the one published."""
    for release in (host.release, "default"):
        if not release:
            continue
        directory = universe_dir(host.targetos, release, host.arch)
        if ctx.archives.busy(directory) is not None:
            raise Conflict(f"Bootloader universe files are currently being downloaded or "
                           f"extracted: {directory}")
    if wanted is not None:
        await ctx.store.check_universe(wanted)


async def _create_default(request: web.Request, variant_text: str) -> web.Response:
    try:
        variant = parse_variant(variant_text)
        params = await read_params(request)
    except TftproxyError as exc:
        return error_response(CREATE_DEFAULT, exc)
    if variant in (Variant.ZTP, Variant.POAP):
        return text_response(400, f"{CREATE_DEFAULT}: the {variant} variant has no default file")
    menu = params.get("menu")
    if menu is None:
        return text_response(400, f"{CREATE_DEFAULT}: Default config not supplied")
    try:
        await context(request).store.call(lambda s: s.configs.write_default(variant, menu))
    except TftproxyError as exc:
        return error_response(CREATE_DEFAULT, exc)
    return _ok()


async def _delete(request: web.Request, variant_text: str, mac_text: str) -> web.Response:
    try:
        mac = Mac.parse(mac_text)
        variant = parse_variant(variant_text)
        await context(request).store.call(lambda s: s.configs.delete(variant, mac))
    except TftproxyError as exc:
        return error_response(DELETE, exc)
    return _ok()


async def _get(request: web.Request, variant_text: str, mac_text: str) -> web.Response:
    try:
        mac = Mac.parse(mac_text)
        variant = parse_variant(variant_text)
        content = await context(request).store.call(lambda s: s.configs.read(variant, mac))
    except TftproxyError as exc:
        return error_response(RETRIEVE, exc)
    return web.Response(body=content, content_type="text/plain")


async def server_name(request: web.Request) -> web.Response:
    return web.json_response({"serverName": context(request).settings.tftp_servername or ""})


async def create_default_legacy(request: web.Request) -> web.Response:
    return await _create_default(request, "syslinux")


async def create_default(request: web.Request) -> web.Response:
    return await _create_default(request, request.match_info["variant"])


async def create_legacy(request: web.Request) -> web.Response:
    return await _create(request, "syslinux", request.match_info["mac"])


async def delete_legacy(request: web.Request) -> web.Response:
    return await _delete(request, "syslinux", request.match_info["mac"])


async def read(request: web.Request) -> web.Response:
    return await _get(request, request.match_info["variant"], request.match_info["mac"])


async def create(request: web.Request) -> web.Response:
    return await _create(request, request.match_info["variant"], request.match_info["mac"])


async def delete(request: web.Request) -> web.Response:
    return await _delete(request, request.match_info["variant"], request.match_info["mac"])
