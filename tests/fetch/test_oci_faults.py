"""What a real registry here will not do, scripted on the wire (tests/helpers/upstream.py):
a blob redirected to another host (as quay.io and Docker Hub send them to a CDN), a blob cut
short, a 503, a HEAD that does not name the digest."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path

from tests.helpers.upstream import Reply, Seen, Upstream
from tftproxy import assemble
from tftproxy.settings.model import Settings

KERNEL = os.urandom(150_000)
LAYER = "sha256:" + hashlib.sha256(KERNEL).hexdigest()
MANIFEST = json.dumps({
    "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": {"mediaType": "application/vnd.oci.empty.v1+json", "size": 2,
               "digest": "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"},
    "layers": [{"mediaType": "application/x-netboot-file", "digest": LAYER,
                "size": len(KERNEL),
                "annotations": {"org.opencontainers.image.title": "vmlinuz"}}],
}).encode()
DIGEST = "sha256:" + hashlib.sha256(MANIFEST).hexdigest()
BASIC = "Basic " + base64.b64encode(b"u:p").decode()


def serve_registry(registry: Upstream, *, head_digest: bool = True) -> None:
    def manifest(seen: Seen) -> Reply:
        if seen.headers.get("authorization") != BASIC:
            return Reply(401, "Unauthorized", headers={"WWW-Authenticate": 'Basic realm="r"'})
        headers = {"Content-Type": "application/vnd.oci.image.manifest.v1+json"}
        if head_digest:
            headers["Docker-Content-Digest"] = DIGEST
        return Reply(headers=headers, body=MANIFEST)

    registry.routes["/v2/os/boot/manifests/1"] = manifest
    registry.routes[f"/v2/os/boot/manifests/{DIGEST}"] = manifest


async def fetch(settings: Settings, url: str):
    files = assemble.boot_files(settings)
    try:
        await files.recover()
        return await (await files.request("boot/f", url)).outcome()
    finally:
        await files.close()


def settings_with_auth(make_settings, tmp_path: Path, registry: Upstream, **extra) -> Settings:
    auth = tmp_path / "auth.json"
    auth.write_text(json.dumps({"auths": {f"127.0.0.1:{registry.port}": {
        "auth": base64.b64encode(b"u:p").decode()}}}))
    return make_settings(oci_auth_file=auth, **extra)


async def test_a_blob_redirected_to_another_host_gets_no_credentials(
        upstream: Upstream, make_settings, tmp_path: Path, root: Path) -> None:
    cdn = Upstream()
    try:
        serve_registry(upstream)
        upstream.routes[f"/v2/os/boot/blobs/{LAYER}"] = lambda s: Reply(
            307, "Temporary Redirect", headers={"Location": cdn.url("/blob?sig=x")})
        cdn.routes["/blob?sig=x"] = lambda s: Reply(body=KERNEL)
        result = await fetch(settings_with_auth(make_settings, tmp_path, upstream),
                             f"oci+http://127.0.0.1:{upstream.port}/os/boot:1#vmlinuz")
        assert result.status == "published", result.message
        assert (root / "boot/f-vmlinuz").read_bytes() == KERNEL
        [blob_request] = upstream.requests_for(f"/v2/os/boot/blobs/{LAYER}")
        assert blob_request.headers.get("authorization") == BASIC
        [cdn_request] = cdn.requests_for("/blob?sig=x")
        assert "authorization" not in cdn_request.headers
    finally:
        cdn.close()


async def test_a_blob_cut_short_is_retried_then_refused(upstream: Upstream, make_settings,
                                                        tmp_path: Path, root: Path) -> None:
    serve_registry(upstream)
    upstream.routes[f"/v2/os/boot/blobs/{LAYER}"] = lambda s: Reply(body=KERNEL, cut_at=50_000)
    settings = settings_with_auth(make_settings, tmp_path, upstream, retries=1)
    result = await fetch(settings, f"oci+http://127.0.0.1:{upstream.port}/os/boot:1#vmlinuz")
    assert result.status == "failed"
    message = result.message or ""
    assert message.startswith("truncated: the server closed the connection after ")
    assert message.endswith("of 150000 bytes (after 2 attempts); nothing published")
    assert len(upstream.requests_for(f"/v2/os/boot/blobs/{LAYER}")) == 2
    assert not (root / "boot/f-vmlinuz").exists()
    assert list((root / ".tftproxy/private/staging").iterdir()) == []


async def test_a_503_is_retried_and_a_head_without_digest_falls_back_to_the_body(
        upstream: Upstream, make_settings, tmp_path: Path, root: Path) -> None:
    serve_registry(upstream, head_digest=False)
    answers = iter([Reply(503, "Service Unavailable"), Reply(body=KERNEL)])
    upstream.routes[f"/v2/os/boot/blobs/{LAYER}"] = lambda s: next(answers)
    settings = settings_with_auth(make_settings, tmp_path, upstream, retries=2)
    result = await fetch(settings, f"oci+http://127.0.0.1:{upstream.port}/os/boot:1#vmlinuz")
    assert result.status == "published", result.message
    assert result.final_url == f"oci+http://127.0.0.1:{upstream.port}/os/boot@{DIGEST}#vmlinuz"
    # The tag's digest came from hashing the GET's body; the manifest was not fetched twice.
    tag = [s.method for s in upstream.requests_for("/v2/os/boot/manifests/1")]
    # Without then with Basic; once asked for, Basic goes with every request.
    assert tag == ["HEAD", "HEAD", "GET"]
    assert upstream.requests_for(f"/v2/os/boot/manifests/{DIGEST}") == []
