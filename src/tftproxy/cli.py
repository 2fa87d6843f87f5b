"""The command line: ``tftproxy serve | fetch | status | ...``."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from tftproxy import __version__
from tftproxy.config import Settings, SettingsError, load_settings

log = logging.getLogger("tftproxy")


def _overrides(args: argparse.Namespace, **extra: Any) -> dict[str, Any]:
    return {"tftproot": getattr(args, "root", None), **extra}


def _settings(args: argparse.Namespace, **extra: Any) -> Settings:
    return load_settings(getattr(args, "config", None), _overrides(args, **extra),
                         settings_dir=getattr(args, "settings_dir", None))


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--settings-dir", type=Path, metavar="DIR",
                   help="a smart-proxy settings directory (settings.yml, settings.d/tftp.yml), "
                   "e.g. /etc/foreman-proxy")
    p.add_argument("--config", type=Path, metavar="FILE",
                   help="tftproxy's YAML settings file (wins over --settings-dir)")
    p.add_argument("--root", type=Path, metavar="DIR",
                   help="the TFTP root (smart-proxy's tftproot; default /var/lib/tftpboot)")


# ---------------------------------------------------------------------- serve

def cmd_serve(args: argparse.Namespace) -> int:
    from tftproxy.service import run_server

    # An explicit --listen asks for HTTP even where a smart-proxy settings.yml has no http_port.
    http = {"listen": args.listen, "http_enabled": True} if args.listen else {}
    settings = _settings(args, **http, tftp_listen=args.tftp_listen)
    return asyncio.run(run_server(settings))


# ---------------------------------------------------------------------- tftpd

def cmd_tftpd(args: argparse.Namespace) -> int:
    from tftproxy.tftp.server import run_tftpd

    settings = _settings(args, tftp_listen=args.listen, tftp_workers=args.workers)
    if not settings.tftp_listen:
        print("tftproxy tftpd: no address to serve: give --listen HOST:PORT "
              "(or the tftp_listen setting)", file=sys.stderr)
        return 2
    return run_tftpd(settings, settings.tftp_listen)


# --------------------------------------------------------------------- config

def cmd_config(args: argparse.Namespace) -> int:
    from tftproxy import settings_files

    loaded = settings_files.load(args.settings_dir, args.config, _overrides(args))
    for warning in loaded.warnings:
        print(f"tftproxy: warning: {warning}", file=sys.stderr)
    if args.json:
        data = loaded.settings.model_dump(mode="json")
        json.dump({k: {"value": v, "from": loaded.origin[k]} for k, v in data.items()},
                  sys.stdout, indent=2)
        print()
    else:
        sys.stdout.write(settings_files.render(loaded))
    return 0


# ---------------------------------------------------------------------- fetch

def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


class _ProgressBar:
    """A one-line progress bar on a terminal; silent elsewhere."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.enabled = stream.isatty()
        self._last = 0.0

    def __call__(self, done: int, total: int | None) -> None:
        if not self.enabled:
            return
        t = time.monotonic()
        if t - self._last < 0.1 and (total is None or done < total):
            return
        self._last = t
        if total:
            frac = min(done / total, 1.0)
            bar = "#" * int(frac * 30)
            line = f"\r[{bar:<30}] {frac * 100:5.1f}% {_human(done)} / {_human(total)}"
        else:
            line = f"\r{_human(done)}"
        self.stream.write(line)
        self.stream.flush()

    def finish(self) -> None:
        if self.enabled:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


def cmd_fetch(args: argparse.Namespace) -> int:
    from tftproxy.bootfiles import BadRequest, BootFiles

    settings = _settings(args)
    bar = _ProgressBar(sys.stderr)

    async def go() -> int:
        files = BootFiles(settings)
        files.recover()
        try:
            job = files.request(args.prefix, args.url, progress=bar)
            result = await job.outcome()
        except BadRequest as exc:
            print(f"failed: {exc}", file=sys.stderr)
            return 2
        finally:
            await files.close()
        bar.finish()
        if result.ok:
            print(f"{result.status}: {result.name} {result.size} bytes sha256 {result.sha256}")
            return 0
        print(f"failed: {result.name} <- {args.url}: {result.message}", file=sys.stderr)
        return 1

    return asyncio.run(go())


# --------------------------------------------------------------------- status

def cmd_status(args: argparse.Namespace) -> int:
    from tftproxy.bootfiles import status_report

    settings = _settings(args)
    report = status_report(settings.tftproot)
    if args.json:
        json.dump(report, sys.stdout, indent=2)
        print()
        return 0
    files = report["files"]
    if not files:
        print(f"no boot files published under {settings.tftproot}")
        return 0
    for f in files:
        print(f["name"])
        print(f"  state:        {f['state']}")
        cur = f.get("current")
        if cur:
            print(f"  source:       {cur['source']}")
            if cur["final_url"] != cur["source"]:
                print(f"  fetched from: {cur['final_url']}")
            print(f"  size:         {cur['size']} bytes")
            print(f"  sha256:       {cur['sha256']}")
            print(f"  etag:         {cur['etag'] or '-'}")
            print(f"  last-modified:{' ' + cur['last_modified'] if cur['last_modified'] else ' -'}")
            print(f"  verified:     {cur['verified']}")
            print(f"  fetched:      {f['fetched']}")
        print(f"  checked:      {f['checked']}")
        if f["set"] is not None:
            print(f"  boot set:     {f['set']} generation {f['generation']}")
    for s in report["sets"]:
        kept = ", ".join(
            f"{g['generation']}{' (current)' if g['current'] else ''}"
            for g in s["generations"])
        print(f"boot set {s['set']}: generation {s['current']} current; kept: {kept}")
    return 0


# ------------------------------------------------------------------------- gc

def cmd_gc(args: argparse.Namespace) -> int:
    from tftproxy.gc import collect
    from tftproxy.store import BootStore

    settings = _settings(args)
    grace = settings.gc_grace if args.grace is None else args.grace
    store = BootStore(settings.tftproot, pin_window=settings.pin_window)
    report = collect(store, grace, dry_run=args.dry_run)
    if args.json:
        json.dump(report.to_json(), sys.stdout, indent=2)
        print()
    else:
        for sha in report.deleted:
            print(f"{'would delete' if args.dry_run else 'deleted'} object {sha}")
        for gen in report.dropped_generations:
            print(f"{'would drop' if args.dry_run else 'dropped'} generation {gen}")
        for busy in report.busy_sets:
            print(f"boot set {busy} is being fetched: left for the next clean-up")
        print(report.summary())
    return 0


# ----------------------------------------------------------------------- main

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tftproxy",
        description="Transactional boot files for PXE: a drop-in for smart-proxy's TFTP module.",
    )
    parser.add_argument("--version", action="version", version=f"tftproxy {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("serve", help="run the HTTP API (and the TFTP server if configured)",
                       description="Run the smart-proxy compatible HTTP API.")
    _add_common(p)
    p.add_argument("--listen", metavar="HOST:PORT",
                   help="address of the HTTP API (default 127.0.0.1:8000)")
    p.add_argument("--tftp-listen", action="append", metavar="HOST:PORT",
                   help="also serve TFTP on this address ([ADDR]:PORT for IPv6); repeatable; "
                   "default: the tftp_listen setting, empty (no TFTP server)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("tftpd", help="run the TFTP server alone",
                       description="Serve the TFTP root over TFTP (RFC 1350 reads with blksize, "
                       "tsize, timeout and windowsize) until SIGINT or SIGTERM.")
    _add_common(p)
    p.add_argument("--listen", action="append", metavar="HOST:PORT",
                   help="address to serve TFTP on ([ADDR]:PORT for IPv6, port 69 if "
                   "omitted); repeatable; default: the tftp_listen setting")
    p.add_argument("--workers", type=int, metavar="N",
                   help="worker processes sharing each address (default: tftp_workers, 1)")
    p.set_defaults(func=cmd_tftpd)

    p = sub.add_parser("fetch", help="fetch one boot file transactionally, from a shell",
                       description="Fetch URL and publish it as PREFIX-basename (or "
                       "PREFIX/basename when PREFIX ends in /), exactly as "
                       "POST /tftp/fetch_boot_file does. Exits non-zero on failure.")
    _add_common(p)
    p.add_argument("prefix", metavar="PREFIX", help="destination prefix relative to the root")
    p.add_argument("url", metavar="URL", help="source URL (http or https)")
    p.set_defaults(func=cmd_fetch)

    p = sub.add_parser("status", help="list published boot files and their sources",
                       description="Every published boot file with its source URL, size, sha256, "
                       "validators, and when it was fetched and last checked.")
    _add_common(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("gc", help="delete old generations and content nothing uses",
                       description="Delete retired boot-set generations and stored content that "
                       "no published name, kept generation or pinned client uses and that has "
                       "been unused for the grace period; report what was (or would be) freed.")
    _add_common(p)
    p.add_argument("--dry-run", action="store_true", help="only report what would be deleted")
    p.add_argument("--grace", type=float, metavar="SECONDS",
                   help="keep what became unused less than this long ago (default: gc_grace)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_gc)

    p = sub.add_parser("config", help="print the effective settings and where each came from",
                       description="Print every setting's effective value as tftproxy YAML, each "
                       "with a comment naming its source (default, a file and key, an "
                       "environment variable, the command line). Exits 2 on a bad setting.")
    _add_common(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_config)

    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # Daemons log what they do; one-shot commands print their own result and log only
    # what goes wrong beyond it (a progress bar and log lines would interleave).
    daemon = args.command in ("serve", "tftpd")
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO if daemon else logging.ERROR,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        rc: int = args.func(args)
    except SettingsError as exc:
        print(f"tftproxy: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        # An address in use, a root that cannot be created: say which, without a traceback.
        if args.verbose:
            raise
        print(f"tftproxy: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return rc


if __name__ == "__main__":
    sys.exit(main())
