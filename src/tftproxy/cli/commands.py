"""The commands: each turns its arguments into settings, then calls the parts.

The parts are imported inside each command: ``tftproxy tftpd`` serves TFTP from this very
process and should not carry the HTTP client and server it never uses.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import time
from typing import Any

from tftproxy.cli.output import ProgressBar, human
from tftproxy.cli.owner import act_as_tree_owner, refuse_foreign_tree
from tftproxy.errors import InputError, NotFound
from tftproxy.settings.model import Settings
from tftproxy.settings.sources import load, load_settings, render
from tftproxy.store.layout import Layout

log = logging.getLogger("tftproxy")


def _overrides(args: argparse.Namespace, **extra: Any) -> dict[str, Any]:
    level = "DEBUG" if getattr(args, "verbose", False) else getattr(args, "log_level", None)
    return {"tftproot": getattr(args, "root", None), "log_level": level, **extra}


def settings_from(args: argparse.Namespace, **extra: Any) -> Settings:
    """The settings of a command: its files, the environment, then its flags."""
    return load_settings(getattr(args, "config", None), _overrides(args, **extra),
                         settings_dir=getattr(args, "settings_dir", None))


def cmd_serve(args: argparse.Namespace) -> int:
    from tftproxy import assemble, logs
    from tftproxy.service import run_server

    # An explicit --listen asks for HTTP even where a smart-proxy settings.yml has no http_port.
    http = {"listen": args.listen, "http_enabled": True} if args.listen else {}

    def load() -> Settings:
        return settings_from(args, **http, tftp_listen=args.tftp_listen)

    settings = load()
    refused = refuse_foreign_tree(Layout.at(settings.tftproot), "serve")
    if refused is not None:
        return refused
    logs.configure(assemble.log_config(settings))
    return asyncio.run(run_server(settings, reload=load))


def cmd_tftpd(args: argparse.Namespace) -> int:
    from tftproxy import assemble, logs
    from tftproxy.logs import parse_level
    from tftproxy.tftp.server import ServerConfig
    from tftproxy.tftp.workers import serve_foreground

    def load() -> Settings:
        return settings_from(args, tftp_listen=args.listen, tftp_workers=args.workers)

    def reload() -> tuple[ServerConfig, int]:
        new = load()
        return assemble.tftp_config(new), parse_level(new.log_level)

    settings = load()
    logs.configure(assemble.log_config(settings))
    if not settings.tftp_listen:
        print("tftproxy tftpd: no address to serve: give --listen HOST:PORT "
              "(or the tftp_listen setting)", file=sys.stderr)
        return 2
    if not os.path.isdir(settings.tftproot):
        print(f"tftproxy tftpd: TFTP root {settings.tftproot} is not a directory",
              file=sys.stderr)
        return 2
    _report_ownership(Layout.at(settings.tftproot))
    return serve_foreground(assemble.served_tree(settings), settings.tftp_listen,
                            settings.tftp_workers, assemble.tftp_config(settings),
                            drain_timeout=settings.drain_timeout,
                            log_config=assemble.log_config(settings), reload=reload)


def _report_ownership(layout: Layout) -> None:
    from tftproxy.store.ownership import ownership_problem

    problem = ownership_problem(layout)
    if problem is not None:
        log.error("%s", problem)


def cmd_config(args: argparse.Namespace) -> int:
    loaded = load(args.settings_dir, args.config, _overrides(args))
    for warning in loaded.warnings:
        print(f"tftproxy: warning: {warning}", file=sys.stderr)
    if args.json:
        data = loaded.settings.model_dump(mode="json")
        json.dump({k: {"value": v, "from": loaded.origin[k]} for k, v in data.items()},
                  sys.stdout, indent=2)
        print()
    else:
        sys.stdout.write(render(loaded))
    return 0


def cmd_fetch(args: argparse.Namespace) -> int:
    from tftproxy import assemble
    from tftproxy.jobs.bootfiles import results_log

    settings = settings_from(args)
    act_as_tree_owner(Layout.at(settings.tftproot))
    bar = ProgressBar(sys.stderr)
    results_log.disabled = True  # the outcome is printed below, once
    name: list[str] = []

    async def go() -> int:
        files = assemble.boot_files(settings)
        try:
            await files.recover()
            job = await files.request(args.prefix, args.url, progress=bar)
            name.append(job.name)
            bar.label = job.name
            result = await job.outcome()
        except InputError as exc:
            bar.finish()
            print(f"failed: {exc}", file=sys.stderr)
            return 2
        finally:
            await files.close()
        bar.finish()
        if result.status == "ignored":
            # smart-proxy accepts nfs:// and fetches nothing: say so, not "None bytes".
            print(f"ignored: {result.name} <- {args.url}: "
                  f"{result.message or 'this scheme is accepted and not fetched'}")
            return 0
        if result.ok:
            size = "-" if result.size is None else f"{human(result.size)} ({result.size} bytes)"
            print(f"{result.status}: {result.name} {size} sha256 {result.sha256 or '-'}")
            return 0
        print(f"failed: {result.name} <- {args.url}: {result.message}", file=sys.stderr)
        return 1

    try:
        return asyncio.run(go())
    except KeyboardInterrupt:
        # The bar's line is cleared and the prompt comes back on a line of its own.
        bar.finish()
        what = name[0] if name else args.url
        print(f"interrupted: {what}: nothing new published (the previous version, if any, "
              "stays)", file=sys.stderr)
        return 130


def cmd_sync(args: argparse.Namespace) -> int:
    from tftproxy import assemble
    from tftproxy.jobs.sync import SyncRun

    settings = settings_from(args)
    act_as_tree_owner(Layout.at(settings.tftproot))

    async def go() -> SyncRun | int:
        files = assemble.boot_files(settings)
        try:
            await files.recover()
            run = await files.sync.sync(args.prefixes)
            await run.wait()
        except (InputError, NotFound) as exc:
            print(f"failed: {exc}", file=sys.stderr)
            return 2
        finally:
            await files.close()
        return run

    run = asyncio.run(go())
    if isinstance(run, int):
        return run
    if args.json:
        json.dump(run.to_json(), sys.stdout, indent=2)
        print()
    elif not run.sets:
        print(f"no boot sets published under {settings.tftproot}")
    else:
        for set_id in run.sets:
            outcome = run.outcomes[set_id]
            print(outcome.line(), file=sys.stderr if outcome.status == "failed" else sys.stdout)
    return 1 if run.failed else 0


def cmd_status(args: argparse.Namespace) -> int:
    from tftproxy import assemble
    from tftproxy.cli.remote import running_downloads
    from tftproxy.cli.status import status_lines
    from tftproxy.jobs.status import status_report

    settings = settings_from(args)
    act_as_tree_owner(Layout.at(settings.tftproot))
    report = status_report(assemble.store(settings, create=False))
    downloads = running_downloads(settings)
    if args.json:
        report["downloads"] = downloads.jobs
        if downloads.jobs is None:
            report["downloads_unknown"] = downloads.problem
        json.dump(report, sys.stdout, indent=2)
        print()
        return 0
    print("\n".join(status_lines(report, downloads, time.time(), long=args.long)))
    return 0


def cmd_completion(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    import shtab

    print(shtab.complete(parser, shell=args.shell))
    return 0


def cmd_gc(args: argparse.Namespace) -> int:
    from tftproxy import assemble
    from tftproxy.store.gc import GcReport, collect

    settings = settings_from(args)
    grace = settings.gc_grace if args.grace is None else args.grace
    act_as_tree_owner(Layout.at(settings.tftproot))
    store = assemble.store(settings, create=False)
    if not store.layout.exists():
        # Nothing to clean, and a clean-up (least of all a dry run) makes no store.
        print(f"no tftproxy store under {settings.tftproot}: nothing to clean", file=sys.stderr)
        if args.json:
            json.dump(GcReport(dry_run=args.dry_run, grace=grace).to_json(), sys.stdout, indent=2)
            print()
        return 0
    if args.unreferenced:
        from tftproxy.store.adoption import unreferenced

        names = unreferenced(store.layout, store.records, grace)
        if not args.dry_run:
            names = store.adoption.retire(names)
        for name in names:
            print(f"{'would remove' if args.dry_run else 'removed'} {name}: no PXE config "
                  f"names it")
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
