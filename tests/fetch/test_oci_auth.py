"""Registries that want authentication, over TLS and not, and through a proxy.

Real parts: Debian's docker-registry with token auth (the token service written in
tests/helpers/registry.py) or htpasswd, a CA made with openssl, nginx as the proxy.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.nginx import Nginx
from tests.helpers.pki import make_server_pki
from tests.helpers.registry import Pusher, Registry, TokenIssuer
from tftproxy import assemble
from tftproxy.settings.model import Settings

REPO = "fedora/netboot"
USERS = {"tester": "s3cret"}
KERNEL = os.urandom(200_000)


async def fetch(settings: Settings, prefix: str, url: str):
    files = assemble.boot_files(settings)
    try:
        await files.recover()
        first = await (await files.request(prefix, url)).outcome()
        again = await (await files.request(prefix, url)).outcome()
        return first, again
    finally:
        await files.close()


def auth_file(path: Path, registry: str, user: str, password: str) -> Path:
    raw = base64.b64encode(f"{user}:{password}".encode()).decode()
    path.write_text(json.dumps({"auths": {registry: {"auth": raw}}}))
    return path


@pytest.fixture
def pki(tmp_path: Path) -> tuple[Path, Path, Path]:
    return make_server_pki(tmp_path / "pki")


@pytest.fixture(params=["anonymous pull", "credentials required"])
def token_registry(request, tmp_path: Path,
                   pki: tuple[Path, Path, Path]) -> Iterator[tuple[Registry, TokenIssuer]]:
    ca, cert, key = pki
    issuer = TokenIssuer(tmp_path / "issuer", USERS,
                         anonymous_pull=request.param == "anonymous pull", tls=(cert, key))
    registry = Registry(tmp_path / "registry", tls=(ca, cert, key), token=issuer)
    Pusher(registry, tmp_path / "push", ("tester", "s3cret")).push(
        REPO, "40-amd64", {"vmlinuz": KERNEL})
    yield registry, issuer
    registry.stop()
    issuer.stop()


async def test_token_auth_over_tls(token_registry, make_settings, pki, root: Path,
                                   tmp_path: Path) -> None:
    registry, issuer = token_registry
    ca = pki[0]
    url = registry.url(f"{REPO}:40-amd64", "vmlinuz")
    assert url.startswith("oci://")
    # The registry's certificate is verified: unknown CA, no file.
    first, _ = await fetch(make_settings(), "boot/t", url)
    assert first.status == "failed"
    assert "TLS error" in (first.message or "") and "certificate verify failed" in (
        first.message or "")
    creds = auth_file(tmp_path / "auth.json", registry.host, "tester", "s3cret")
    if not issuer.anonymous_pull:
        first, _ = await fetch(make_settings(ca_bundle=ca), "boot/t", url)
        assert first.status == "failed"
        assert "access denied; set oci_auth_file to a containers auth.json holding " \
               f"credentials for {registry.host}" in (first.message or "")
        wrong = auth_file(tmp_path / "wrong.json", registry.host, "tester", "nope")
        first, _ = await fetch(make_settings(ca_bundle=ca, oci_auth_file=wrong), "boot/t", url)
        assert "refused the credentials of oci_auth_file" in (first.message or "")
        assert not (root / "boot/t-vmlinuz").exists()
    before = len(registry.requests())
    first, again = await fetch(make_settings(ca_bundle=ca, oci_auth_file=creds), "boot/t", url)
    assert (first.status, again.status) == ("published", "unchanged"), first.message
    assert (root / "boot/t-vmlinuz").read_bytes() == KERNEL
    heads = [r for r in registry.requests()[before:] if r[0] == "HEAD"]
    # The first check answers the challenge; the token is kept: the next check is one request.
    assert heads == [("HEAD", f"/v2/{REPO}/manifests/40-amd64", 401),
                     ("HEAD", f"/v2/{REPO}/manifests/40-amd64", 200),
                     ("HEAD", f"/v2/{REPO}/manifests/40-amd64", 200)]
    # Credentials go to the token service over TLS; anonymous pull needs none, but they are
    # what the admin configured for this registry.
    assert issuer.issued[-1] == ("tester", [f"repository:{REPO}:pull"])


@pytest.mark.parametrize("token_registry", ["anonymous pull"], indirect=True)
async def test_an_anonymous_token_needs_no_credentials(token_registry, make_settings, pki,
                                                       root: Path) -> None:
    registry, issuer = token_registry
    first, again = await fetch(make_settings(ca_bundle=pki[0]), "boot/a",
                               registry.url(f"{REPO}:40-amd64", "vmlinuz"))
    assert (first.status, again.status) == ("published", "unchanged"), first.message
    assert issuer.issued[-1] == (None, [f"repository:{REPO}:pull"])


async def test_basic_auth_over_plain_http(tmp_path: Path, make_settings, root: Path) -> None:
    registry = Registry(tmp_path / "registry", htpasswd=USERS)
    try:
        Pusher(registry, tmp_path / "push", ("tester", "s3cret"), basic=True).push(
            REPO, "40-amd64", {"vmlinuz": KERNEL})
        url = registry.url(f"{REPO}:40-amd64", "vmlinuz")
        first, _ = await fetch(make_settings(), "boot/b", url)
        assert f"{registry.host} asks for a user name and password (Basic): set " \
               "oci_auth_file" in (first.message or "")
        wrong = auth_file(tmp_path / "wrong.json", registry.host, "tester", "nope")
        first, _ = await fetch(make_settings(oci_auth_file=wrong), "boot/b", url)
        assert f"HTTP 401 Unauthorized: access denied; check the credentials for " \
               f"{registry.host} in oci_auth_file {wrong}" in (first.message or "")
        creds = auth_file(tmp_path / "auth.json", registry.host, "tester", "s3cret")
        before = len(registry.requests())
        first, again = await fetch(make_settings(oci_auth_file=creds), "boot/b", url)
        assert (first.status, again.status) == ("published", "unchanged"), first.message
        assert (root / "boot/b-vmlinuz").read_bytes() == KERNEL
        # Once Basic is known to be wanted, it is sent up front.
        assert [r for r in registry.requests()[before:] if r[0] == "HEAD"][-1] == (
            "HEAD", f"/v2/{REPO}/manifests/40-amd64", 200)
        broken = tmp_path / "broken.json"
        broken.write_text("{not json")
        first, _ = await fetch(make_settings(oci_auth_file=broken), "boot/x", url)
        assert f"cannot read oci_auth_file {broken}" in (first.message or "")
    finally:
        registry.stop()


async def test_registry_requests_go_through_the_configured_proxy(
        tmp_path: Path, make_settings, root: Path) -> None:
    registry = Registry(tmp_path / "registry")
    proxy = Nginx(tmp_path / "proxy",
                  extra=f"location / {{ proxy_pass http://{registry.host}; }}")
    try:
        Pusher(registry, tmp_path / "push").push(REPO, "40-amd64", {"vmlinuz": KERNEL})
        settings = make_settings(http_proxy=f"http://127.0.0.1:{proxy.port}")
        first, again = await fetch(settings, "boot/p",
                                   registry.url(f"{REPO}:40-amd64", "vmlinuz"))
        assert (first.status, again.status) == ("published", "unchanged"), first.message
        assert proxy.log_lines(f"/v2/{REPO}/manifests/40-amd64") == [
            ("HEAD", 200, 0), ("HEAD", 200, 0)]
        assert (root / "boot/p-vmlinuz").read_bytes() == KERNEL
    finally:
        proxy.stop()
        registry.stop()
