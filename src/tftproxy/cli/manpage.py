"""The manual page, tftproxy(1), made from the parser: what ``--help`` says, in roff.

``python -m tftproxy.cli.manpage > docs/tftproxy.1`` writes the committed page; a test
fails when the parser and the page disagree, so neither is edited alone. No date in it: the
same parser makes the same page.
"""

from __future__ import annotations

import argparse
import re
import sys

from tftproxy import __version__

_SEE_ALSO = ("in.tftpd(8), foreman-proxy(8); README.md, docs/api.md and docs/migration.md "
             "of the tftproxy sources")


def _roff(text: str) -> str:
    """Plain text made safe for roff: backslashes, hyphens, a line's leading dot."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return re.sub(r"^([.'])", r"\\&\1", text, flags=re.MULTILINE)


def _help(action: argparse.Action) -> str:
    text = action.help or ""
    if "%(" in text:
        text = text % {"default": action.default, "prog": "tftproxy"}
    return " ".join(text.split())


def _flag(action: argparse.Action) -> str:
    if not action.option_strings:
        name = action.metavar if isinstance(action.metavar, str) else action.dest
        return f"\\fI{_roff(name)}\\fR"
    names = ", ".join(f"\\fB{_roff(o)}\\fR" for o in action.option_strings)
    if action.nargs == 0:
        return names
    metavar = action.metavar if isinstance(action.metavar, str) else action.dest.upper()
    return f"{names} \\fI{_roff(metavar)}\\fR"


def _options(actions: list[argparse.Action], skip: set[str]) -> list[str]:
    out = []
    for action in actions:
        if action.help == argparse.SUPPRESS or isinstance(
                action, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        if action.option_strings and set(action.option_strings) & skip:
            continue
        out += [".TP", _flag(action), _roff(_help(action))]
    return out


def commands(parser: argparse.ArgumentParser) -> list[tuple[str, str, argparse.ArgumentParser]]:
    """Every command: its name, its one-line help and its parser, in the parser's order."""
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    helps = {a.dest: a.help or "" for a in sub._choices_actions}
    return [(name, helps.get(name, ""), p) for name, p in sub.choices.items()]


def usage(p: argparse.ArgumentParser) -> str:
    return " ".join(p.format_usage().removeprefix("usage:").split())


def render(parser: argparse.ArgumentParser) -> str:
    from tftproxy.cli.parser import GLOBAL_FLAGS

    skip = set(GLOBAL_FLAGS) | {"--version"}
    lines = [
        f'.TH TFTPROXY 1 "" "tftproxy {__version__}" "User Commands"',
        ".SH NAME", f"tftproxy \\- {_roff(parser.description or '')}",
        ".SH SYNOPSIS",
        ".B tftproxy",
        "[\\fIGLOBAL OPTIONS\\fR] \\fICOMMAND\\fR [\\fIOPTIONS\\fR] [\\fIGLOBAL OPTIONS\\fR]",
        ".SH DESCRIPTION",
        _roff("A drop-in replacement for the TFTP module of Foreman's smart-proxy: boot files "
              "are downloaded aside, verified and published by renaming a symlink, boot sets "
              "switch as one generation, and its own TFTP server serves them. Run tftproxy "
              "alone for the list of commands, and tftproxy COMMAND --help for one."),
        ".SH GLOBAL OPTIONS",
        _roff("Accepted before the command and after it."),
        *_options(parser._actions, {"--version"}),
        ".TP", "\\fB\\-\\-version\\fR", "print the version and exit",
        ".SH COMMANDS",
    ]
    for name, summary, p in commands(parser):
        lines += [f'.SS "{_roff(name)}"', f"\\fB{_roff(usage(p))}\\fR", ".PP",
                  _roff(" ".join((p.description or summary).split()))]
        lines += _options(p._actions, skip)
    lines += [".SH EXIT STATUS",
              _roff("0 on success; 1 when the work failed (a fetch, a set, the tree); 2 for "
                    "bad input or settings; 130 when interrupted; 141 when the reader of "
                    "the output went away."),
              ".SH SEE ALSO", _roff(_SEE_ALSO), ""]
    return "\n".join(lines)


def main() -> int:
    from tftproxy.cli.parser import build_parser

    sys.stdout.write(render(build_parser()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
