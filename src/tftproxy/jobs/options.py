"""What a fetch job may do with the tree: hiding, space, verification, how long jobs stay."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Literal


class RefreshMode(StrEnum):
    # hide: the proposal's behaviour; a host put in build mode waits for the new files instead
    # of booting stale ones. keep: the old version stays served until the new one replaces it.
    HIDE = "hide"
    KEEP = "keep"


VerifyMode = Literal["auto", "require", "off"]


@dataclass(frozen=True)
class JobOptions:
    refresh_mode: RefreshMode = RefreshMode.HIDE
    min_free_space: int = 64 * 1024**2
    verify: VerifyMode = "auto"
    job_retention: float = 600.0
    # Foreman sends the same kernel and initrd for many hosts at once (Build PXE Default):
    # within this window a finished check answers them, so the mirror sees one per file.
    fresh_for: float = 0.0  # the setting says 1; code that builds its own options opts in
    max_unpacked_size: int = 8 * 1024**3  # what one archive may unpack (tgz: scanned too)
    preflight: bool = True  # HEAD an archive's source before its first download


@dataclass(frozen=True)
class PrefetchSet:
    """A boot set fetched at start and kept current: a prefix and its members' URLs, as
    Foreman sends them to ``fetch_boot_file``."""

    prefix: str
    urls: tuple[str, ...]


@dataclass(frozen=True)
class SyncOptions:
    """The background revalidation's schedule (the ``sync_*`` settings); times in seconds."""

    interval: float = 4 * 3600.0  # 0: no background revalidation
    jitter: float = 0.1  # each delay is stretched or shrunk by up to this fraction
    concurrency: int = 4  # sets revalidated at once
    host_concurrency: int = 2  # sets revalidated at once from one upstream host
    retry: float = 300.0  # the delay after a first failure; doubles with each further one
    backoff_max: float = 24 * 3600.0
    idle_after: float = 7 * 86400.0  # no request for this long: the set is idle (0: never)
    idle_interval: float = 86400.0  # an idle set's interval (0: idle sets are not revalidated)
    prefetch: tuple[PrefetchSet, ...] = ()
