"""The command line's documentation agrees with its parser: the README's command table, the
committed manual page and the shell completion are all checked against ``--help``'s source."""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.cli.test_cli import tftproxy
from tftproxy.cli.manpage import commands, render
from tftproxy.cli.parser import GLOBAL_FLAGS, build_parser

REPO = Path(__file__).resolve().parents[2]


def _readme_rows() -> dict[str, str]:
    text = (REPO / "README.md").read_text()
    section = text[text.index("## Commands"):text.index("## What a fetch guarantees")]
    rows = {}
    for line in section.splitlines():
        m = re.match(r"\| `tftproxy ([a-z-]+)([^`]*)` \|", line)
        if m:
            rows[m.group(1)] = m.group(2)
    return rows


def _own_flags(p: argparse.ArgumentParser) -> tuple[set[str], list[str]]:
    """A command's long options (the global ones aside) and its positionals' metavars."""
    flags, positionals = set(), []
    for action in p._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        if not action.option_strings:
            positionals.append(str(action.metavar or action.dest.upper()))
        elif not set(action.option_strings) & set(GLOBAL_FLAGS):
            flags.add(max(action.option_strings, key=len))
    return flags, positionals


def test_the_readme_command_table_matches_the_parser() -> None:
    rows = _readme_rows()
    parser = build_parser()
    assert set(rows) == {name for name, _, _ in commands(parser)}
    for name, _, p in commands(parser):
        flags, positionals = _own_flags(p)
        shown = set(re.findall(r"--[a-z][a-z-]*", rows[name]))
        assert shown == flags, f"tftproxy {name}: README {sorted(shown)}, --help {sorted(flags)}"
        for metavar in positionals:
            assert metavar in rows[name], f"tftproxy {name}: {metavar} missing from the README"
    text = (REPO / "README.md").read_text()
    globals_line = text[text.index("Every command takes the global options"):][:400]
    for flag in GLOBAL_FLAGS:
        assert f"`{flag}" in globals_line, flag


def test_every_flag_of_the_table_is_in_help() -> None:
    for name, usage in _readme_rows().items():
        out = tftproxy(name, "--help").stdout
        for flag in re.findall(r"--[a-z][a-z-]*", usage):
            assert flag in out, f"tftproxy {name} --help does not list {flag}"


def test_the_committed_manual_page_is_the_generated_one() -> None:
    committed = (REPO / "docs/tftproxy.1").read_text()
    assert committed == render(build_parser()), (
        "docs/tftproxy.1 is out of date: python -m tftproxy.cli.manpage > docs/tftproxy.1")


@pytest.mark.skipif(shutil.which("groff") is None, reason="needs groff (man-db)")
def test_the_manual_page_renders_without_warnings() -> None:
    done = subprocess.run(["groff", "-man", "-Tutf8", "-ww", "docs/tftproxy.1"], cwd=REPO,
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0 and done.stderr == ""
    page = re.sub(r".\x08", "", done.stdout)  # overstrike bold and underline
    for name, _, p in commands(build_parser()):
        assert f"tftproxy {name} [-h]" in " ".join(page.split()), name
        for flag in _own_flags(p)[0]:
            assert flag.replace("-", "\u2010") in page or flag in page, (name, flag)


def test_bash_completes_commands_and_their_flags() -> None:
    script = tftproxy("completion", "bash")
    assert script.returncode == 0
    probe = """
source /dev/stdin
complete_words() { COMP_WORDS=("$@"); COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ));
  COMP_LINE="${COMP_WORDS[*]}"; COMP_POINT=${#COMP_LINE}; COMPREPLY=();
  _shtab_tftproxy; echo "${COMPREPLY[*]}"; }
complete_words tftproxy st
complete_words tftproxy status --l
complete_words tftproxy gc --dr
"""
    done = subprocess.run(["bash", "-c", probe], input=script.stdout, capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["status", "--log-level --long", "--dry-run"]
