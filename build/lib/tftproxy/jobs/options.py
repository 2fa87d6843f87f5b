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
