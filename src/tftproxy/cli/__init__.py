"""The command line: ``tftproxy serve | tftpd | fetch | status | gc | config``.

:mod:`.parser` is the grammar, :mod:`.commands` what each command does, :mod:`.output` how
results are shown.
"""

from __future__ import annotations

import logging
import sys

from tftproxy.cli.parser import build_parser
from tftproxy.errors import SettingsError

__all__ = ["build_parser", "main"]


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
