"""Verification of boot files against the checksums the distribution publishes next to them.

Two manifest formats exist on real mirrors:

* Red Hat family trees (RHEL, CentOS, Rocky, Alma, Fedora) carry a productmd ``.treeinfo``
  (some also a ``treeinfo`` without the dot) at the tree root; its ``[checksums]`` section maps
  paths relative to that root to ``sha256:<hex>``.
* Debian and Ubuntu installer trees carry ``SHA256SUMS`` in the ``images`` directory (Ubuntu
  since 20.04: ``legacy-images``), with lines ``<hex>  ./netboot/debian-installer/amd64/linux``.

Parsing is pure (:func:`parse_treeinfo`, :func:`parse_sha256sums`, :meth:`Manifest.expected`,
:func:`check`); finding a manifest goes through a :class:`TextSource`, so the fetch job can
use :class:`~tftproxy.fetch.http.Fetcher` and tests can use anything. A :class:`ManifestCache`
lives for one fetch job so that every member of a set is checked against one and the same
manifest.

Pass the file's URL *after redirects* (``Downloaded.final_url``): the manifest is then looked for
on the mirror that actually served the bytes, not on whichever mirror a redirector picks next.
"""

from __future__ import annotations

import asyncio
import configparser
import logging
import re
from dataclasses import dataclass, field
from typing import Literal, Protocol
from urllib.parse import unquote, urlsplit

from tftproxy._paths import dot_segments
from tftproxy.errors import ManifestError, UpstreamError, VerificationError

log = logging.getLogger(__name__)

Mode = Literal["auto", "require", "off"]
ManifestKind = Literal["treeinfo", "SHA256SUMS", "md5sum.txt"]
VerificationStatus = Literal["verified", "unverified", "off"]

# Real manifests are a few KiB (a Fedora .treeinfo ~2 KiB, Debian's SHA256SUMS ~20 KiB); the cap
# only stops a misconfigured server from streaming something huge into memory.
MANIFEST_LIMIT = 1024 * 1024
MAX_LEVELS = 8

# Ubuntu moved its d-i netboot images to legacy-images/ (20.04+); Debian keeps images/.
IMAGES_DIRS = ("images", "legacy-images")

_DEFAULT_PORTS = {"http": 80, "https": 443}
_SHA256_HEX = re.compile(r"[0-9a-fA-F]{64}")
_GNU_LINE = re.compile(r"(?P<esc>\\)?(?P<hex>[0-9a-fA-F]{32,128})[ \t]+\*?(?P<path>\S.*)")
_BSD_LINE = re.compile(r"(?P<algo>[A-Za-z0-9-]+) ?\((?P<path>.+)\) ?= ?(?P<hex>[0-9a-fA-F]+)")


# --- URLs ------------------------------------------------------------------------------------

_Origin = tuple[str, str, int | None]


def _origin(scheme: str, host: str | None, port: int | None) -> _Origin:
    scheme = scheme.lower()
    return scheme, (host or "").lower(), port if port is not None else _DEFAULT_PORTS.get(scheme)


def _segments(path: str) -> tuple[list[str], bool]:
    """Raw path segments with dot segments resolved (RFC 3986), and whether it names a directory.

    Empty segments are dropped: mirrors serve ``a//b`` as ``a/b``, and a manifest lookup must
    not depend on how a URL happened to be spelled.
    """
    segments = dot_segments(path, above_root="clamp")
    assert segments is not None  # clamping never refuses
    return segments, path.endswith(("/", "/.", "/.."))


@dataclass(frozen=True)
class _Where:
    """A URL taken apart for comparison: origin and unquoted, normalised path segments."""

    origin: _Origin
    segments: tuple[str, ...]
    is_dir: bool


def _where(url: str) -> _Where | None:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme.lower() not in _DEFAULT_PORTS or not parts.hostname:
        return None
    raw, is_dir = _segments(parts.path)
    # The manifest speaks of filesystem paths, the URL of percent-encoded ones
    # (`20230607%2Bdeb12u5` is the directory `20230607+deb12u5`).
    return _Where(_origin(parts.scheme, parts.hostname, port), tuple(unquote(s) for s in raw),
                  is_dir)


def candidate_urls(file_url: str, max_levels: int = MAX_LEVELS, *,
                   beside: bool = False) -> list[tuple[ManifestKind, str]]:
    """(kind, URL) of every place a manifest for ``file_url`` may be, nearest first.

    From the file's directory up to the host root, at most ``max_levels`` directories: at each,
    ``.treeinfo`` then ``treeinfo``, and ``SHA256SUMS`` when the directory is an ``images`` (or
    ``legacy-images``) one; with ``beside`` (archives: Ubuntu's ISOs, Debian's netboot.tar.gz)
    also ``SHA256SUMS`` in the file's own directory, first. Candidates stay on the file's
    scheme://host:port; its query and fragment are dropped. Not an http(s) URL: nothing to
    look for.
    """
    try:
        parts = urlsplit(file_url)
    except ValueError:
        return []
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.netloc:
        return []
    segs, is_dir = _segments(parts.path)
    dirs = segs if is_dir else segs[:-1]
    out: list[tuple[ManifestKind, str]] = []
    for level in range(min(max_levels, len(dirs) + 1)):
        here = dirs[: len(dirs) - level]
        prefix = f"{scheme}://{parts.netloc}/" + "".join(f"{s}/" for s in here)
        if beside and level == 0 and not (here and unquote(here[-1]) in IMAGES_DIRS):
            out.append(("SHA256SUMS", prefix + "SHA256SUMS"))
        out.append(("treeinfo", prefix + ".treeinfo"))
        out.append(("treeinfo", prefix + "treeinfo"))
        if here and unquote(here[-1]) in IMAGES_DIRS:
            out.append(("SHA256SUMS", prefix + "SHA256SUMS"))
    return out


def _base_of(manifest_url: str) -> str:
    parts = urlsplit(manifest_url)
    segs, _ = _segments(parts.path)
    return f"{parts.scheme.lower()}://{parts.netloc}/" + "".join(f"{s}/" for s in segs[:-1])


def _rel_path(path: str) -> str | None:
    """A manifest's path relative to its base, normalised; None if it climbs out of it."""
    segments = dot_segments(path.strip(), above_root="refuse")
    return "/".join(segments) if segments else None


# --- Manifests -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Manifest:
    """Checksums published for a tree: ``entries`` maps paths relative to ``base_url``
    (normalised, no ``./``) to lowercase sha256 hex."""

    kind: ManifestKind
    url: str
    base_url: str
    entries: dict[str, str] = field(hash=False)

    @property
    def algorithm(self) -> str:
        """What ``entries`` hold: ``md5`` for an ``md5sum.txt``, else ``sha256``."""
        return "md5" if self.kind == "md5sum.txt" else "sha256"

    @property
    def label(self) -> str:
        """The manifest's file name as found (``.treeinfo``, ``treeinfo``, ``SHA256SUMS``)."""
        return urlsplit(self.url).path.rstrip("/").rsplit("/", 1)[-1] or self.kind

    def relative(self, file_url: str) -> str | None:
        """``file_url``'s path inside this manifest's tree, or None when it lies outside."""
        base, target = _where(self.base_url), _where(file_url)
        if base is None or target is None or base.origin != target.origin or target.is_dir:
            return None
        n = len(base.segments)
        if len(target.segments) <= n or target.segments[:n] != base.segments:
            return None
        return "/".join(target.segments[n:])

    def covers(self, file_url: str) -> bool:
        """Whether ``file_url`` lies inside this manifest's tree (named in it or not)."""
        return self.relative(file_url) is not None

    def expected(self, file_url: str) -> str | None:
        """The sha256 this manifest names for ``file_url``; None if not listed or outside."""
        rel = self.relative(file_url)
        return None if rel is None else self.entries.get(rel)


def _add(entries: dict[str, str], path: str, digest: str, url: str) -> None:
    rel = _rel_path(path)
    if rel is None:
        return  # outside the tree: no file we fetch from this tree can be it
    digest = digest.lower()
    if entries.setdefault(rel, digest) != digest:
        raise ManifestError(f"{url}: names two different sha256 for {rel}")


class _CaseKeepingParser(configparser.ConfigParser):
    # Keys of [checksums] are paths: `EFI/BOOT/BOOTX64.EFI` must not become lower case.
    def optionxform(self, optionstr: str) -> str:
        return optionstr


def parse_treeinfo(text: str, url: str) -> Manifest:
    """A productmd (or pre-productmd) ``.treeinfo``; only sha256 checksums count.

    A tree without a ``[checksums]`` section is still a tree root: the manifest names no file.
    """
    # No interpolation: values are data, and a `%` in one must not be an error; no DEFAULT
    # section, so nothing leaks into [checksums] as a fake path.
    parser = _CaseKeepingParser(interpolation=None, default_section="\0")
    try:
        parser.read_string(text, source=url)
    except configparser.Error as exc:
        # configparser's messages span lines; status and Foreman show one.
        detail = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise ManifestError(f"{url}: not a treeinfo file: {detail}") from None
    if not (parser.has_section("header") or parser.has_section("general")):
        raise ManifestError(f"{url}: not a treeinfo file: it has neither a [header] nor a "
                            "[general] section")
    entries: dict[str, str] = {}
    if parser.has_section("checksums"):
        for path, value in parser.items("checksums", raw=True):
            algo, sep, digest = value.strip().partition(":")
            if not sep or not algo or not digest:
                raise ManifestError(f"{url}: [checksums] {path} = {value!r} is not "
                                    "<algorithm>:<hex>")
            if algo.strip().lower() != "sha256":
                continue  # md5/sha1 would prove little; treat the file as not listed
            digest = digest.strip()
            if not _SHA256_HEX.fullmatch(digest):
                raise ManifestError(f"{url}: [checksums] {path}: {digest!r} is not a sha256 "
                                    "(64 hex digits)")
            _add(entries, path, digest, url)
    return Manifest("treeinfo", url, _base_of(url), entries)


def _unescape(path: str) -> str:
    # coreutils escapes `\` and newline in names and marks such lines with a leading `\`.
    return re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), path)


def parse_sha256sums(text: str, url: str) -> Manifest:
    """A ``sha256sum`` output file (GNU lines, or BSD ``SHA256 (path) = hex`` lines)."""
    return _parse_sums(text, url, "SHA256SUMS")


def parse_md5sums(text: str, url: str) -> Manifest:
    """An ``md5sum`` output file, as Debian and Ubuntu media carry at their root
    (``md5sum.txt``); only used for members of an image, which the image itself vouches for."""
    return _parse_sums(text, url, "md5sum.txt")


def _parse_sums(text: str, url: str, kind: ManifestKind) -> Manifest:
    md5 = kind == "md5sum.txt"
    want_bits, algos = (128, ("MD5",)) if md5 else (256, ("SHA256", "SHA2-256"))
    name, algo = ("an md5sum.txt", "an md5") if md5 else ("a SHA256SUMS", "a sha256")
    entries: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        gnu = _GNU_LINE.fullmatch(line)
        if gnu is not None:
            digest = gnu["hex"]
            if len(digest) * 4 != want_bits:
                raise ManifestError(f"{url}: not {name} file: line {number} has a "
                                    f"{len(digest) * 4}-bit digest, not {algo}")
            path = _unescape(gnu["path"]) if gnu["esc"] else gnu["path"]
            _add(entries, path, digest, url)
            continue
        bsd = _BSD_LINE.fullmatch(line)
        if bsd is not None:
            if bsd["algo"].upper() in algos and len(bsd["hex"]) * 4 == want_bits:
                _add(entries, bsd["path"], bsd["hex"], url)
            continue
        raise ManifestError(f"{url}: not {name} file: line {number} is {line[:60]!r}")
    if not entries:
        raise ManifestError(f"{url}: not {name} file: it has no {algo.split()[1]} lines")
    return Manifest(kind, url, _base_of(url), entries)


def parse_manifest(kind: str, text: str, url: str) -> Manifest:
    if kind == "treeinfo":
        return parse_treeinfo(text, url)
    if kind == "SHA256SUMS":
        return parse_sha256sums(text, url)
    if kind == "md5sum.txt":
        return parse_md5sums(text, url)
    raise ValueError(f"unknown manifest kind {kind!r}")


# --- Finding ---------------------------------------------------------------------------------


class TextSource(Protocol):
    async def get_text(self, url: str, limit: int) -> str | None:
        """The body of ``url`` (at most ``limit`` bytes), None when it does not exist.

        Any other failure raises :class:`~tftproxy.errors.UpstreamError` (or ManifestError)
        naming the URL and the reason; :class:`~tftproxy.fetch.http.Fetcher` is one.
        """
        ...


async def find_manifest(
    source: TextSource,
    file_url: str,
    *,
    limit: int = MANIFEST_LIMIT,
    max_levels: int = MAX_LEVELS,
    beside: bool = False,
) -> Manifest | None:
    """The nearest manifest naming ``file_url``; else the nearest found at all; else None.

    What a server sends where a manifest would be but that does not parse (a soft-404 HTML
    page, a directory listing) is skipped, so such a server does not block every fetch.
    Failures to fetch (5xx, connection, TLS) propagate (UpstreamError): whether a
    manifest exists is then unknown, and guessing "no" would skip verification exactly when a
    mirror misbehaves.
    """
    first: Manifest | None = None
    for kind, url in candidate_urls(file_url, max_levels, beside=beside):
        text = await source.get_text(url, limit)
        if text is None:
            continue
        try:
            manifest = parse_manifest(kind, text, url)
        except ManifestError as exc:
            log.warning("ignoring %s", exc)
            continue
        if manifest.expected(file_url) is not None:
            return manifest
        if first is None:
            first = manifest
    return first


class _MemoSource:
    """Remembers every answer, so sibling files do not repeat the same 404 probes."""

    def __init__(self, source: TextSource) -> None:
        self._source = source
        self._seen: dict[tuple[str, int], str | None] = {}

    async def get_text(self, url: str, limit: int) -> str | None:
        key = (url, limit)
        if key not in self._seen:
            self._seen[key] = await self._source.get_text(url, limit)
        return self._seen[key]


class ManifestCache:
    """Manifests found during one fetch job, so all members of a set use the same one.

    A manifest already found whose tree holds the file is reused even when it does not name
    the file: the set then reads as "not listed in that manifest" rather than being checked
    against some other manifest further up. Lookups are serialised: concurrent members wait
    for the first lookup instead of fetching the manifest twice.
    """

    def __init__(self, source: TextSource, *, limit: int = MANIFEST_LIMIT,
                 max_levels: int = MAX_LEVELS, beside: bool = False) -> None:
        self._source = _MemoSource(source)
        self._limit = limit
        self._max_levels = max_levels
        self._beside = beside
        self._found: list[Manifest] = []
        self._lock = asyncio.Lock()

    @property
    def manifests(self) -> tuple[Manifest, ...]:
        return tuple(self._found)

    async def for_url(self, file_url: str) -> Manifest | None:
        async with self._lock:
            for manifest in self._found:
                if manifest.expected(file_url) is not None:
                    return manifest
            for manifest in self._found:
                if manifest.covers(file_url):
                    return manifest
            found = await find_manifest(self._source, file_url, limit=self._limit,
                                        max_levels=self._max_levels, beside=self._beside)
            if found is not None and found not in self._found:
                self._found.append(found)
            return found


# --- Checking --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Verification:
    """How one file was verified, for the job's result and ``tftproxy status``."""

    status: VerificationStatus
    how: str
    manifest_url: str | None = None


def _looked_for(file_url: str) -> str:
    cands = candidate_urls(file_url)
    if not cands:
        return "no manifest can be looked for at a URL that is not http(s)"
    dirs = [u.rsplit("/", 1)[0] + "/" for _, u in cands if u.endswith("/.treeinfo")]
    sums = [u for k, u in cands if k == "SHA256SUMS"]
    text = f"looked for .treeinfo and treeinfo from {dirs[0]} up to {dirs[-1]}"
    if sums:
        text += f", and {' and '.join(sums)}"
    return text


def check(
    manifest: Manifest | None,
    file_url: str,
    actual_sha256: str,
    mode: Mode,
    name: str,
) -> Verification:
    """Judge a downloaded file (``name`` as published, from ``file_url``) by ``manifest``.

    Raises :class:`VerificationError` on a mismatch (any mode but off), and under ``require``
    when there is no manifest or it has no sha256 for the file.
    """
    if mode == "off":
        return Verification("off", "verification off")
    if manifest is None:
        if mode == "require":
            raise VerificationError(
                f"{name}: no checksum manifest found for {file_url} ({_looked_for(file_url)}); "
                "verify is require")
        return Verification("unverified", f"no checksum manifest found ({_looked_for(file_url)})")
    where = f"{manifest.label} at {manifest.url}"
    expected = manifest.expected(file_url)
    if expected is None:
        rel = manifest.relative(file_url)
        what = (f"{rel} is not listed with a sha256 in {where}" if rel is not None
                else f"{file_url} is outside the tree of {where}")
        if mode == "require":
            raise VerificationError(f"{name}: cannot verify {file_url}: {what}; verify is require")
        return Verification("unverified", what, manifest.url)
    actual = actual_sha256.lower()
    if actual != expected:
        raise VerificationError(
            f"{name}: checksum mismatch for {file_url}: {where} says sha256 {expected}, "
            f"downloaded file has {actual}; the mirror may be syncing, try again later")
    return Verification("verified", f"sha256 matches {where}", manifest.url)


async def verify(
    cache: ManifestCache, file_url: str, actual_sha256: str, mode: Mode, name: str
) -> Verification:
    """Look up (unless ``off``) and :func:`check`; a failed lookup is a "try again later"."""
    if mode == "off":
        return check(None, file_url, actual_sha256, mode, name)
    try:
        manifest = await cache.for_url(file_url)
    except (ManifestError, UpstreamError) as exc:
        raise VerificationError(f"{name}: cannot look for checksums of {file_url}: {exc}; "
                                "try again later") from None
    return check(manifest, file_url, actual_sha256, mode, name)
