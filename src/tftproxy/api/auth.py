"""Who may use the API: smart-proxy's ``trusted_hosts`` and client-certificate rules.

Protected are ``/tftp/*``, ``/logs/`` and ``/v2/features``; ``/features``, ``/version``, the
OpenAPI document, ``/httpboot/*`` and ``/EFI/*`` stay open, as in smart-proxy. The status page
(``/``, ``/status``) follows the ``status_page`` setting: protected like ``/tftp/status``
(``trusted``, the default: it shows what ``/tftp/status`` does), open, or absent (``off``).
For a protected route:

* over HTTPS a client certificate is required (403 ``No client SSL certificate supplied``); the
  TLS layer has already verified it against ``ssl_ca_file``;
* when ``trusted_hosts`` is set, the caller's name must be in it: over HTTPS the CN of its
  certificate, over HTTP its reverse-DNS name, forward-verified unless ``forward_verify`` is
  false. Otherwise 403 ``Untrusted client <name> attempted to access <path>. Check
  :trusted_hosts: in settings.yml``. An empty list denies everyone.

A module's routes (tftp, httpboot, logs) also answer only on the listeners the module is
enabled for (smart-proxy's ``enabled: http`` / ``https``); elsewhere they do not exist (404),
as in smart-proxy.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import ssl
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from tftproxy.api.responses import text_response
from tftproxy.errors import Untrusted, printable
from tftproxy.settings.model import Settings, StatusPage

log = logging.getLogger(__name__)

DNS_TIMEOUT = 5.0
DNS_CACHE_SECONDS = 60.0
_DNS_CACHE_SIZE = 1024


# Where each module's routes live, as smart-proxy mounts them.
_MODULE_PREFIXES = (("/tftp", "tftp"), ("/logs", "logs"), ("/httpboot", "httpboot"),
                    ("/EFI", "httpboot"))


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix + "/")


def module_of(path: str) -> str | None:
    """The smart-proxy module a path belongs to, if any."""
    for prefix, module in _MODULE_PREFIXES:
        if _under(path, prefix):
            return module
    return None


PAGE_PATHS = ("/", "/status")


def is_protected(path: str) -> bool:
    return path == "/v2/features" or _under(path, "/tftp") or _under(path, "/logs")


def peer_ssl(request: web.Request) -> ssl.SSLObject | None:
    """The TLS session of the request's connection, None over plain HTTP."""
    transport = request.transport
    if transport is None:
        return None
    obj = transport.get_extra_info("ssl_object")
    return obj if isinstance(obj, ssl.SSLObject) else None


def certificate_cn(cert: dict[str, Any]) -> str | None:
    """The first commonName of a certificate's subject, as ``getpeercert()`` returns it."""
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName" and value:
                return str(value)
    return None


def _plain_ip(text: str) -> str:
    # "::ffff:10.0.0.1" is how a dual-stack socket shows an IPv4 client.
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return text
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return str(addr.ipv4_mapped)
    return str(addr)


class ReverseDns:
    """Forward-verified reverse DNS, with a short cache: Foreman sends bursts of requests."""

    def __init__(self) -> None:
        self._cache: dict[tuple[str, bool], tuple[float, str | Untrusted]] = {}

    async def name(self, ip: str, forward_verify: bool) -> str:
        key = (ip, forward_verify)
        hit = self._cache.get(key)
        if hit is not None and hit[0] > time.monotonic():
            if isinstance(hit[1], Untrusted):
                raise hit[1]
            return hit[1]
        try:
            result: str | Untrusted = await self._lookup(ip, forward_verify)
        except Untrusted as exc:
            result = exc
        if len(self._cache) >= _DNS_CACHE_SIZE:
            self._cache.clear()
        self._cache[key] = (time.monotonic() + DNS_CACHE_SECONDS, result)
        if isinstance(result, Untrusted):
            raise result
        return result

    async def _lookup(self, ip: str, forward_verify: bool) -> str:
        if "%" in ip:
            return ip  # smart-proxy does not resolve IPv6 addresses with a zone either
        loop = asyncio.get_running_loop()
        try:
            fqdn = (await asyncio.wait_for(
                loop.run_in_executor(None, socket.gethostbyaddr, ip), DNS_TIMEOUT))[0]
        except (OSError, TimeoutError) as exc:
            raise Untrusted(f"unable to resolve hostname for ip address {ip}: "
                         f"{_why(exc)}") from None
        if not forward_verify:
            return fqdn
        try:
            infos = await asyncio.wait_for(
                loop.getaddrinfo(fqdn, None, type=socket.SOCK_STREAM), DNS_TIMEOUT)
        except (OSError, TimeoutError) as exc:
            raise Untrusted(f"could not forward verify the remote hostname - {fqdn} ({ip}): "
                         f"{_why(exc)}") from None
        if ip not in {_plain_ip(str(info[4][0])) for info in infos}:
            raise Untrusted(f"untrusted client has no matching forward DNS lookup - {fqdn} ({ip})")
        return fqdn


def _why(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return f"no answer within {DNS_TIMEOUT:g} s"
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


class Authorizer:
    """Decides, per request, whether a protected route may be used."""

    def __init__(self, settings: Settings | Callable[[], Settings],
                 dns: ReverseDns | None = None) -> None:
        # A callable gives the settings in force for each request (they change on reload).
        self._settings = settings if callable(settings) else (lambda: settings)
        self.dns = dns or ReverseDns()

    @property
    def settings(self) -> Settings:
        return self._settings()

    async def check(self, request: web.Request) -> None:
        tls = peer_ssl(request)
        if tls is not None:
            cert = tls.getpeercert()
            if not cert:
                raise Untrusted("No client SSL certificate supplied")
        trusted = self.settings.trusted_hosts
        if trusted is None:
            return
        if tls is not None:
            cn = certificate_cn(tls.getpeercert() or {})
            if cn is None:
                raise Untrusted("could not read CN from the client certificate")
            name = cn.lower()
        else:
            ip = _plain_ip(request.remote or "")
            if not ip:
                raise Untrusted("could not get remote address from environment")
            name = (await self.dns.name(ip, self.settings.forward_verify)).lower()
        if name not in trusted:
            raise Untrusted(f"Untrusted client {printable(name)} attempted to access "
                         f"{printable(request.path)}. Check :trusted_hosts: in settings.yml")

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        path = request.path
        module = module_of(path)
        if module is not None:
            scheme = "https" if peer_ssl(request) is not None else "http"
            if not self.settings.module_on(module, scheme):
                raise web.HTTPNotFound(text=f"the {module} module is not enabled over {scheme}")
        protected = is_protected(path)
        if path in PAGE_PATHS:
            mode = self.settings.status_page
            if mode is StatusPage.OFF:
                raise web.HTTPNotFound(text="the status page is off (status_page: off)")
            protected = mode is StatusPage.TRUSTED
        if protected:
            try:
                await self.check(request)
            except Untrusted as exc:
                log.warning("403 for %s %s from %s: %s", request.method, path, request.remote,
                            exc)
                return text_response(403, str(exc))
        return await handler(request)
