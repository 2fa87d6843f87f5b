"""Assembles the aiohttp application from the route modules of each part of the API."""

from __future__ import annotations

from aiohttp import web

from tftproxy.api import auth, errors, openapi, proxy, pxe
from tftproxy.api import bootfiles as bootfiles_routes
from tftproxy.api.keys import BOOTFILES_KEY, SETTINGS_KEY
from tftproxy.bootfiles import BootFiles
from tftproxy.config import Settings
from tftproxy.httpboot import httpboot_routes


def create_app(settings: Settings, files: BootFiles) -> web.Application:
    """The API application; ``files`` owns the store and the fetch jobs."""
    app = web.Application(client_max_size=1024 * 1024)
    app[SETTINGS_KEY] = settings
    app[BOOTFILES_KEY] = files
    # Outermost first: every failure becomes plain text, then the trusted_hosts/TLS guard.
    app.middlewares.append(errors.plain_text_errors)
    auth.setup(app, settings)
    app.add_routes(bootfiles_routes.routes)
    # After fetch_boot_file: /tftp/{variant}/{mac} would otherwise match its status route.
    pxe.setup(app, settings)
    proxy.setup(app, settings)
    openapi.setup(app)
    app.add_routes(httpboot_routes(files.store, refresh_hold=settings.refresh_hold))
    return app
