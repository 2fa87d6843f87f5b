"""The HTTP API: smart-proxy's routes, served by aiohttp."""

from tftproxy.api.app import create_app

__all__ = ["create_app"]
