"""What Foreman reads to register the proxy: ``/features``, ``/version``, ``/v2/features``."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from tftproxy import __version__
from tftproxy.api.context import context
from tftproxy.settings.model import FeatureMode, Settings

# smart-proxy PR #958's: archives (tgz, iso) extracted into bootloader universes, whose boot
# files (kernel, initrd) Foreman may point hosts at.
CAPABILITIES = ("bootloader_archive_iso", "bootloader_archive_tgz", "bootloader_universe",
                "bootloader_universe_boot_files")


def enabled_modules(settings: Settings) -> list[str]:
    """The smart-proxy modules this proxy runs: tftp, unless its settings turn it off."""
    return [] if settings.feature_enabled is FeatureMode.OFF else ["tftp"]


def v2_features(settings: Settings) -> dict[str, Any]:
    """smart-proxy's ``/v2/features`` document for the tftp module."""
    running = settings.feature_enabled is not FeatureMode.OFF
    return {
        "tftp": {
            "http_enabled": settings.feature_on("http"),
            "https_enabled": settings.feature_on("https"),
            "settings": {"tftp_servername": settings.tftp_servername},
            "state": "running" if running else "disabled",
            "capabilities": list(CAPABILITIES),
        }
    }


async def features(request: web.Request) -> web.Response:
    return web.json_response(enabled_modules(context(request).settings))


async def version(request: web.Request) -> web.Response:
    modules = {name: __version__ for name in enabled_modules(context(request).settings)}
    return web.json_response({"version": __version__, "modules": modules})


async def features_v2(request: web.Request) -> web.Response:
    return web.json_response(v2_features(context(request).settings))
