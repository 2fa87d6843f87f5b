"""PXE configuration files: the only code that writes PXE configs, default menus and the
``host-config/`` tree. Which files each variant has is :mod:`tftproxy.pxe`'s table.

It writes the files smart-proxy writes, with three differences:

* every write is atomic and durable (:mod:`tftproxy._fs`), so a PXE client never reads a
  half-written config;
* nothing is written, read or removed outside the TFTP root, even through a symlinked directory;
* MAC groups are zero-padded (``a:b:...`` is written as ``0a-0b-...``), which is the name a PXE
  client asks for; Foreman always sends two digits, where the result is identical.

With Foreman's newer ``targetos``, ``release``, ``arch``, ``bootfile_suffix``, the per-host tree
``R/host-config/aa-bb-cc-dd-ee-ff/`` is maintained as well:

* pxegrub2: ``grub2/`` gets the config as ``grub.cfg``, ``grub.cfg-01-<mac>``, ``grub.cfg-<mac>``
  and relative symlinks to every ``*.efi`` (and ``linux``, ``initrd.gz``, ``vmlinuz``,
  ``initrd.img``) of ``R/bootloader-universe/pxegrub2/<os>/<release>/<arch>/`` (``<release>``
  falling back to ``default``), aliases resolved (``boot.efi`` links to the universe's
  ``grubx64.efi``), or, without such a directory,
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
import shutil
import threading
from pathlib import Path

from tftproxy._fs import replace_file_atomically, replace_symlink_atomically
from tftproxy._paths import is_within
from tftproxy.errors import ConfigNotFound, PxeInputError
from tftproxy.pxe import (
    HOST_CONFIG,
    UNIVERSE,
    UNIVERSE_BOOT_FILES,
    VARIANTS,
    HostParams,
    Mac,
    Variant,
    config_files,
    default_files,
)

_MODE = 0o644  # TFTP servers read as an unprivileged user


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
            raise PxeInputError(f"cannot read {rel}: {exc.strerror}") from None

    def delete(self, variant: Variant, mac: Mac) -> None:
        """Remove the host's files; absent files are no error (Foreman deletes blindly)."""
        with self._lock:
            for rel in config_files(variant, mac):
                self._unlink(rel)
            sub = VARIANTS[variant].host_subdir
            if sub is not None:
                self._remove_tree(f"{HOST_CONFIG}/{mac.dashed}/{sub}")
                self._remove_empty_dir(f"{HOST_CONFIG}/{mac.dashed}")

    # -------------------------------------------------------------- host tree

    def _write_host_tree(self, variant: Variant, mac: Mac, data: bytes,
                         host: HostParams) -> list[str]:
        spec = VARIANTS[variant]
        if spec.host_subdir is None:
            return []
        base = f"{HOST_CONFIG}/{mac.dashed}/{spec.host_subdir}"
        if spec.host_tree == "link":
            return [self._link(f"{base}/01-{mac.dashed}", config_files(variant, mac)[0])]
        names = ["grub.cfg", f"grub.cfg-01-{mac.dashed}", f"grub.cfg-{mac.colon}"]
        written = [self._write_file(f"{base}/{n}", data) for n in names]
        links = self._bootloader_links(host)
        self._drop_stale_efi(base, set(links))
        written += [self._link(f"{base}/{n}", target) for n, target in links.items()]
        return written

    def _bootloader_links(self, host: HostParams) -> dict[str, str]:
        """Link name in the host's grub2/ -> target relative to the root."""
        for release in (host.release, "default"):
            if not release:
                continue
            universe = f"{UNIVERSE}/{host.targetos}/{release}/{host.arch}"
            path = self._inside(universe)
            if path.is_dir():
                return {e.name: f"{universe}/{_resolve_alias(path, e.name)}"
                        for e in sorted(path.iterdir(), key=lambda e: e.name)
                        if _boot_file(e.name)}
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
            if _boot_file(entry.name) and entry.name not in keep:
                self._unlink(f"{rel_dir}/{entry.name}")

    # ------------------------------------------------------------ primitives

    def _inside(self, rel: str) -> Path:
        """``root/rel``, refused when its directory resolves outside the root."""
        self._check_dir(os.path.dirname(rel))
        return self.root / rel

    def _check_dir(self, rel_dir: str) -> None:
        if not is_within(os.path.realpath(self.root / rel_dir), os.path.realpath(self.root)):
            raise PxeInputError(f"{rel_dir} resolves outside the TFTP root")

    def _make_dirs(self, rel_dir: str) -> Path:
        # Checked before and after: mkdir must not follow a symlink out of the root either.
        self._check_dir(rel_dir)
        path = self.root / rel_dir
        try:
            path.mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            raise PxeInputError(f"{rel_dir} exists and is not a directory") from None
        except OSError as exc:
            raise PxeInputError(f"cannot create {rel_dir}: {exc.strerror}") from None
        self._check_dir(rel_dir)
        return path

    def _write_file(self, rel: str, data: bytes) -> str:
        directory = self._make_dirs(os.path.dirname(rel))
        try:
            replace_file_atomically(directory / os.path.basename(rel), data, mode=_MODE)
        except OSError as exc:
            raise PxeInputError(f"cannot write {rel}: {_reason(exc)}") from None
        return rel

    def _link(self, rel: str, target_rel: str) -> str:
        """A relative symlink ``rel`` -> ``target_rel`` (both relative to the root), atomically."""
        directory = self._make_dirs(os.path.dirname(rel))
        target = os.path.relpath(target_rel, os.path.dirname(rel))
        try:
            replace_symlink_atomically(target, directory / os.path.basename(rel))
        except OSError as exc:
            raise PxeInputError(f"cannot link {rel}: {_reason(exc)}") from None
        return rel

    def _unlink(self, rel: str) -> None:
        try:
            os.unlink(self._inside(rel))
        except FileNotFoundError:
            pass
        except IsADirectoryError:
            raise PxeInputError(f"cannot delete {rel}: is a directory") from None
        except OSError as exc:
            if exc.errno == errno.EPERM and os.path.isdir(self.root / rel):
                raise PxeInputError(f"cannot delete {rel}: is a directory") from None
            raise PxeInputError(f"cannot delete {rel}: {exc.strerror}") from None

    def _remove_tree(self, rel: str) -> None:
        path = self._inside(rel)
        try:
            if path.is_symlink() or not path.is_dir():
                path.unlink(missing_ok=True)
            else:
                shutil.rmtree(path)  # never follows symlinks inside the tree
        except OSError as exc:
            raise PxeInputError(f"cannot delete {rel}: {exc.strerror}") from None

    def _remove_empty_dir(self, rel: str) -> None:
        path = self._inside(rel)
        with contextlib.suppress(OSError):  # absent, not empty, or raced: all fine
            if path.is_dir() and not path.is_symlink() and not any(path.iterdir()):
                path.rmdir()


def _boot_file(name: str) -> bool:
    return not name.startswith(".") and (name.lower().endswith(".efi")
                                         or name in UNIVERSE_BOOT_FILES)


def _resolve_alias(directory: Path, name: str) -> str:
    """The file of ``directory`` that ``name`` finally is: ``boot.efi`` -> ``grubx64.efi``.

    Aliases are followed while they stay in the directory, so a host's ``boot.efi`` links
    straight to the universe's ``grubx64.efi`` (firmware loads the next stage beside it).
    """
    for _ in range(8):
        try:
            text = os.readlink(directory / name)
        except OSError:
            return name
        if "/" in text or text in (".", ".."):
            return name
        name = text
    return name


def _reason(exc: OSError) -> str:
    return "is a directory" if exc.errno == errno.EISDIR else exc.strerror or str(exc)
