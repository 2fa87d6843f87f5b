"""HTTPS with client certificates, checked by a real TLS client (curl) against real certs."""

from __future__ import annotations

import json
import socket
import ssl

import pytest

from tests.api.certs import TRUSTED_CN, UNTRUSTED_CN, Pki
from tests.api.conftest import ServedProxy, curl
from tftproxy.api.listeners import server_ssl_context
from tftproxy.api.proxy import CAPABILITIES
from tftproxy.errors import SettingsError
from tftproxy.settings.model import Settings

MAC = "aa:bb:cc:dd:ee:ff"


def tls_settings(pki: Pki, **extra: object) -> dict[str, object]:
    return {"ssl_certificate": pki.server.cert, "ssl_private_key": pki.server.key,
            "ssl_ca_file": pki.ca.cert, **extra}


def client(pki: Pki, who: str) -> list[str]:
    args = ["--cacert", str(pki.ca.cert)]
    if who != "none":
        pair = getattr(pki, who)
        args += ["--cert", str(pair.cert), "--key", str(pair.key)]
    return args


async def test_https_client_certificates_and_trusted_hosts(proxy, pki: Pki) -> None:
    p: ServedProxy = await proxy(**tls_settings(pki, trusted_hosts=[TRUSTED_CN.upper()]),
                                 tftp_servername="tftp.example.test")
    https = p.urls["https"]

    # No certificate: the open routes answer, the protected ones refuse.
    for path, want in (("/features", ["tftp"]), ("/version", None)):
        r = await curl(https + path, *client(pki, "none"))
        assert r.status == 200, r.stderr
        if want is not None:
            assert json.loads(r.body) == want
    for path in ("/tftp/serverName", "/v2/features"):
        r = await curl(https + path, *client(pki, "none"))
        assert (r.status, r.body.strip()) == (403, "No client SSL certificate supplied")
    r = await curl(https + f"/tftp/pxelinux/{MAC}", *client(pki, "none"),
                   "--data", "pxeconfig=x")
    assert r.status == 403
    assert not (p.root / "pxelinux.cfg").exists()

    # A certificate of the right CA whose CN is not trusted.
    r = await curl(https + "/tftp/serverName", *client(pki, "untrusted"))
    assert (r.status, r.body.strip()) == (
        403, f"Untrusted client {UNTRUSTED_CN} attempted to access /tftp/serverName. "
             f"Check :trusted_hosts: in settings.yml")
    r = await curl(https + f"/tftp/pxelinux/{MAC}", *client(pki, "untrusted"),
                   "--data", "pxeconfig=x")
    assert r.status == 403
    assert not (p.root / "pxelinux.cfg").exists()
    r = await curl(https + "/tftp/serverName", *client(pki, "no_cn"))
    assert (r.status, r.body.strip()) == (403, "could not read CN from the client certificate")

    # The trusted client (compared case-insensitively, as smart-proxy does).
    r = await curl(https + "/tftp/serverName", *client(pki, "trusted"))
    assert (r.status, json.loads(r.body)) == (200, {"serverName": "tftp.example.test"})
    r = await curl(https + f"/tftp/PXELinux/{MAC}", *client(pki, "trusted"),
                   "-H", "Accept: application/json", "--data", "pxeconfig=over+tls")
    assert (r.status, r.body) == (200, "")
    assert (p.root / "pxelinux.cfg/01-aa-bb-cc-dd-ee-ff").read_text() == "over tls"
    r = await curl(https + "/v2/features", *client(pki, "trusted"))
    assert json.loads(r.body)["tftp"]["https_enabled"] is True

    # A certificate from another CA never gets past the handshake.
    r = await curl(https + "/features", *client(pki, "foreign"))
    assert r.returncode != 0
    assert r.status == 0

    # Plain HTTP from loopback: 127.0.0.1's reverse name is not in trusted_hosts.
    r = await curl(p.urls["http"] + "/tftp/serverName")
    assert r.status == 403
    assert r.body.startswith("Untrusted client ")
    assert "/tftp/serverName" in r.body


async def test_without_trusted_hosts_any_verified_certificate_is_enough(proxy, pki: Pki) -> None:
    p: ServedProxy = await proxy(**tls_settings(pki))
    https = p.urls["https"]
    r = await curl(https + "/tftp/serverName", *client(pki, "untrusted"))
    assert r.status == 200
    r = await curl(https + "/tftp/serverName", *client(pki, "none"))
    assert (r.status, r.body.strip()) == (403, "No client SSL certificate supplied")


async def test_empty_trusted_hosts_denies_everyone(proxy, pki: Pki) -> None:
    p: ServedProxy = await proxy(**tls_settings(pki, trusted_hosts=[]))
    r = await curl(p.urls["https"] + "/tftp/serverName", *client(pki, "trusted"))
    assert r.status == 403
    assert r.body.startswith(f"Untrusted client {TRUSTED_CN} ")
    r = await curl(p.urls["https"] + "/features", *client(pki, "trusted"))
    assert r.status == 200


async def test_http_listener_off_and_module_on_one_listener(proxy, pki: Pki) -> None:
    p: ServedProxy = await proxy(**tls_settings(pki, http_enabled=False))
    assert set(p.urls) == {"https"}
    q: ServedProxy = await proxy(**tls_settings(pki, feature_enabled="https"))
    r = await curl(q.urls["http"] + "/tftp/serverName")
    assert r.status == 404
    r = await curl(q.urls["http"] + "/features")
    assert json.loads(r.body) == ["tftp"]
    r = await curl(q.urls["https"] + "/tftp/serverName", *client(pki, "trusted"))
    assert r.status == 200
    r = await curl(q.urls["http"] + "/v2/features")
    assert json.loads(r.body)["tftp"] | {"settings": None} == {
        "http_enabled": False, "https_enabled": True, "settings": None, "state": "running",
        "capabilities": list(CAPABILITIES)}


async def test_old_tls_versions_are_refused(proxy, pki: Pki) -> None:
    p: ServedProxy = await proxy(**tls_settings(pki, tls_disabled_versions=["1.2"]))
    r = await curl(p.urls["https"] + "/features", *client(pki, "trusted"), "--tls-max", "1.2")
    assert r.returncode != 0
    r = await curl(p.urls["https"] + "/features", *client(pki, "trusted"))
    assert r.status == 200


def test_context_requires_verification_of_presented_certificates(pki: Pki) -> None:
    ctx = server_ssl_context(Settings(**tls_settings(pki)))  # type: ignore[arg-type]
    assert ctx.verify_mode == ssl.CERT_OPTIONAL
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2


def test_unusable_tls_files_name_the_setting(pki: Pki, tmp_path) -> None:
    bogus = tmp_path / "bogus.pem"
    bogus.write_text("not a certificate")
    with pytest.raises(SettingsError, match="'ssl_certificate'"):
        server_ssl_context(Settings(**tls_settings(pki, ssl_certificate=bogus)))  # type: ignore[arg-type]
    with pytest.raises(SettingsError, match="'ssl_ca_file'"):
        server_ssl_context(Settings(**tls_settings(pki, ssl_ca_file=bogus)))  # type: ignore[arg-type]
    with pytest.raises(SettingsError, match="'ssl_certificate'"):
        server_ssl_context(Settings(**tls_settings(pki, ssl_private_key=pki.trusted.key)))  # type: ignore[arg-type]


async def test_http_trusted_hosts_use_forward_verified_reverse_dns(proxy) -> None:
    """127.0.0.1's reverse name (from /etc/hosts) resolves back to it: a real lookup."""
    name = socket.gethostbyaddr("127.0.0.1")[0].lower()
    p: ServedProxy = await proxy(trusted_hosts=[name])
    r = await curl(p.urls["http"] + "/tftp/serverName")
    assert r.status == 200, r.body
    q: ServedProxy = await proxy(trusted_hosts=["foreman.example.test"])
    r = await curl(q.urls["http"] + "/v2/features")
    assert (r.status, r.body.strip()) == (
        403, f"Untrusted client {name} attempted to access /v2/features. "
             f"Check :trusted_hosts: in settings.yml")
    r = await curl(q.urls["http"] + "/features")
    assert r.status == 200
