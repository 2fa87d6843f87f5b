"""The command line's grammar: ``tftproxy serve | tftpd | fetch | sync | status | gc | config
| setup | install-unit | adopt | completion``.

The global flags (``-v``, ``--log-level``, ``--config``, ``--settings-dir``, ``--root``) are
accepted before the command and after it: the main parser holds them with real defaults,
each command's parser holds them too with suppressed defaults, so a flag given after the
command wins and one given before it is not reset by the command's parser.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from tftproxy import __version__
from tftproxy.cli import admin, commands
from tftproxy.logs import parse_level

GLOBAL_FLAGS = ("-v", "--verbose", "--log-level", "--config", "--settings-dir", "--root")


def _add_globals(p: argparse.ArgumentParser, *, main: bool) -> None:
    """The flags every command takes; ``main``: the top-level parser's copy."""
    group = p.add_argument_group("global options (before or after the command)")
    default: dict[str, Any] = {} if main else {"default": argparse.SUPPRESS}
    group.add_argument("-v", "--verbose", action="store_true",
                       help="log debug messages", **({"default": False} if main else default))
    group.add_argument("--log-level", type=_level, metavar="LEVEL", **default,
                       help="DEBUG, INFO, WARN, ERROR or FATAL (default: the log_level "
                       "setting; one-shot commands log errors only)")
    group.add_argument("--settings-dir", type=Path, metavar="DIR", **default,
                       help="a smart-proxy settings directory (settings.yml, "
                       "settings.d/tftp.yml), e.g. /etc/foreman-proxy")
    group.add_argument("--config", type=Path, metavar="FILE", **default,
                       help="tftproxy's YAML settings file (wins over --settings-dir)")
    group.add_argument("--root", type=Path, metavar="DIR", **default,
                       help="the TFTP root (smart-proxy's tftproot; default "
                       "/var/lib/tftpboot)")


def _add_common(p: argparse.ArgumentParser, *, user: bool = False) -> None:
    _add_globals(p, main=False)
    if user:
        p.add_argument("--user", default=admin.DEFAULT_USER,
                       help="the user the service runs as (default foreman-proxy)")


def _level(text: str) -> str:
    try:
        parse_level(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text.upper()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tftproxy",
        description="Transactional boot files for PXE: a drop-in for smart-proxy's TFTP module.",
    )
    parser.add_argument("--version", action="version", version=f"tftproxy {__version__}")
    _add_globals(parser, main=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("serve", help="run the HTTP API (and the TFTP server if configured)",
                       description="Run the smart-proxy compatible HTTP API (with the "
                       "status page at / for browsers, HTTP boot, /metrics) and, with "
                       "--tftp-listen or the tftp_listen setting, the TFTP server.")
    _add_common(p)
    p.add_argument("--listen", metavar="HOST:PORT",
                   help="address of the HTTP API (default 127.0.0.1:8000)")
    p.add_argument("--tftp-listen", action="append", metavar="HOST:PORT",
                   help="also serve TFTP on this address ([ADDR]:PORT for IPv6); repeatable; "
                   "default: the tftp_listen setting, empty (no TFTP server)")
    p.set_defaults(func=commands.cmd_serve)

    p = sub.add_parser("tftpd", help="run the TFTP server alone",
                       description="Serve the TFTP root over TFTP (RFC 1350 reads with blksize, "
                       "tsize, timeout and windowsize) until SIGINT or SIGTERM.")
    _add_common(p)
    p.add_argument("--listen", action="append", metavar="HOST:PORT",
                   help="address to serve TFTP on ([ADDR]:PORT for IPv6, port 69 if "
                   "omitted); repeatable; default: the tftp_listen setting")
    p.add_argument("--workers", type=int, metavar="N",
                   help="worker processes sharing each address (default: tftp_workers, 1)")
    p.set_defaults(func=commands.cmd_tftpd)

    p = sub.add_parser("fetch", help="fetch one boot file transactionally, from a shell",
                       description="Fetch URL and publish it as PREFIX-basename (or "
                       "PREFIX/basename when PREFIX ends in /; an OCI source's basename is "
                       "its layer's title), exactly as "
                       "POST /tftp/fetch_boot_file does. Exits non-zero on failure. Run as root "
                       "on a tree another user owns, it acts as that user.")
    _add_common(p)
    p.add_argument("prefix", metavar="PREFIX", help="destination prefix relative to the root")
    p.add_argument("url", metavar="URL",
                   help="source URL: http(s)://..., ftp://..., or "
                   "oci://REGISTRY/REPOSITORY:TAG#FILE (oci+http:// for a plain-HTTP registry)")
    p.set_defaults(func=commands.cmd_fetch)

    p = sub.add_parser("sync", help="revalidate boot sets now",
                       description="Check every published boot set (or the sets of the "
                       "PREFIXes) upstream with conditional requests, as the background "
                       "revalidation of serve does, and publish a change as one new "
                       "generation; a failure keeps the last good generation. One line per "
                       "set: unchanged, updated (from which generation to which) or failed "
                       "with the reason. Exits 1 if a set failed, 2 for bad input.")
    _add_common(p)
    p.add_argument("prefixes", nargs="*", metavar="PREFIX",
                   help="a boot set's prefix, as given to fetch (default: every set)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=commands.cmd_sync)

    p = sub.add_parser("status", help="published boot files, boot sets and downloads running",
                       description="A table of the published boot files (state, size, "
                       "verification, boot set and generation, when fetched and last "
                       "checked), one of the boot sets (generations kept, pinned clients, "
                       "revalidation), and the downloads the running `tftproxy serve` has in "
                       "progress (asked from its API at the listen setting's address). "
                       "--long: every detail per file (source, sha256, validators, how it "
                       "was verified).")
    _add_common(p)
    out = p.add_mutually_exclusive_group()
    out.add_argument("--long", action="store_true",
                     help="every detail of each file instead of the table")
    out.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=commands.cmd_status)

    p = sub.add_parser("gc", help="delete old generations and content nothing uses",
                       description="Delete retired boot-set generations and stored content that "
                       "no published name, kept generation or pinned client uses and that has "
                       "been unused for the grace period; report what was (or would be) freed. "
                       "Run as root on a tree another user owns, it acts as that user.")
    _add_common(p)
    p.add_argument("--dry-run", action="store_true",
                   help="only report what would be deleted; writes nothing, creates no store")
    p.add_argument("--grace", type=float, metavar="SECONDS",
                   help="keep what became unused less than this long ago (default: gc_grace)")
    p.add_argument("--unreferenced", action="store_true",
                   help="also remove boot files under boot/ (published or plain) that no PXE "
                   "config names and that were not fetched or checked within the grace "
                   "period; never done without this flag")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=commands.cmd_gc)

    p = sub.add_parser("setup", help="prepare the TFTP root for the service user (as root)",
                       description="Run once as root, as an installer would: create the TFTP "
                       "root if missing (root-owned, 0755), give tftproxy's state directory "
                       ".tftproxy/ to the service user, and create the published directories "
                       "(boot/, pxelinux.cfg/, grub2/...) that are missing, owned by that user. "
                       "What exists is not changed; a directory the user cannot write is "
                       "named with its fix.")
    _add_common(p, user=True)
    p.set_defaults(func=admin.cmd_setup)

    p = sub.add_parser("install-unit", help="install the systemd unit (as root)",
                       description="Write tftproxy.service for this installation (its "
                       "ExecStart, user, TFTP root) into the unit directory, the annotated "
                       "example configuration where --config points if nothing is there, "
                       "and reload systemd when it runs.")
    _add_common(p, user=True)
    p.add_argument("--unit-dir", type=Path, default=Path("/etc/systemd/system"), metavar="DIR",
                   help="where the unit goes (default /etc/systemd/system)")
    p.add_argument("--print", action="store_true", dest="print_only",
                   help="print the unit instead of installing anything")
    p.set_defaults(func=admin.cmd_install_unit)

    p = sub.add_parser("adopt", help="bring files smart-proxy downloaded under management",
                       description="Files under boot/ that are plain files (smart-proxy's "
                       "in-place downloads) are hashed into the content store and replaced by "
                       "links to the same bytes, grouped into boot sets by prefix. With a "
                       "known source (--source), a file is verified against its "
                       "distribution's checksums, and refetched when it is truncated or "
                       "cannot be verified. `tftproxy status` lists what is still unmanaged.")
    _add_common(p)
    p.add_argument("--source", action="append", default=[], metavar="NAME=URL",
                   help="where NAME (relative to the root) was downloaded from; repeatable")
    p.add_argument("--dry-run", action="store_true", help="only list what would be adopted")
    p.add_argument("names", nargs="*", metavar="NAME",
                   help="only these files (default: every unmanaged file under boot/)")
    p.set_defaults(func=admin.cmd_adopt)

    p = sub.add_parser("config", help="print the effective settings and where each came from",
                       description="Print every setting's effective value as tftproxy YAML, each "
                       "with a comment naming its source (default, a file and key, an "
                       "environment variable, the command line). Exits 2 on a bad setting.")
    _add_common(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=commands.cmd_config)

    p = sub.add_parser("completion", help="print a shell completion script",
                       description="Print the completion script for SHELL, generated from "
                       "this parser: e.g. `tftproxy completion bash > "
                       "/etc/bash_completion.d/tftproxy`, or `source <(tftproxy completion "
                       "bash)` in ~/.bashrc.")
    p.add_argument("shell", choices=("bash", "zsh", "tcsh"), metavar="SHELL",
                   help="bash, zsh or tcsh")
    p.set_defaults(func=lambda args: commands.cmd_completion(args, build_parser()))

    return parser
