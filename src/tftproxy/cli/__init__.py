"""The command line: ``tftproxy serve | tftpd | fetch | sync | status | gc | config | setup |
install-unit | adopt | completion``.

:mod:`.parser` is the grammar, :mod:`.commands` and :mod:`.admin` what each command does,
:mod:`.output` how results are shown, :mod:`.remote` what a running ``serve`` tells,
:mod:`.manpage` the manual page made from the grammar.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from tftproxy import logs
from tftproxy.cli.parser import build_parser
from tftproxy.errors import SettingsError, TftproxyError

__all__ = ["build_parser", "main"]


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        # `tftproxy` alone: what it can do, not an error about what is missing.
        parser.print_help()
        return 0
    try:
        rc = _run(args)
        sys.stdout.flush()  # here, where a closed pipe can still be answered quietly
        return rc
    except BrokenPipeError:
        # `tftproxy config --json | head`: the reader has what it wanted. Python would
        # report the pipe again when it flushes stdout at exit: point stdout elsewhere.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 141  # 128 + SIGPIPE, as a shell reports a writer the pipe killed


def _run(args: argparse.Namespace) -> int:
    # Daemons log what they do; one-shot commands print their own result and log only
    # what goes wrong beyond it (a progress bar and log lines would interleave).
    # Daemons then log where their settings say (log_file, log_level).
    daemon = args.command in ("serve", "tftpd")
    level = logging.INFO if daemon else logging.ERROR
    if args.verbose:
        level = logging.DEBUG
    elif getattr(args, "log_level", None):
        level = logs.parse_level(args.log_level)
    logs.configure(logs.LogConfig(None, level))
    try:
        rc: int = args.func(args)
    except SettingsError as exc:
        print(f"tftproxy: {exc}", file=sys.stderr)
        return 2
    except TftproxyError as exc:
        # The tree is not writable, a user is missing...: the message names the fix.
        print(f"tftproxy: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        raise
    except OSError as exc:
        # An address in use, a root that cannot be created: say which, without a traceback.
        if args.verbose:
            raise
        print(f"tftproxy: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return rc
