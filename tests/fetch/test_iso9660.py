"""The ISO 9660 reader against images xorriso writes, and against damaged images."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import media
from tftproxy.errors import UpstreamError
from tftproxy.fetch.extract import Limits, extract_members
from tftproxy.fetch.iso9660 import IsoImage

pytestmark = pytest.mark.skipif(bool(media.missing_packages()),
                                reason=f"needs {' '.join(media.missing_packages())}")
LIMITS = Limits(1 << 30, 1 << 30)


class FileSink:
    def __init__(self, path: Path) -> None:
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)

    def write(self, data: bytes | memoryview) -> None:
        os.write(self.fd, data)


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("tree")
    (base / "Deep/a/b/c/d/e/f/g/h/i").mkdir(parents=True)
    (base / "Deep/a/b/c/d/e/f/g/h/i/Leaf File.txt").write_bytes(b"deep")
    (base / "MiXed-Case name with a very long file name indeed.bin").write_bytes(
        os.urandom(70_000))
    os.symlink("MiXed-Case name with a very long file name indeed.bin", base / "link")
    os.mkfifo(base / "fifo")
    return base


@pytest.mark.parametrize("names", ["rock ridge", "joliet", "iso9660"])
def test_members_come_back_exact_whatever_the_names(tree: Path, tmp_path: Path,
                                                    names: str) -> None:
    iso = media.make_iso(tree, tmp_path / "t.iso", names=names)
    fd = os.open(iso, os.O_RDONLY)
    try:
        assert IsoImage(fd).names == names
    finally:
        os.close(fd)
    long = "MiXed-Case name with a very long file name indeed.bin"
    deep = "Deep/a/b/c/d/e/f/g/h/i/Leaf File.txt"
    if names == "iso9660":  # upper-case names as xorriso maps them, compared without case
        long, deep = "mixed_case_name_with_a_very.bin", "DEEP/A/B/C/D/E/F/G/H/I/LEAF_FILE.TXT"
    sinks = {long: FileSink(tmp_path / "long"), deep: FileSink(tmp_path / "deep")}
    got = extract_members(str(iso), "iso", sinks, LIMITS, "t.iso")
    assert (tmp_path / "long").read_bytes() == (
        tree / "MiXed-Case name with a very long file name indeed.bin").read_bytes()
    assert (tmp_path / "deep").read_bytes() == b"deep"
    assert got[deep].size == 4


@pytest.mark.parametrize(("member", "why"), [("link", "is a symbolic link"),
                                             ("fifo", "is a fifo or socket"),
                                             ("Deep", "is a directory"),
                                             ("nope", "nope is not in t.iso")])
def test_what_is_not_a_plain_file_is_refused(tree: Path, tmp_path: Path, member: str,
                                             why: str) -> None:
    iso = media.make_iso(tree, tmp_path / "t.iso")
    with pytest.raises(UpstreamError, match=why):
        extract_members(str(iso), "iso", {member: FileSink(tmp_path / "x")}, LIMITS, "t.iso")


def test_members_over_the_cap_are_refused(tree: Path, tmp_path: Path) -> None:
    iso = media.make_iso(tree, tmp_path / "t.iso")
    member = "MiXed-Case name with a very long file name indeed.bin"
    with pytest.raises(UpstreamError, match="more than max_file_size"):
        extract_members(str(iso), "iso", {member: FileSink(tmp_path / "x")},
                        Limits(1 << 30, 1000), "t.iso")
    with pytest.raises(UpstreamError, match="more than max_unpacked_size"):
        extract_members(str(iso), "iso", {member: FileSink(tmp_path / "x")},
                        Limits(1000, 1 << 30), "t.iso")


@pytest.fixture(scope="module")
def small_iso(tree: Path, tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return media.make_iso(tree, tmp_path_factory.mktemp("iso") / "s.iso").read_bytes()


@settings(max_examples=80, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(16 * 2048, 40 * 2048), st.integers(0, 255)),
                min_size=1, max_size=12))
def test_a_damaged_image_is_an_error_never_a_crash(small_iso: bytes, tmp_path: Path,
                                                   damage: list[tuple[int, int]]) -> None:
    """Bytes of the descriptors and directories changed at random: the reader answers with
    UpstreamError (or extracts something), never another exception, an over-read or a hang."""
    data = bytearray(small_iso)
    for at, value in damage:
        if at < len(data):
            data[at] = value
    path = tmp_path / "damaged.iso"
    path.write_bytes(bytes(data))
    member = "Deep/a/b/c/d/e/f/g/h/i/Leaf File.txt"
    with contextlib.suppress(UpstreamError):
        extract_members(str(path), "iso", {member: FileSink(tmp_path / "x")}, LIMITS, "d")
