"""Pulling boot files from OCI registries: the distribution API over the fetcher's session.

The same TLS settings, CA bundle, proxy, timeouts, redirects and retries as http(s)
downloads (:class:`~tftproxy.fetch.http.Fetcher`). Three calls:

* :meth:`OciClient.resolve`: what a tag names now, by a HEAD of its manifest (the registry's
  ``Docker-Content-Digest``); a reference by digest needs no request at all;
* :meth:`OciClient.image`: the image manifest at a digest (through an index for the asked
  platform), its bytes checked against the digest; kept in memory, as content at a digest
  never changes;
* :meth:`OciClient.download`: one layer into a staging file, hashed while it streams, stopped
  as soon as it exceeds the size the manifest gives, and compared with its digest.

Registries that want authentication answer 401 with a challenge: ``Bearer`` (a token from the
realm it names, per repository scope, anonymous or with the credentials of
``oci_auth_file``) or ``Basic`` (those credentials on every request). Tokens are kept until
they expire, so an up-to-date check is one request. :class:`OciManifests` lives for one
transaction: every member of a boot set taken from one reference sees one resolution.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import aiohttp
from yarl import URL

from tftproxy.errors import ManifestError, UpstreamError
from tftproxy.fetch.http import Fetcher, stream_body
from tftproxy.fetch.ocispec import (
    DOCKER_MANIFEST,
    MANIFEST_TYPES,
    OCI_MANIFEST,
    Descriptor,
    ImageIndex,
    ImageManifest,
    OciSource,
    digest_of,
    parse_manifest,
    select_platform,
)
from tftproxy.fetch.results import Downloaded, ProgressFn, SinkFactory, Validators

T = TypeVar("T")

ACCEPT = ", ".join(MANIFEST_TYPES)
# The distribution server refuses manifests over 4 MiB; a token answer is a few KiB.
MANIFEST_LIMIT = 4 * 1024 * 1024
SMALL_LIMIT = 64 * 1024
MANIFESTS_KEPT = 64
# A token whose lifetime is not given lives 60 s (distribution's token spec); renew early.
TOKEN_DEFAULT_LIFE = 60.0
TOKEN_MARGIN = 10.0
_DIGEST_HEADER = re.compile(r"sha256:[a-f0-9]{64}")
_CHALLENGE_PARAM = re.compile(r'(\w+)\s*=\s*(?:"([^"]*)"|([^\s,]+))')


def _auth_file_entries(path: Path) -> dict[str, tuple[str, str]]:
    """``{"auths": {"host[:port]": {"auth": base64("user:password")}}}``: the containers
    auth.json that ``podman login --authfile`` writes, and Docker's config.json."""
    data = json.loads(path.read_text(encoding="utf-8"))
    auths = data.get("auths") if isinstance(data, dict) else None
    if not isinstance(auths, dict):
        raise ValueError('no "auths" object')
    out = {}
    for key, entry in auths.items():
        raw = entry.get("auth") if isinstance(entry, dict) else None
        if not isinstance(raw, str) or not raw:
            continue
        user, sep, password = base64.b64decode(raw).decode("utf-8").partition(":")
        if not sep:
            raise ValueError(f"the auth of {key!r} is not base64 of user:password")
        # Docker writes Docker Hub's key as a URL (https://index.docker.io/v1/).
        host = urlsplit(key).netloc if "://" in key else key.split("/", 1)[0]
        out[host.lower()] = (user, password)
    if "index.docker.io" in out:
        out.setdefault("docker.io", out["index.docker.io"])
    return out


def parse_challenge(header: str | None) -> tuple[str, dict[str, str]]:
    """``Bearer realm="...",service="...",scope="..."`` as (``bearer``, its parameters)."""
    if not header:
        return "", {}
    scheme, _, rest = header.strip().partition(" ")
    params = {m[1].lower(): m[2] if m[2] is not None else m[3]
              for m in _CHALLENGE_PARAM.finditer(rest)}
    return scheme.lower(), params


@dataclass
class _Token:
    header: str
    expires: float


class RegistryAuth:
    """Credentials from ``oci_auth_file`` and the tokens registries issued, per scope."""

    def __init__(self, auth_file: Path | None) -> None:
        self.auth_file = auth_file
        self._entries: dict[str, tuple[str, str]] | None = None
        self._lock = asyncio.Lock()
        self._tokens: dict[tuple[str, str], _Token] = {}
        self._basic: set[str] = set()

    async def credentials(self, src: OciSource) -> tuple[str, str] | None:
        if self.auth_file is None:
            return None
        async with self._lock:
            if self._entries is None:
                try:
                    self._entries = await asyncio.to_thread(_auth_file_entries, self.auth_file)
                except (OSError, ValueError) as exc:
                    raise UpstreamError(f"cannot read oci_auth_file {self.auth_file}: {exc}",
                                        local=True) from None
        return self._entries.get(src.registry) or self._entries.get(src.api_host)

    async def header(self, src: OciSource) -> str | None:
        """What to send with a request to ``src``'s repository, if anything is known to work."""
        token = self._tokens.get((src.api_host, src.scope))
        if token is not None and token.expires > time.monotonic():
            return token.header
        if src.api_host in self._basic:
            creds = await self.credentials(src)
            if creds is not None:
                return aiohttp.encode_basic_auth(*creds)
        return None

    async def answer(self, fetcher: Fetcher, src: OciSource, challenge: str | None) -> None:
        """Get what the 401's challenge asks for, or raise an UpstreamError that says why not."""
        scheme, params = parse_challenge(challenge)
        if scheme == "bearer" and params.get("realm"):
            await self._bearer(fetcher, src, params)
        elif scheme == "basic":
            if await self.credentials(src) is None:
                raise UpstreamError(f"{src.registry} asks for a user name and password "
                                    f"(Basic): {_how_to_log_in(self, src)}")
            if src.api_host in self._basic:
                raise UpstreamError(f"{src.registry} refused the user name and password of "
                                    f"oci_auth_file {self.auth_file}")
            self._basic.add(src.api_host)
        else:
            raise UpstreamError(f"{src.registry} answered 401 without a challenge tftproxy "
                                f"can answer ({challenge!r})")

    async def _bearer(self, fetcher: Fetcher, src: OciSource, params: dict[str, str]) -> None:
        realm = params["realm"]
        query = {"scope": src.scope}
        if params.get("service"):
            query["service"] = params["service"]
        creds = await self.credentials(src)
        headers = {"Accept-Encoding": "identity"}
        realm_parts = urlsplit(realm)
        # Credentials go to the token service only over TLS, or to the registry's own host.
        if creds is not None and (realm_parts.scheme == "https" or realm_parts.hostname
                                  == urlsplit(f"//{src.api_host}").hostname):
            headers["Authorization"] = aiohttp.encode_basic_auth(*creds)
        async with await fetcher.request("GET", str(URL(realm).update_query(query)),
                                         headers) as resp:
            if resp.status in (401, 403):
                who = ("the credentials of oci_auth_file" if "Authorization" in headers
                       else "anonymous access")
                raise UpstreamError(f"the token service of {src.registry} ({realm}) refused "
                                    f"{who} (HTTP {resp.status}); {_how_to_log_in(self, src)}")
            if resp.status != 200:
                raise UpstreamError(f"the token service of {src.registry} ({realm}) answered "
                                    f"HTTP {resp.status} {resp.reason or ''}".rstrip(),
                                    retryable=resp.status >= 500 or resp.status == 429)
            body = await _read_limited(resp, SMALL_LIMIT, "a token answer")
        try:
            data = json.loads(body)
            token = data.get("token") or data.get("access_token")
            life = float(data.get("expires_in") or TOKEN_DEFAULT_LIFE)
        except (ValueError, AttributeError, TypeError):
            token = None
        if not isinstance(token, str) or not token:
            raise UpstreamError(f"the token service of {src.registry} ({realm}) gave no token")
        expires = time.monotonic() + max(life - TOKEN_MARGIN, 1.0)
        self._tokens[(src.api_host, src.scope)] = _Token(f"Bearer {token}", expires)


def _how_to_log_in(auth: RegistryAuth, src: OciSource) -> str:
    if auth.auth_file is None:
        return (f"set oci_auth_file to a containers auth.json holding credentials for "
                f"{src.registry} (podman login --authfile FILE {src.registry})")
    return f"check the credentials for {src.registry} in oci_auth_file {auth.auth_file}"


async def _read_limited(resp: aiohttp.ClientResponse, limit: int, what: str) -> bytes:
    body = bytearray()
    async for chunk in resp.content.iter_chunked(64 * 1024):
        body += chunk
        if len(body) > limit:
            raise UpstreamError(f"{what} of more than {limit} bytes: not what a registry sends")
    return bytes(body)


async def _registry_error(resp: aiohttp.ClientResponse) -> str:
    """The registry's own words: ``{"errors": [{"code": ..., "message": ...}]}``."""
    if resp.method == "HEAD":
        return ""
    try:
        data = json.loads(await _read_limited(resp, SMALL_LIMIT, "an error answer"))
        errors = data.get("errors") or []
        return "; ".join(f"{e.get('code', '?')}: {e.get('message', '')}".rstrip(": ")
                         for e in errors if isinstance(e, dict))
    except (ValueError, AttributeError, TypeError, UpstreamError, aiohttp.ClientError):
        return ""


async def _check_status(resp: aiohttp.ClientResponse, src: OciSource, what: str,
                        auth: RegistryAuth) -> None:
    if resp.status == 200:
        return
    detail = await _registry_error(resp)
    text = f"HTTP {resp.status} {resp.reason or ''}".rstrip() + (f" ({detail})" if detail else "")
    if resp.status == 404:
        raise UpstreamError(f"{src.shown()}: {what} not found: {text}")
    if resp.status in (401, 403):
        raise UpstreamError(f"{src.shown()}: {what}: {text}: access denied; "
                            f"{_how_to_log_in(auth, src)}")
    raise UpstreamError(f"{src.shown()}: {what}: {text}",
                        retryable=resp.status >= 500 or resp.status == 429)


class OciClient:
    """The registry side of OCI sources for one process: tokens and manifests are shared."""

    def __init__(self, fetcher: Fetcher) -> None:
        self.fetcher = fetcher
        self.auth = RegistryAuth(fetcher.options.oci_auth_file)
        self._manifests: OrderedDict[tuple[str, str, str], ImageManifest | ImageIndex] = (
            OrderedDict())

    async def _call(self, src: OciSource, method: str, url: str, headers: dict[str, str],
                    handle: Callable[[aiohttp.ClientResponse], Awaitable[T]]) -> T:
        """One request, answering one authentication challenge if the registry makes one."""
        with self.fetcher.mapped_errors():
            for attempt in (1, 2):
                sent = dict(headers)
                auth = await self.auth.header(src)
                if auth is not None:
                    sent["Authorization"] = auth
                async with await self.fetcher.request(method, url, sent) as resp:
                    if resp.status != 401 or attempt == 2:
                        return await handle(resp)
                    challenge = resp.headers.get("WWW-Authenticate")
                await self.auth.answer(self.fetcher, src, challenge)
        raise AssertionError("unreachable: the second attempt returns or raises")

    async def resolve(self, src: OciSource) -> str:
        """The digest ``src``'s reference names now (no request for a reference by digest)."""
        if src.digest is not None:
            return src.digest
        return await self.fetcher.retrying(src.url, lambda: self._resolve_once(src))

    async def _resolve_once(self, src: OciSource) -> str:
        async def handle(resp: aiohttp.ClientResponse) -> str | None:
            await _check_status(resp, src, f"tag {src.tag}", self.auth)
            digest = resp.headers.get("Docker-Content-Digest", "")
            return digest if _DIGEST_HEADER.fullmatch(digest) else None

        url = src.api("manifests", src.reference)
        digest = await self._call(src, "HEAD", url, {"Accept": ACCEPT}, handle)
        if digest is None:
            # A registry that does not name the digest: the body's hash is the digest.
            body, ctype = await self._manifest_body_once(src, src.reference)
            digest = digest_of(body)
            self._keep(src, digest, parse_manifest(body, digest, ctype, src.shown()))
        return digest

    async def _manifest_body_once(self, src: OciSource,
                                  reference: str) -> tuple[bytes, str | None]:
        async def handle(resp: aiohttp.ClientResponse) -> tuple[bytes, str | None]:
            await _check_status(resp, src, f"manifest {reference}", self.auth)
            return (await _read_limited(resp, MANIFEST_LIMIT, "a manifest"),
                    resp.headers.get("Content-Type"))

        return await self._call(src, "GET", src.api("manifests", reference),
                                {"Accept": ACCEPT, "Accept-Encoding": "identity"}, handle)

    def _keep(self, src: OciSource, digest: str, manifest: ImageManifest | ImageIndex) -> None:
        self._manifests[(src.api_host, src.repository, digest)] = manifest
        while len(self._manifests) > MANIFESTS_KEPT:
            self._manifests.popitem(last=False)

    async def manifest(self, src: OciSource, digest: str) -> ImageManifest | ImageIndex:
        """The manifest or index at ``digest``, its bytes checked against it."""
        key = (src.api_host, src.repository, digest)
        hit = self._manifests.get(key)
        if hit is not None:
            self._manifests.move_to_end(key)
            return hit
        body, ctype = await self.fetcher.retrying(
            src.url, lambda: self._manifest_body_once(src, digest))
        actual = digest_of(body)
        if actual != digest:
            raise ManifestError(f"{src.shown()}: the manifest at {digest} has digest {actual}: "
                                f"the registry sent other bytes than it names")
        parsed = parse_manifest(body, digest, ctype, src.shown())
        self._keep(src, digest, parsed)
        return parsed

    async def image(self, src: OciSource, digest: str) -> ImageManifest:
        """The image manifest ``digest`` names: itself, or its index's entry for the platform."""
        top = await self.manifest(src, digest)
        if isinstance(top, ImageManifest):
            return top
        entry = select_platform(top, src.platform, src.shown())
        if entry.media_type and entry.media_type not in (OCI_MANIFEST, DOCKER_MANIFEST):
            raise ManifestError(f"{src.shown()}: the index entry {entry.digest} is a "
                                f"{entry.media_type}, not an image manifest")
        child = await self.manifest(src, entry.digest)
        if not isinstance(child, ImageManifest):
            raise ManifestError(f"{src.shown()}: the index entry {entry.digest} is an index "
                                f"itself; nested indexes are not followed")
        return child

    async def download(self, src: OciSource, layer: Descriptor, sink: SinkFactory,
                       progress: ProgressFn | None) -> Downloaded:
        """``layer`` into a fresh sink per attempt, checked against its size and digest."""
        url = src.api("blobs", layer.digest)

        async def handle(resp: aiohttp.ClientResponse) -> Downloaded:
            await _check_status(resp, src, f"layer {layer.digest}", self.auth)
            announced = resp.headers.get("Content-Length")
            if (announced is not None and announced.isdigit() and not resp.headers.get(
                    "Transfer-Encoding") and int(announced) != layer.size):
                raise UpstreamError(f"{src.shown()}: the registry sends {announced} bytes for "
                                    f"{src.title!r}; the manifest says {layer.size}")
            got = await stream_body(resp, await sink(), str(resp.url),
                                    Validators(None, None, layer.size), progress, layer.size,
                                    "the size the manifest gives")
            if got.sha256 != layer.sha256:
                raise UpstreamError(f"{src.shown()}: {src.title!r} has sha256 {got.sha256}, "
                                    f"the manifest says {layer.digest}", retryable=True)
            return got

        return await self.fetcher.retrying(src.url, lambda: self._call(
            src, "GET", url, {"Accept-Encoding": "identity"}, handle))


class OciManifests:
    """What one transaction asks registries: each reference resolved once, each image
    manifest read once, so all members taken from one artifact come from one manifest."""

    def __init__(self, client: OciClient) -> None:
        self.client = client
        self._tasks: dict[tuple[Any, ...], asyncio.Future[Any]] = {}

    async def _once(self, key: tuple[Any, ...], make: Callable[[], Awaitable[T]]) -> T:
        fut = self._tasks.get(key)
        if fut is None:
            fut = asyncio.ensure_future(make())
            self._tasks[key] = fut
        result: T = await asyncio.shield(fut)
        return result

    async def resolve(self, src: OciSource) -> str:
        return await self._once(("resolve", src.protocol, src.api_host, src.repository,
                                 src.reference), lambda: self.client.resolve(src))

    async def image(self, src: OciSource, digest: str) -> ImageManifest:
        return await self._once(("image", src.protocol, src.api_host, src.repository, digest,
                                 src.platform), lambda: self.client.image(src, digest))

    def close(self) -> None:
        """Forget what was asked; a question still running is cancelled."""
        for fut in self._tasks.values():
            if not fut.done():
                fut.cancel()
            elif not fut.cancelled():
                fut.exception()  # retrieved: a failure already reached its members
        self._tasks.clear()
