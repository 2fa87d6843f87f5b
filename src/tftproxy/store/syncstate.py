"""Each boot set's revalidation schedule and last outcome, for ``status`` and restarts.

One small JSON file per set under ``private/sync/``, replaced atomically but without fsync,
like the pins: it says when a set was last checked, when it is checked next and how the
last check ended, never what is published. A write lost in a power cut only means the set
is checked again sooner; a file that does not parse, or was written by a newer tftproxy, is
taken as absent. The sets' records, which say what is published, are never touched here.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Literal

from tftproxy._fs import replace_file_atomically
from tftproxy.store.names import name_key

SYNC_FORMAT = 1
SyncOutcome = Literal["unchanged", "updated", "failed"]


@dataclass(frozen=True)
class SyncState:
    """What the revalidation knows of one set. Times are Unix seconds; 0 means never."""

    set: str
    checked_at: float = 0.0
    next_check: float | None = None  # None: not scheduled (sync off, or an idle set)
    outcome: SyncOutcome | None = None
    message: str | None = None
    from_generation: int | None = None
    generation: int | None = None
    failures: int = 0  # consecutive failed checks: the backoff's exponent
    failed_total: int = 0
    asked_at: float = 0.0  # the last request for one of its members (the idle rule)

    def to_json(self) -> dict[str, Any]:
        return {"format": SYNC_FORMAT, **asdict(self)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SyncState | None:
        if not isinstance(data, dict) or not isinstance(data.get("set"), str):
            return None
        found = data.get("format", 0)
        if not isinstance(found, int) or found > SYNC_FORMAT:
            return None
        known = {f.name for f in fields(cls)}
        try:
            return cls(**{k: v for k, v in data.items() if k in known})
        except TypeError:
            return None


class SyncStates:
    """The sync state files of one store; safe to use from any process."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _path(self, set_id: str) -> Path:
        return self.directory / f"{name_key(set_id)}.json"

    def _read(self, path: Path) -> SyncState | None:
        try:
            return SyncState.from_json(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError):
            return None

    def get(self, set_id: str) -> SyncState | None:
        state = self._read(self._path(set_id))
        return state if state is not None and state.set == set_id else None

    def all(self) -> dict[str, SyncState]:
        out: dict[str, SyncState] = {}
        if not self.directory.is_dir():
            return out
        for path in sorted(self.directory.glob("*.json")):
            state = self._read(path)
            if state is not None:
                out[state.set] = state
        return out

    def put(self, state: SyncState) -> None:
        # Advisory: atomic, not durable (see the module docstring).
        replace_file_atomically(self._path(state.set), json.dumps(state.to_json()).encode(),
                                durable=False)

    def drop(self, set_id: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._path(set_id).unlink()
