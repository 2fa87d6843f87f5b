"""The crash-safe primitives keep their promises, also when the file system says no."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tftproxy._fs import (
    remove_temporaries,
    replace_file_atomically,
    replace_symlink_atomically,
)


def _temporaries(directory: Path) -> list[str]:
    return [e for e in os.listdir(directory) if e.endswith(".tmp")]


def test_replace_file_is_whole_and_leaves_nothing_behind(tmp_path: Path) -> None:
    target = tmp_path / "cfg"
    replace_file_atomically(target, b"one", mode=0o644)
    replace_file_atomically(target, b"two", mode=0o644)
    assert target.read_bytes() == b"two"
    assert target.stat().st_mode & 0o777 == 0o644
    assert _temporaries(tmp_path) == []


def test_a_failed_replace_keeps_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "inner").write_text("x")
    with pytest.raises(IsADirectoryError):
        replace_file_atomically(tmp_path / "dir", b"new")  # a directory cannot be replaced
    assert (tmp_path / "dir" / "inner").read_text() == "x"
    assert _temporaries(tmp_path) == []


def test_replace_symlink_made_aside(tmp_path: Path) -> None:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    link = tmp_path / "name"
    replace_symlink_atomically("a", link, scratch=scratch, label="k")
    replace_symlink_atomically("b", link, scratch=scratch, label="k")
    assert os.readlink(link) == "b"
    assert os.listdir(scratch) == []


def test_only_old_temporaries_are_removed(tmp_path: Path) -> None:
    old, young, other = tmp_path / ".a.1.tmp", tmp_path / ".b.2.tmp", tmp_path / "keep.json"
    for p in (old, young, other):
        p.write_text("x")
    past = time.time() - 120
    os.utime(old, (past, past))
    assert remove_temporaries(tmp_path, older_than=60) == 1
    assert sorted(os.listdir(tmp_path)) == [".b.2.tmp", "keep.json"]
