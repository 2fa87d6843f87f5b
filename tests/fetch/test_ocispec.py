"""The oci:// URL form and the manifests a registry answers with (pure parsing)."""

from __future__ import annotations

import json

import pytest

from tftproxy.errors import BadSource, ManifestError
from tftproxy.fetch.ocispec import (
    ImageIndex,
    ImageManifest,
    Platform,
    digest_of,
    find_layer,
    parse_manifest,
    parse_source,
    select_platform,
)
from tftproxy.fetch.schemes import check_scheme, file_name

DIGEST = "sha256:" + "ab" * 32


def test_a_tag_a_digest_and_the_path_form_foreman_builds() -> None:
    src = parse_source("oci://quay.io/pulp/fedora-kickstart-artifacts:40-amd64#vmlinuz")
    assert (src.protocol, src.registry, src.repository, src.tag, src.digest, src.title) == (
        "https", "quay.io", "pulp/fedora-kickstart-artifacts", "40-amd64", None, "vmlinuz")
    assert src.api("manifests", src.reference) == (
        "https://quay.io/v2/pulp/fedora-kickstart-artifacts/manifests/40-amd64")
    assert src.scope == "repository:pulp/fedora-kickstart-artifacts:pull"
    src = parse_source(f"oci+http://127.0.0.1:5000/fedora/netboot@{DIGEST}#initrd.img")
    assert (src.protocol, src.registry, src.tag, src.digest, src.reference) == (
        "http", "127.0.0.1:5000", None, DIGEST, DIGEST)
    # An installation medium oci://host/repo:tag gets Foreman's paths appended: the last
    # segment is the file.
    src = parse_source("oci://reg.example:8443/fedora/netboot:40-amd64/images/pxeboot/vmlinuz")
    assert (src.registry, src.repository, src.tag, src.title) == (
        "reg.example:8443", "fedora/netboot", "40-amd64", "vmlinuz")
    assert src.pinned(DIGEST) == f"oci://reg.example:8443/fedora/netboot@{DIGEST}#vmlinuz"
    src = parse_source("oci://docker.io/netboot:1#grubx64.efi?")
    assert (src.api_host, src.repository) == ("registry-1.docker.io", "library/netboot")


def test_the_published_name_is_the_title() -> None:
    assert check_scheme("oci://r/a:b#c") == "oci"
    assert check_scheme("oci+http://r/a:b#c") == "oci+http"
    assert file_name("oci://r/fedora:40#shimx64.efi") == "shimx64.efi"
    assert file_name("oci://r/fedora:40#a%20b") == "a b"
    assert file_name("http://m/os/vmlinuz") is None


def test_a_platform_picks_one_manifest_of_an_index() -> None:
    src = parse_source("oci://r/fedora:40?platform=linux/arm64#vmlinuz")
    assert src.platform == Platform("linux", "arm64")
    assert parse_source("oci://r/fedora:40?platform=x86_64#vmlinuz").platform == Platform(
        "linux", "amd64")


@pytest.mark.parametrize(("url", "message"), [
    ("oci://r/fedora#vmlinuz", "names no tag or digest"),
    ("oci://r/fedora:40-amd64", "names no file of the artifact"),
    ("oci://r/Fedora:40#vmlinuz", "'Fedora' is not a valid repository name component"),
    ("oci://r/fedora:-40#vmlinuz", "is not a valid tag"),
    ("oci://r/fedora@sha512:" + "a" * 128 + "#vmlinuz", "only sha256 digests"),
    ("oci://r/fedora@sha256:xyz#vmlinuz", "is not a digest"),
    ("oci://r/fedora:40#..", "'..' is not a file name"),
    ("oci://r/fedora:40#a%2Fb", "a title with a directory"),
    ("oci://r/fedora:40/images/vmlinuz#vmlinuz", "names the file twice"),
    ("oci://user:pw@r/fedora:40#vmlinuz", "may not carry credentials"),
    ("oci:///fedora:40#vmlinuz", "names no registry"),
    ("oci://r/fedora:40?arch=amd64#vmlinuz", "unknown parameter 'arch'"),
    ("oci://r:99999/fedora:40#vmlinuz", "not a valid URL"),
])
def test_a_malformed_reference_is_refused_naming_the_part(url: str, message: str) -> None:
    with pytest.raises(BadSource) as info:
        parse_source(url)
    assert message in str(info.value)


def _manifest(layers: list[dict], **extra: object) -> bytes:
    return json.dumps({"schemaVersion": 2, "mediaType":
                       "application/vnd.oci.image.manifest.v1+json",
                       "config": {"mediaType": "application/vnd.oci.empty.v1+json",
                                  "digest": DIGEST, "size": 2},
                       "layers": layers, **extra}).encode()


def _layer(title: str | None, digest: str = DIGEST, media: str = "application/x-netboot-file",
           **annotations: str) -> dict:
    ann = dict(annotations)
    if title is not None:
        ann["org.opencontainers.image.title"] = title
    return {"mediaType": media, "digest": digest, "size": 7, "annotations": ann}


def test_a_layer_is_found_by_its_title() -> None:
    body = _manifest([_layer("vmlinuz"), _layer("initrd.img", "sha256:" + "cd" * 32)],
                     artifactType="application/vnd.org.pulpproject.netboot.artifact.v1")
    m = parse_manifest(body, digest_of(body), None, "r/f:40")
    assert isinstance(m, ImageManifest)
    assert m.artifact_type == "application/vnd.org.pulpproject.netboot.artifact.v1"
    layer = find_layer(m, "initrd.img", "r/f:40")
    assert (layer.sha256, layer.size) == ("cd" * 32, 7)
    with pytest.raises(ManifestError, match=r"has no file 'boot.iso' \(it has: initrd.img, "
                                            r"vmlinuz\)"):
        find_layer(m, "boot.iso", "r/f:40")


@pytest.mark.parametrize(("layers", "message"), [
    ([_layer("vmlinuz"), _layer("vmlinuz")], "2 layers titled 'vmlinuz'"),
    ([_layer("vmlinuz", "sha512:" + "a" * 128)], "only sha256 layers"),
    ([_layer("vmlinuz", media="application/vnd.oci.image.layer.v1.tar+gzip")],
     "compressed or packed"),
    ([_layer("vmlinuz", **{"io.deis.oras.content.unpack": "true"})], "compressed or packed"),
    ([_layer(None)], "no layer has a org.opencontainers.image.title annotation"),
])
def test_a_layer_that_cannot_be_served_as_the_file_is_refused(layers: list[dict],
                                                              message: str) -> None:
    body = _manifest(layers)
    m = parse_manifest(body, digest_of(body), None, "r/f:40")
    assert isinstance(m, ImageManifest)
    with pytest.raises(ManifestError) as info:
        find_layer(m, "vmlinuz", "r/f:40")
    assert message in str(info.value)


def test_an_index_offers_its_platforms() -> None:
    entries = [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": "sha256:" + c * 64, "size": 400,
                "platform": {"os": "linux", "architecture": arch}}
               for c, arch in (("1", "amd64"), ("2", "arm64"))]
    body = json.dumps({"schemaVersion": 2, "mediaType":
                       "application/vnd.oci.image.index.v1+json", "manifests": entries}).encode()
    index = parse_manifest(body, digest_of(body), None, "r/f:40")
    assert isinstance(index, ImageIndex)
    assert select_platform(index, Platform("linux", "arm64"), "r/f:40").digest == (
        "sha256:" + "2" * 64)
    with pytest.raises(ManifestError, match=r"index of 2 manifests \(linux/amd64, "
                                            r"linux/arm64\): add \?platform="):
        select_platform(index, None, "r/f:40")
    with pytest.raises(ManifestError, match="no manifest for platform linux/s390x"):
        select_platform(index, Platform("linux", "s390x"), "r/f:40")


@pytest.mark.parametrize(("body", "message"), [
    (b"<html>", "not JSON"),
    (b"[]", "not a JSON object"),
    (json.dumps({"schemaVersion": 1}).encode(), "schemaVersion 1"),
    (json.dumps({"schemaVersion": 2, "mediaType": "text/plain"}).encode(), "unsupported"),
    (json.dumps({"schemaVersion": 2, "layers": [{"digest": DIGEST, "size": -1}]}).encode(),
     "no valid size"),
])
def test_what_is_not_a_manifest_is_refused(body: bytes, message: str) -> None:
    with pytest.raises(ManifestError) as info:
        parse_manifest(body, digest_of(body), None, "r/f:40")
    assert message in str(info.value)
