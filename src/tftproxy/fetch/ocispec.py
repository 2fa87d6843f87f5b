"""OCI sources, pure: the ``oci://`` URL form, and the manifests a registry answers with.

A boot file in an OCI registry is one layer of an artifact (Fedora's netboot artifacts, or
anything ``oras push`` made), named by its ``org.opencontainers.image.title`` annotation::

    oci://REGISTRY[:PORT]/REPOSITORY:TAG#TITLE
    oci://REGISTRY[:PORT]/REPOSITORY@sha256:DIGEST#TITLE
    oci://REGISTRY[:PORT]/REPOSITORY:TAG/ANY/PATH/TITLE    (what Foreman builds from a medium)

``oci://`` speaks HTTPS; ``oci+http://`` plain HTTP (a registry on a lab network or loopback).
``?platform=linux/amd64`` picks one manifest when the reference names an image index. The
file's name in the TFTP root is ``prefix-TITLE``, as for ``http://.../TITLE``.

Everything here is text in, values out; :mod:`tftproxy.fetch.oci` does the requests.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from tftproxy.errors import BadSource, ManifestError

SCHEMES = {"oci": "https", "oci+http": "http"}
TITLE = "org.opencontainers.image.title"
# oras packs a pushed directory as a tar.gz and marks it so; its bytes are not the file.
UNPACK = "io.deis.oras.content.unpack"

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
# Registries answer 404 for a manifest whose type Accept does not list: always send them all.
MANIFEST_TYPES = (OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST)
INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)

# The distribution spec's grammar (docs/spec/api.md, "Pulling manifests").
_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
_DIGEST = re.compile(r"[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+")
_SHA256 = re.compile(r"sha256:[a-f0-9]{64}")
# Foreman's architecture names, as the GOARCH names an index's platforms use.
_ARCH_ALIASES = {"x86_64": "amd64", "aarch64": "arm64", "i386": "386", "i686": "386",
                 "ppc64le": "ppc64le", "s390x": "s390x"}


@dataclass(frozen=True)
class Platform:
    """Which manifest of an index: ``os/architecture[/variant]``, architecture as in GOARCH."""

    os: str
    architecture: str
    variant: str | None = None

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)

    def matches(self, platform: Mapping[str, Any]) -> bool:
        return (platform.get("os") == self.os
                and platform.get("architecture") == self.architecture
                and (self.variant is None or platform.get("variant") == self.variant))


@dataclass(frozen=True)
class OciSource:
    """One file of an OCI artifact, as a ``fetch_boot_file`` path names it."""

    url: str
    protocol: str          # "https" or "http"
    registry: str          # host[:port] as written: the key of the credentials
    api_host: str          # where the distribution API is (Docker Hub's differs)
    repository: str
    tag: str | None
    digest: str | None     # a reference by digest pins the artifact
    title: str
    platform: Platform | None = None

    @property
    def reference(self) -> str:
        """What to ask the registry for: the digest when given, else the tag."""
        return self.digest or self.tag or "latest"

    @property
    def scope(self) -> str:
        return f"repository:{self.repository}:pull"

    def api(self, kind: str, reference: str) -> str:
        """``https://host/v2/<repository>/<kind>/<reference>`` (kind: manifests, blobs)."""
        return f"{self.protocol}://{self.api_host}/v2/{self.repository}/{kind}/{reference}"

    def pinned(self, manifest_digest: str) -> str:
        """This file's URL by the digest of the image manifest it came from."""
        scheme = "oci" if self.protocol == "https" else "oci+http"
        return (f"{scheme}://{self.registry}/{self.repository}@{manifest_digest}"
                f"#{quote(self.title, safe='')}")

    def shown(self) -> str:
        """The artifact, for messages: ``registry/repository:tag``."""
        sep = "@" if self.digest else ":"
        return f"{self.registry}/{self.repository}{sep}{self.reference}"


def is_oci(url: str) -> bool:
    return url.split(":", 1)[0].lower() in SCHEMES


def parse_source(url: str) -> OciSource:
    """The OCI source a URL names, or :class:`BadSource` naming what is wrong with it."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise BadSource(f"{url!r} is not a valid URL: {exc}") from None
    protocol = SCHEMES.get(parts.scheme.lower())
    if protocol is None:
        raise BadSource(f"{url!r} is not an oci:// or oci+http:// URL")
    if "@" in parts.netloc:
        raise BadSource("an oci URL may not carry credentials: put them in the file that "
                        "oci_auth_file names")
    host = (parts.hostname or "").lower()
    if not host:
        raise BadSource(f"{url!r} names no registry (oci://REGISTRY/REPOSITORY:TAG#FILE)")
    registry = host if port is None else f"{host}:{port}"
    if ":" in host:  # an IPv6 literal keeps its brackets in host:port
        registry = f"[{host}]" if port is None else f"[{host}]:{port}"
    segments = parts.path.lstrip("/").split("/")
    at = next((i for i, s in enumerate(segments) if ":" in s or "@" in s), None)
    if at is None:
        raise BadSource(f"{url!r} names no tag or digest: write REPOSITORY:TAG or "
                        f"REPOSITORY@sha256:DIGEST")
    name, tag, digest = _split_reference(segments[at])
    components = [*segments[:at], name]
    for c in components:
        if not _COMPONENT.fullmatch(c):
            raise BadSource(f"repository {'/'.join(components)!r}: {c!r} is not a valid "
                            f"repository name component (lower-case letters, digits, "
                            f". _ - between them)")
    rest = segments[at + 1:]
    if parts.fragment:
        if any(rest):
            raise BadSource(f"{url!r} names the file twice: after the reference and after '#'")
        title = unquote(parts.fragment)
    elif rest and rest[-1]:
        title = unquote(rest[-1])
    else:
        raise BadSource(f"{url!r} names no file of the artifact: add #TITLE (the layer's "
                        f"{TITLE} annotation)")
    _check_title(title)
    repository = "/".join(components)
    api_host = registry
    if host == "docker.io" and port is None:
        # Docker Hub's names are short for library/<name> on registry-1.docker.io.
        api_host = "registry-1.docker.io"
        if "/" not in repository:
            repository = f"library/{repository}"
    return OciSource(url=url, protocol=protocol, registry=registry, api_host=api_host,
                     repository=repository, tag=tag, digest=digest, title=title,
                     platform=_query_platform(parts.query))


def _split_reference(segment: str) -> tuple[str, str | None, str | None]:
    name, tag, digest = segment, None, None
    if "@" in name:
        name, digest = name.split("@", 1)
        if not _DIGEST.fullmatch(digest) or (digest.startswith("sha256:")
                                             and not _SHA256.fullmatch(digest)):
            raise BadSource(f"{digest!r} is not a digest (sha256:<64 hex digits>)")
        if not _SHA256.fullmatch(digest):
            raise BadSource(f"digest {digest!r}: only sha256 digests are supported, "
                            f"as the store names content by sha256")
    if ":" in name:
        name, tag = name.rsplit(":", 1)
        if not _TAG.fullmatch(tag):
            raise BadSource(f"{tag!r} is not a valid tag (letters, digits, _ . -, at most "
                            f"128, not starting with . or -)")
    return name, tag, digest


def _check_title(title: str) -> None:
    if not title or title in (".", ".."):
        raise BadSource(f"{title!r} is not a file name")
    if "/" in title or "\\" in title:
        raise BadSource(f"file {title!r}: a title with a directory is not a file name")
    if not title.isprintable():
        raise BadSource(f"file {title!r} contains control characters")


def _query_platform(query: str) -> Platform | None:
    platform: Platform | None = None
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key != "platform":
            raise BadSource(f"unknown parameter {key!r} in an oci URL (only platform=)")
        platform = parse_platform(value)
    return platform


def parse_platform(text: str) -> Platform:
    """``linux/amd64``, ``linux/arm64/v8`` or an architecture alone (Foreman's names too)."""
    parts = [p for p in text.strip().lower().split("/") if p]
    if len(parts) == 1:
        parts = ["linux", *parts]
    if len(parts) not in (2, 3):
        raise BadSource(f"platform {text!r} is not OS/ARCH[/VARIANT] (e.g. linux/amd64)")
    arch = _ARCH_ALIASES.get(parts[1], parts[1])
    return Platform(parts[0], arch, parts[2] if len(parts) == 3 else None)


# --- Manifests -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Descriptor:
    """A content descriptor of a manifest: a layer, or an entry of an index."""

    media_type: str
    digest: str
    size: int
    annotations: Mapping[str, str]
    platform: Mapping[str, Any] | None = None

    @property
    def sha256(self) -> str:
        """The hex digest: the name of this content in the store."""
        return self.digest.removeprefix("sha256:")


@dataclass(frozen=True)
class ImageManifest:
    digest: str
    layers: tuple[Descriptor, ...]
    artifact_type: str | None = None


@dataclass(frozen=True)
class ImageIndex:
    digest: str
    manifests: tuple[Descriptor, ...]


def digest_of(body: bytes) -> str:
    return "sha256:" + hashlib.sha256(body).hexdigest()


def parse_manifest(body: bytes, digest: str, content_type: str | None,
                   where: str) -> ImageManifest | ImageIndex:
    """A manifest or index whose bytes were checked against ``digest``; ManifestError if it is
    not one we can use."""
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise ManifestError(f"{where}: the manifest is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ManifestError(f"{where}: the manifest is not a JSON object")
    media_type = data.get("mediaType") or (content_type or "").split(";")[0].strip()
    if data.get("schemaVersion") != 2:
        raise ManifestError(f"{where}: manifest schemaVersion {data.get('schemaVersion')!r} "
                            f"is not supported (only 2)")
    if media_type in INDEX_TYPES or (not media_type and "manifests" in data):
        return ImageIndex(digest, tuple(_descriptor(d, where) for d in _list(data, "manifests",
                                                                             where)))
    if media_type in (OCI_MANIFEST, DOCKER_MANIFEST) or (not media_type and "layers" in data):
        artifact = data.get("artifactType")
        return ImageManifest(digest, tuple(_descriptor(d, where)
                                           for d in _list(data, "layers", where)),
                             artifact if isinstance(artifact, str) else None)
    raise ManifestError(f"{where}: unsupported manifest type {media_type!r}")


def _list(data: dict[str, Any], key: str, where: str) -> list[Any]:
    value = data.get(key, [])
    if not isinstance(value, list):
        raise ManifestError(f"{where}: {key!r} of the manifest is not a list")
    return value


def _descriptor(d: Any, where: str) -> Descriptor:
    if not isinstance(d, dict):
        raise ManifestError(f"{where}: a descriptor of the manifest is not an object")
    digest, size, media_type = d.get("digest"), d.get("size"), d.get("mediaType")
    if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
        raise ManifestError(f"{where}: descriptor digest {digest!r} is not a digest")
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise ManifestError(f"{where}: descriptor {digest} has no valid size")
    annotations = d.get("annotations") or {}
    platform = d.get("platform")
    return Descriptor(
        media_type=media_type if isinstance(media_type, str) else "",
        digest=digest, size=size,
        annotations={str(k): str(v) for k, v in annotations.items()}
        if isinstance(annotations, dict) else {},
        platform=platform if isinstance(platform, dict) else None,
    )


def select_platform(index: ImageIndex, platform: Platform | None, where: str) -> Descriptor:
    """The index entry for ``platform``; without one, the only entry there is."""
    entries = [d for d in index.manifests if d.platform is None
               or d.platform.get("architecture") != "unknown"]  # buildx attestations
    offered = ", ".join(sorted({_platform_text(d) for d in entries})) or "none"
    if platform is None:
        if len(entries) == 1:
            return entries[0]
        raise ManifestError(f"{where} is an image index of {len(entries)} manifests "
                            f"({offered}): add ?platform=OS/ARCH to the URL, or use a "
                            f"per-architecture tag")
    found = [d for d in entries if d.platform is not None and platform.matches(d.platform)]
    if not found:
        raise ManifestError(f"{where} has no manifest for platform {platform} "
                            f"(it offers {offered})")
    return found[0]


def _platform_text(d: Descriptor) -> str:
    p = d.platform or {}
    return "/".join(str(p[k]) for k in ("os", "architecture", "variant") if p.get(k)) or "?"


def find_layer(manifest: ImageManifest, title: str, where: str) -> Descriptor:
    """The one layer titled ``title``, fit to be served as a file (sha256, not packed)."""
    found = [d for d in manifest.layers if d.annotations.get(TITLE) == title]
    if not found:
        titles = sorted({d.annotations[TITLE] for d in manifest.layers if TITLE in d.annotations})
        listed = ", ".join(titles) if titles else f"no layer has a {TITLE} annotation"
        raise ManifestError(f"{where} has no file {title!r} (it has: {listed})")
    if len(found) > 1:
        raise ManifestError(f"{where} has {len(found)} layers titled {title!r}: which one is "
                            f"meant cannot be told")
    layer = found[0]
    if not _SHA256.fullmatch(layer.digest):
        raise ManifestError(f"{where}: layer {title!r} has digest {layer.digest}; only sha256 "
                            f"layers are supported")
    packed = layer.annotations.get(UNPACK) == "true" or layer.media_type.endswith(
        ("+gzip", "+zstd", ".tar.gzip"))
    if packed:
        raise ManifestError(f"{where}: layer {title!r} is compressed or packed "
                            f"({layer.media_type}); a boot file must be pushed as the file "
                            f"itself")
    return layer
