"""PXE configuration files: smart-proxy's variants, their file names, and how they are written.

This is the only code that writes PXE configs, the default menus and the ``host-config/`` tree.
It writes the files smart-proxy writes, with three differences:

* every write is atomic: content goes to a temporary file in the same directory, is fsynced,
  then renamed over the name, so a PXE client never reads a half-written config;
* nothing is written, read or removed outside the TFTP root, even through a symlinked directory;
* MAC groups are zero-padded (``a:b:...`` is written as ``0a-0b-...``), which is the name a PXE
  client asks for; Foreman always sends two digits, where the result is identical.

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

When a request carries Foreman's newer ``targetos``, ``release``, ``arch``, ``bootfile_suffix``,
the per-host tree ``R/host-config/aa-bb-cc-dd-ee-ff/`` is maintained as well:

* pxegrub2: ``grub2/`` gets the config as ``grub.cfg``, ``grub.cfg-01-<mac>``, ``grub.cfg-<mac>``
  and relative symlinks to every ``*.efi`` of ``R/bootloader-universe/pxegrub2/<os>/<release>/
  <arch>/`` (``<release>`` falling back to ``default``), or, without such a directory,
  ``boot.efi`` and ``grub<suffix>.efi`` -> ``R/grub2/grub<suffix>.efi``, ``boot-sb.efi`` and
  ``shim<suffix>.efi`` -> ``R/grub2/shim<suffix>.efi``;
* syslinux/pxelinux: ``pxe/01-<mac>`` -> ``../../../pxelinux.cfg/01-<mac>``;
* ipxe: ``ipxe/01-<mac>`` -> ``../../../pxelinux.cfg/01-<mac>.ipxe``.

``DELETE`` removes the variant's part of that tree, and the host's directory once it is empty,
so deleting one variant never breaks another variant's boot.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import shutil
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

HOST_CONFIG = "host-config"
UNIVERSE = "bootloader-universe/pxegrub2"
HOST_PARAMS = ("targetos", "release", "arch", "bootfile_suffix")

_MAC_RE = re.compile(r"\A(?:[0-9a-fA-F]{1,2}:){5}[0-9a-fA-F]{1,2}\Z"
                     r"|\A(?:[0-9a-fA-F]{1,2}:){19}[0-9a-fA-F]{1,2}\Z")
_COMPONENT_RE = re.compile(r"\A[A-Za-z0-9_+~-][A-Za-z0-9._+~-]{0,63}\Z")
_MODE = 0o644  # TFTP servers read as an unprivileged user


class Variant(StrEnum):
    SYSLINUX = "syslinux"
    PXELINUX = "pxelinux"
    PXEGRUB = "pxegrub"
    PXEGRUB2 = "pxegrub2"
    ZTP = "ztp"
    POAP = "poap"
    IPXE = "ipxe"


class PxeError(Exception):
    """A request that cannot be carried out; ``status`` and the message are the answer."""

    status = 400


class InvalidMac(PxeError):
    status = 403


class UnknownVariant(PxeError):
    status = 403


class ConfigNotFound(PxeError):
    status = 404


def printable(text: str, limit: int = 80) -> str:
    """``text`` made safe to echo in an error: control characters escaped, length capped."""
    shown = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text[:limit])
    return shown + ("..." if len(text) > limit else "")


@dataclass(frozen=True)
class Mac:
    """A validated MAC address (6 or 20 groups), lower-case, two digits a group."""

    groups: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> Mac:
        if not _MAC_RE.match(text):
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


def parse_variant(text: str) -> Variant:
    """smart-proxy matches variants case-insensitively (Foreman sends ``PXEGrub2``...)."""
    name = text.lower() if text.isascii() else ""
    try:
        return Variant(name)
    except ValueError:
        raise UnknownVariant(f"Unrecognized pxeboot config type: {printable(text)}") from None


def config_files(variant: Variant, mac: Mac) -> list[str]:
    """The per-host files of ``variant``, relative to the root; ``GET`` reads the first."""
    match variant:
        case Variant.SYSLINUX | Variant.PXELINUX:
            return [f"pxelinux.cfg/01-{mac.dashed}"]
        case Variant.PXEGRUB:
            return [f"grub/menu.lst.01{mac.bare.upper()}", f"grub/01-{mac.dashed.upper()}"]
        case Variant.PXEGRUB2:
            return [f"grub2/grub.cfg-01-{mac.dashed}", f"grub2/grub.cfg-{mac.colon}"]
        case Variant.ZTP:
            return [f"ztp.cfg/{mac.bare.upper()}", f"ztp.cfg/{mac.bare.upper()}.cfg"]
        case Variant.POAP:
            return [f"poap.cfg/{mac.bare.upper()}"]
        case Variant.IPXE:
            return [f"pxelinux.cfg/01-{mac.dashed}.ipxe"]


def default_files(variant: Variant) -> list[str]:
    """The default-menu files of ``variant``, relative to the root."""
    match variant:
        case Variant.SYSLINUX | Variant.PXELINUX:
            return ["pxelinux.cfg/default"]
        case Variant.PXEGRUB:
            return ["grub/menu.lst", "grub/efidefault"]
        case Variant.PXEGRUB2:
            return ["grub2/grub.cfg"]
        case Variant.IPXE:
            return ["pxelinux.cfg/default.ipxe"]
        case Variant.ZTP | Variant.POAP:
            # smart-proxy writes over its ztp.cfg/poap.cfg directory here and fails (or,
            # worse, succeeds while the directory is missing and breaks every host config).
            raise PxeError(f"the {variant} variant has no default file")


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
            if val and (not _COMPONENT_RE.match(val) or val in (".", "..")):
                raise PxeError(f"parameter {key} {printable(val)!r} must be 1-64 letters, digits "
                               f"or ._+~- (and not start with a dot)")
        # Required whatever the variant (only pxegrub2 uses them), so that one rule, which
        # the OpenAPI document can state, decides what a valid request is.
        missing = [k for k in ("targetos", "arch") if not values[k]]
        if missing:
            raise PxeError(f"parameter(s) {', '.join(missing)} missing: the host-config "
                           f"directory needs targetos and arch")
        return cls(**values)


class PxeConfigs:
    """Reads and writes the PXE configs under one TFTP root; safe to call from threads."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        # One lock for every write: configs are tiny, and a variant's files must change together.
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ public

    def write(self, variant: Variant, mac: Mac, content: str,
              host: HostParams | None = None) -> list[str]:
        """Write the host's config files (and its host-config tree); returns what was written."""
        data = content.encode("utf-8")
        with self._lock:
            written = [self._write_file(rel, data) for rel in config_files(variant, mac)]
            if host is not None:
                written += self._write_host_tree(variant, mac, data, host)
        return written

    def write_default(self, variant: Variant, content: str) -> list[str]:
        files = default_files(variant)
        data = content.encode("utf-8")
        with self._lock:
            return [self._write_file(rel, data) for rel in files]

    def read(self, variant: Variant, mac: Mac) -> bytes:
        rel = config_files(variant, mac)[0]
        path = self._inside(rel)
        # A config replaced by a symlink out of the root must not leak what it points to.
        self._check_dir(rel)
        try:
            with open(path, "rb") as f:
                return f.read()
        except FileNotFoundError:
            raise ConfigNotFound(f"File {rel} not found") from None
        except OSError as exc:
            raise PxeError(f"cannot read {rel}: {exc.strerror}") from None

    def delete(self, variant: Variant, mac: Mac) -> None:
        """Remove the host's files; absent files are no error (Foreman deletes blindly)."""
        with self._lock:
            for rel in config_files(variant, mac):
                self._unlink(rel)
            sub = _host_subdir(variant)
            if sub is not None:
                self._remove_tree(f"{HOST_CONFIG}/{mac.dashed}/{sub}")
                self._remove_empty_dir(f"{HOST_CONFIG}/{mac.dashed}")

    # -------------------------------------------------------------- host tree

    def _write_host_tree(self, variant: Variant, mac: Mac, data: bytes,
                         host: HostParams) -> list[str]:
        base = f"{HOST_CONFIG}/{mac.dashed}"
        match variant:
            case Variant.SYSLINUX | Variant.PXELINUX:
                return [self._link(f"{base}/pxe/01-{mac.dashed}", config_files(variant, mac)[0])]
            case Variant.IPXE:
                return [self._link(f"{base}/ipxe/01-{mac.dashed}", config_files(variant, mac)[0])]
            case Variant.PXEGRUB2:
                grub = f"{base}/grub2"
                names = ["grub.cfg", f"grub.cfg-01-{mac.dashed}", f"grub.cfg-{mac.colon}"]
                written = [self._write_file(f"{grub}/{n}", data) for n in names]
                links = self._bootloader_links(host)
                self._drop_stale_efi(grub, set(links))
                written += [self._link(f"{grub}/{n}", target) for n, target in links.items()]
                return written
            case _:
                return []

    def _bootloader_links(self, host: HostParams) -> dict[str, str]:
        """Link name in the host's grub2/ -> target relative to the root."""
        for release in (host.release, "default"):
            if not release:
                continue
            universe = f"{UNIVERSE}/{host.targetos}/{release}/{host.arch}"
            path = self._inside(universe)
            if path.is_dir():
                return {e.name: f"{universe}/{e.name}" for e in sorted(path.iterdir(),
                                                                      key=lambda e: e.name)
                        if e.name.lower().endswith(".efi") and not e.name.startswith(".")}
        grub = f"grub{host.bootfile_suffix}.efi"
        shim = f"shim{host.bootfile_suffix}.efi"
        return {"boot.efi": f"grub2/{grub}", grub: f"grub2/{grub}",
                "boot-sb.efi": f"grub2/{shim}", shim: f"grub2/{shim}"}

    def _drop_stale_efi(self, rel_dir: str, keep: set[str]) -> None:
        # Links from a previous OS or release must not linger: firmware would boot them.
        path = self._inside(rel_dir)
        if not path.is_dir():
            return
        for entry in path.iterdir():
            if entry.name.lower().endswith(".efi") and entry.name not in keep:
                self._unlink(f"{rel_dir}/{entry.name}")

    # ------------------------------------------------------------ primitives

    def _inside(self, rel: str) -> Path:
        """``root/rel``, refused when its directory resolves outside the root."""
        self._check_dir(os.path.dirname(rel))
        return self.root / rel

    def _check_dir(self, rel_dir: str) -> None:
        root = os.path.realpath(self.root)
        real = os.path.realpath(self.root / rel_dir)
        if real != root and not real.startswith(root + os.sep):
            raise PxeError(f"{rel_dir} resolves outside the TFTP root")

    def _make_dirs(self, rel_dir: str) -> Path:
        # Checked before and after: mkdir must not follow a symlink out of the root either.
        self._check_dir(rel_dir)
        path = self.root / rel_dir
        try:
            path.mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            raise PxeError(f"{rel_dir} exists and is not a directory") from None
        except OSError as exc:
            raise PxeError(f"cannot create {rel_dir}: {exc.strerror}") from None
        self._check_dir(rel_dir)
        return path

    def _write_file(self, rel: str, data: bytes) -> str:
        directory = self._make_dirs(os.path.dirname(rel))
        name = os.path.basename(rel)
        tmp = directory / f".{name}.{secrets.token_hex(6)}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, _MODE)
            try:
                os.fchmod(fd, _MODE)  # whatever the umask
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, directory / name)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            reason = "is a directory" if exc.errno == errno.EISDIR else exc.strerror
            raise PxeError(f"cannot write {rel}: {reason}") from None
        _fsync_dir(directory)
        return rel

    def _link(self, rel: str, target_rel: str) -> str:
        """A relative symlink ``rel`` -> ``target_rel`` (both relative to the root), atomically."""
        directory = self._make_dirs(os.path.dirname(rel))
        target = os.path.relpath(target_rel, os.path.dirname(rel))
        tmp = directory / f".{os.path.basename(rel)}.{secrets.token_hex(6)}.tmp"
        try:
            os.symlink(target, tmp)
            os.replace(tmp, self.root / rel)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            reason = "is a directory" if exc.errno == errno.EISDIR else exc.strerror
            raise PxeError(f"cannot link {rel}: {reason}") from None
        _fsync_dir(directory)
        return rel

    def _unlink(self, rel: str) -> None:
        try:
            os.unlink(self._inside(rel))
        except FileNotFoundError:
            pass
        except IsADirectoryError:
            raise PxeError(f"cannot delete {rel}: is a directory") from None
        except OSError as exc:
            if exc.errno == errno.EPERM and os.path.isdir(self.root / rel):
                raise PxeError(f"cannot delete {rel}: is a directory") from None
            raise PxeError(f"cannot delete {rel}: {exc.strerror}") from None

    def _remove_tree(self, rel: str) -> None:
        path = self._inside(rel)
        try:
            if path.is_symlink() or not path.is_dir():
                path.unlink(missing_ok=True)
            else:
                shutil.rmtree(path)  # never follows symlinks inside the tree
        except OSError as exc:
            raise PxeError(f"cannot delete {rel}: {exc.strerror}") from None

    def _remove_empty_dir(self, rel: str) -> None:
        path = self._inside(rel)
        with contextlib.suppress(OSError):  # absent, not empty, or raced: all fine
            if path.is_dir() and not path.is_symlink() and not any(path.iterdir()):
                path.rmdir()


def _host_subdir(variant: Variant) -> str | None:
    match variant:
        case Variant.SYSLINUX | Variant.PXELINUX:
            return "pxe"
        case Variant.IPXE:
            return "ipxe"
        case Variant.PXEGRUB2:
            return "grub2"
        case _:
            return None


def _fsync_dir(path: Path) -> None:
    # The rename is durable only once the directory is; a crash must not resurrect old configs.
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
