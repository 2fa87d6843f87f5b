"""Typed keys for what the application object carries, shared by the route modules."""

from aiohttp import web

from tftproxy.bootfiles import BootFiles
from tftproxy.config import Settings

SETTINGS_KEY: web.AppKey[Settings] = web.AppKey("settings", Settings)
BOOTFILES_KEY: web.AppKey[BootFiles] = web.AppKey("bootfiles", BootFiles)
