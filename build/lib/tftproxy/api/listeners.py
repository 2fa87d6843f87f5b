"""The sockets the API listens on: plain HTTP and HTTPS with client-certificate verification.

smart-proxy's HTTPS asks every client for a certificate and verifies any certificate presented
against ``ssl_ca_file`` (a bad or foreign one fails the handshake), but lets a client without
one finish the handshake: ``/features`` and ``/version`` stay open, and a protected route then
answers 403 ``No client SSL certificate supplied`` (see :mod:`tftproxy.api.auth`). The context
here does the same with ``CERT_OPTIONAL``, which in Python means exactly that.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Literal

from tftproxy._addr import format_hostport, parse_listen
from tftproxy.errors import SettingsError
from tftproxy.settings.model import Settings

# Modern and forward-secret only; TLS 1.3 suites are not affected by this string.
_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20:!aNULL:!eNULL:!MD5:!DSS"


@dataclass(frozen=True)
class Listener:
    """One address to serve the API on; ``host`` None means every address."""

    scheme: Literal["http", "https"]
    host: str | None
    port: int
    ssl_context: ssl.SSLContext | None = None

    @property
    def url(self) -> str:
        return f"{self.scheme}://{format_hostport(self.host or '0.0.0.0', self.port)}"


def server_ssl_context(settings: Settings) -> ssl.SSLContext:
    """The HTTPS server context: our certificate, client certificates verified against the CA.

    Raises :class:`SettingsError` naming the setting whose file cannot be used.
    """
    cert, key, ca = settings.ssl_certificate, settings.ssl_private_key, settings.ssl_ca_file
    if cert is None or key is None or ca is None:
        raise SettingsError("HTTPS needs ssl_certificate, ssl_private_key and ssl_ca_file")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if "1.2" in settings.tls_disabled_versions:
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    if "1.3" in settings.tls_disabled_versions:
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.options |= ssl.OP_NO_RENEGOTIATION | ssl.OP_CIPHER_SERVER_PREFERENCE
    ciphers = _CIPHERS + "".join(f":!{c}" for c in settings.ssl_disabled_ciphers)
    try:
        ctx.set_ciphers(ciphers)
    except ssl.SSLError:
        raise SettingsError(f"setting 'ssl_disabled_ciphers': {settings.ssl_disabled_ciphers} "
                            f"leaves no usable cipher") from None
    try:
        ctx.load_cert_chain(cert, key)
    except (ssl.SSLError, OSError) as exc:
        raise SettingsError(f"settings 'ssl_certificate' ({settings.ssl_certificate}) and "
                            f"'ssl_private_key' ({settings.ssl_private_key}): cannot be "
                            f"used: {_why(exc)}") from None
    try:
        ctx.load_verify_locations(cafile=ca)
    except (ssl.SSLError, OSError) as exc:
        raise SettingsError(f"setting 'ssl_ca_file' ({settings.ssl_ca_file}): cannot be used: "
                            f"{_why(exc)}") from None
    ctx.verify_mode = ssl.CERT_OPTIONAL
    return ctx


def _why(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError):
        return exc.reason or str(exc)
    return getattr(exc, "strerror", None) or str(exc)


def api_listeners(settings: Settings) -> list[Listener]:
    """Every address the API must listen on, HTTP first; raises SettingsError on bad TLS files."""
    out: list[Listener] = []
    if settings.http_enabled:
        out += [Listener("http", h, p) for h, p in parse_listen(settings.listen)]
    if settings.https_enabled:
        ctx = server_ssl_context(settings)
        out += [Listener("https", h, p, ctx) for h, p in parse_listen(settings.https_listen)]
    return out
