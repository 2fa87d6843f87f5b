"""What Foreman reads to register the proxy: ``/features``, ``/version``, ``/v2/features``.

tftproxy provides three of smart-proxy's modules: ``tftp``, ``httpboot`` (``/httpboot/`` and
``/EFI/``) and ``logs`` (``/logs/``), each switched by its own `enabled` setting. Foreman
warns "Core and proxy versions do not match" unless ``/version`` is its own major.minor or
the next minor, so the version reported is smart-proxy's (see
:func:`tftproxy.assemble.smart_proxy_version`); tftproxy's own is under its own key.
"""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from tftproxy import __version__
from tftproxy.api.context import ApiContext, context
from tftproxy.settings.model import FOREMAN_RELEASE, MODULES, FeatureMode, Settings

# The tftp module's, from smart-proxy PR #958: archives (tgz, iso) extracted into bootloader
# universes, whose boot files (kernel, initrd) Foreman may point hosts at. httpboot and logs
# announce none, as in smart-proxy.
CAPABILITIES = ("bootloader_archive_iso", "bootloader_archive_tgz", "bootloader_universe",
                "bootloader_universe_boot_files")


def enabled_modules(settings: Settings) -> list[str]:
    """The smart-proxy modules this proxy runs, sorted as smart-proxy lists them."""
    return sorted(m for m in MODULES if settings.module_mode(m) is not FeatureMode.OFF)


def reported_version(settings: Settings) -> str:
    return settings.smart_proxy_version or FOREMAN_RELEASE


def _module_settings(ctx: ApiContext, module: str) -> dict[str, Any]:
    settings = ctx.settings
    if module == "tftp":
        return {"tftp_servername": settings.tftp_servername}
    if module == "httpboot":
        # What Foreman builds UEFI HTTP boot URLs from: the port of each listener the module
        # answers on, null where it does not.
        return {f"{scheme}_port": ctx.ports.get(scheme) if settings.module_on(module, scheme)
                else None for scheme in ("http", "https")}
    return {}


def v2_features(ctx: ApiContext) -> dict[str, Any]:
    """smart-proxy's ``/v2/features`` document: every module, running or disabled."""
    settings = ctx.settings
    out: dict[str, Any] = {}
    for module in sorted(MODULES):
        running = settings.module_mode(module) is not FeatureMode.OFF
        out[module] = {
            "http_enabled": settings.module_on(module, "http"),
            "https_enabled": settings.module_on(module, "https"),
            "settings": _module_settings(ctx, module),
            "state": "running" if running else "disabled",
            "capabilities": list(CAPABILITIES) if module == "tftp" else [],
        }
    return out


async def features(request: web.Request) -> web.Response:
    return web.json_response(enabled_modules(context(request).settings))


async def version(request: web.Request) -> web.Response:
    settings = context(request).settings
    reported = reported_version(settings)
    # smart-proxy's modules report the release without its tag ("3.11.0-develop" -> "3.11.0").
    match = re.match(r"\d+\.\d+(?:\.\d+)?", reported)
    module_version = match.group(0) if match else reported
    modules = {name: module_version for name in enabled_modules(settings)}
    return web.json_response({"version": reported, "modules": modules, "tftproxy": __version__})


async def features_v2(request: web.Request) -> web.Response:
    return web.json_response(v2_features(context(request)))
