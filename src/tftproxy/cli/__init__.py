"""The command line: ``tftproxy serve | tftpd | fetch | status | gc | config | setup |
install-unit | adopt``.

:mod:`.parser` is the grammar, :mod:`.commands` and :mod:`.admin` what each command does,
:mod:`.output` how results are shown.
"""

from __future__ import annotations

import logging
import sys

from tftproxy import logs
from tftproxy.cli.parser import build_parser
from tftproxy.errors import SettingsError, TftproxyError

__all__ = ["build_parser", "main"]


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
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
    except OSError as exc:
        # An address in use, a root that cannot be created: say which, without a traceback.
        if args.verbose:
            raise
        print(f"tftproxy: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return rc
