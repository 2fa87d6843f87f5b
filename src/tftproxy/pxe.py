"""PXE variants: smart-proxy's loader kinds and every fact about each, in one table.

Layout under the root with the MAC aa:bb:cc:dd:ee:ff (``GET`` reads a variant's first file)::

    variant             per-host files                             default files
    syslinux, pxelinux  pxelinux.cfg/01-aa-bb-cc-dd-ee-ff          pxelinux.cfg/default
    pxegrub             grub/menu.lst.01AABBCCDDEEFF               grub/menu.lst
                        grub/01-AA-BB-CC-DD-EE-FF                  grub/efidefault
    pxegrub2            grub2/grub.cfg-01-aa-bb-cc-dd-ee-ff        grub2/grub.cfg
                        grub2/grub.cfg-aa:bb:cc:dd:ee:ff
    ztp                 ztp.cfg/AABBCCDDEEFF                       none (400)
                        ztp.cfg/AABBCCDDEEFF.cfg
    poap                poap.cfg/AABBCCDDEEFF                      none (400)
    ipxe                pxelinux.cfg/01-aa-bb-cc-dd-ee-ff.ipxe     pxelinux.cfg/default.ipxe

With Foreman's newer ``targetos``, ``release``, ``arch``, ``bootfile_suffix``, the per-host tree
``host-config/aa-bb-cc-dd-ee-ff/<subdir>/`` is kept too (see :mod:`tftproxy.store.configs`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

from tftproxy.errors import Conflict, InvalidMac, PxeInputError, UnknownVariant, printable

HOST_CONFIG = "host-config"
UNIVERSE = "bootloader-universe/pxegrub2"
HOST_PARAMS = ("targetos", "release", "arch", "bootfile_suffix")
UNIVERSE_PARAMS = ("universe_archive", "universe_kernel", "universe_initrd",
                   "universe_source_digest")
# Besides every *.efi, the kernel and initrd names a universe may hold (Debian/Ubuntu, Red Hat).
UNIVERSE_BOOT_FILES = ("linux", "initrd.gz", "vmlinuz", "initrd.img")

# Unanchored, for re.fullmatch here and ^(?:...)$ in the OpenAPI document.
_HEX = "[0-9A-Fa-f]{1,2}"
MAC_PATTERN = f"(?:{_HEX}:){{5}}{_HEX}|(?:{_HEX}:){{19}}{_HEX}"
COMPONENT_PATTERN = "[A-Za-z0-9_+~-][A-Za-z0-9._+~-]{0,63}"
_MAC_RE = re.compile(MAC_PATTERN)
_UNIVERSE_COMPONENT_RE = re.compile("[A-Za-z0-9_.-]+")
_DIGEST_RE = re.compile("[0-9a-f]{64}")
_COMPONENT_RE = re.compile(COMPONENT_PATTERN)


class Variant(StrEnum):
    SYSLINUX = "syslinux"
    PXELINUX = "pxelinux"
    PXEGRUB = "pxegrub"
    PXEGRUB2 = "pxegrub2"
    ZTP = "ztp"
    POAP = "poap"
    IPXE = "ipxe"


@dataclass(frozen=True)
class Mac:
    """A validated MAC address (6 or 20 groups), lower-case, two digits a group."""

    groups: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> Mac:
        if not _MAC_RE.fullmatch(text):
            raise InvalidMac(f"Invalid MAC address: {printable(text)}")
        return cls(tuple(g.lower().zfill(2) for g in text.split(":")))

    @property
    def colon(self) -> str:
        return ":".join(self.groups)

    @property
    def dashed(self) -> str:
        return "-".join(self.groups)

    @property
    def bare(self) -> str:
        return "".join(self.groups)


HostTree = Literal["link", "grub2"]


@dataclass(frozen=True)
class VariantSpec:
    """What one variant writes.

    ``host_subdir`` is its part of ``host-config/<mac>/``: with ``link`` it holds a symlink
    ``01-<mac>`` to the variant's first config file; with ``grub2`` copies of the config and
    the host's boot loaders.
    """

    config_files: Callable[[Mac], list[str]]
    default_files: tuple[str, ...]
    host_subdir: str | None = None
    host_tree: HostTree | None = None


def _syslinux(mac: Mac) -> list[str]:
    return [f"pxelinux.cfg/01-{mac.dashed}"]


VARIANTS: Mapping[Variant, VariantSpec] = {
    Variant.SYSLINUX: VariantSpec(_syslinux, ("pxelinux.cfg/default",), "pxe", "link"),
    Variant.PXELINUX: VariantSpec(_syslinux, ("pxelinux.cfg/default",), "pxe", "link"),
    Variant.PXEGRUB: VariantSpec(
        lambda m: [f"grub/menu.lst.01{m.bare.upper()}", f"grub/01-{m.dashed.upper()}"],
        ("grub/menu.lst", "grub/efidefault")),
    Variant.PXEGRUB2: VariantSpec(
        lambda m: [f"grub2/grub.cfg-01-{m.dashed}", f"grub2/grub.cfg-{m.colon}"],
        ("grub2/grub.cfg",), "grub2", "grub2"),
    # smart-proxy writes a ztp or poap "default" over its directory and fails (or, worse,
    # succeeds while the directory is missing and breaks every host config): none here.
    Variant.ZTP: VariantSpec(
        lambda m: [f"ztp.cfg/{m.bare.upper()}", f"ztp.cfg/{m.bare.upper()}.cfg"], ()),
    Variant.POAP: VariantSpec(lambda m: [f"poap.cfg/{m.bare.upper()}"], ()),
    Variant.IPXE: VariantSpec(lambda m: [f"pxelinux.cfg/01-{m.dashed}.ipxe"],
                              ("pxelinux.cfg/default.ipxe",), "ipxe", "link"),
}

WITH_DEFAULT = tuple(v for v in Variant if VARIANTS[v].default_files)


def parse_variant(text: str) -> Variant:
    """smart-proxy matches variants case-insensitively (Foreman sends ``PXEGrub2``...)."""
    name = text.lower() if text.isascii() else ""
    try:
        return Variant(name)
    except ValueError:
        raise UnknownVariant(f"Unrecognized pxeboot config type: {printable(text)}") from None


def config_files(variant: Variant, mac: Mac) -> list[str]:
    """The per-host files of ``variant``, relative to the root; ``GET`` reads the first."""
    return VARIANTS[variant].config_files(mac)


def default_files(variant: Variant) -> list[str]:
    """The default-menu files of ``variant``, relative to the root."""
    files = VARIANTS[variant].default_files
    if not files:
        raise PxeInputError(f"the {variant} variant has no default file")
    return list(files)


@dataclass(frozen=True)
class HostParams:
    """Foreman's newer per-host parameters, validated as single path components."""

    targetos: str
    release: str
    arch: str
    bootfile_suffix: str

    @classmethod
    def from_params(cls, params: Mapping[str, str]) -> HostParams | None:
        """None when the request carries none of them (an older Foreman)."""
        if not any(k in params for k in HOST_PARAMS):
            return None
        values = {k: params.get(k, "") for k in HOST_PARAMS}
        for key, val in values.items():
            if val and (not _COMPONENT_RE.fullmatch(val) or val in (".", "..")):
                raise PxeInputError(f"parameter {key} {printable(val)!r} must be 1-64 letters, "
                                    f"digits or ._+~- (and not start with a dot)")
        # Required whatever the variant (only pxegrub2 uses them), so that one rule, which
        # the OpenAPI document can state, decides what a valid request is.
        missing = [k for k in ("targetos", "arch") if not values[k]]
        if missing:
            raise PxeInputError(f"parameter(s) {', '.join(missing)} missing: the host-config "
                                f"directory needs targetos and arch")
        return cls(**values)


def universe_dir(targetos: str, release: str, arch: str) -> str:
    """Where the bootloader universe of an OS release and architecture lives."""
    return f"{UNIVERSE}/{targetos}/{release}/{arch}"


@dataclass(frozen=True)
class UniverseParams:
    """The universe a host config relies on (smart-proxy PR #958), checked as text.

    Every failure is a Conflict (409): Foreman shows its message as a hint to download the
    operating system's boot files first.
    """

    directory: str
    targetos: str
    release: str
    archive: str
    kernel: str
    initrd: str
    digest: str

    @property
    def missing(self) -> str:
        return (f"Bootloader universe boot files are missing or do not match the selected "
                f"source: {self.directory}. Download boot files for Operating System "
                f"'{self.targetos} {self.release}'")

    def conflict(self, detail: str) -> Conflict:
        return Conflict(f"{self.missing} ({detail})")

    @classmethod
    def from_params(cls, params: Mapping[str, str]) -> UniverseParams | None:
        """None when the request names no universe file (no universe is relied on)."""
        if not any(k in params for k in UNIVERSE_PARAMS):
            return None
        host = {k: params.get(k, "") for k in ("targetos", "release", "arch")}
        for key, val in host.items():
            if not _UNIVERSE_COMPONENT_RE.fullmatch(val) or val in (".", ".."):
                raise Conflict(f"Bootloader universe parameter {key} {printable(val)!r} must "
                               f"be letters, digits or _.- (and not . or ..)")
        found = cls(universe_dir(host["targetos"], host["release"], host["arch"]),
                    host["targetos"], host["release"], params.get("universe_archive", ""),
                    params.get("universe_kernel", ""), params.get("universe_initrd", ""),
                    params.get("universe_source_digest", ""))
        if not _DIGEST_RE.fullmatch(found.digest):
            raise found.conflict("universe_source_digest must be 64 lower-case hex digits")
        for key in ("archive", "kernel", "initrd"):
            path = getattr(found, key)
            if path.rpartition("/")[0] != found.directory or not path.rpartition("/")[2]:
                raise found.conflict(f"universe_{key} {printable(path)!r} is not a file of "
                                     f"{found.directory}")
        return found
