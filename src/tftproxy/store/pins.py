"""Client pins: a client that read one member of a boot set keeps that generation.

A PXE client reads the kernel, then the initrd, seconds or minutes apart; UEFI firmware reads
a file's size, then the file. If the set switches in between, the client would boot a mixed
pair or get a larger file than it sized its buffer for. So tftproxy's own servers remember,
per client address and set, which generation it started on, for ``pin_window`` seconds from
the moment it started: reading does not renew a pin. A host in a boot loop (a broken kernel,
rebooting every few minutes) thus reaches the fixed generation once its pin runs out, instead
of staying on the broken one for as long as it keeps reading.

Pins live in small files under the store's private directory, so the API process, TFTP
workers and ``tftproxy gc`` all see them. They are advisory state: written without fsync,
and a pin lost in a crash only means that client gets the current generation.
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

from tftproxy._fs import replace_file_atomically


def _client_file(directory: Path, client: str) -> Path:
    # Dots and colons kept: the file's name is how the status page names the client.
    safe = "".join(c if c.isalnum() or c in ".:" else "_" for c in client)[:80]
    return directory / f"{safe.lstrip('.') or '_'}.json"


class Pins:
    """Per-client pins of set generations, shared across processes through files."""

    def __init__(self, directory: Path, window: float) -> None:
        self.directory = directory
        self.window = window

    def _read(self, path: Path) -> dict[str, list[float]]:
        """A client's pins, ``set -> [generation, expires]``; a damaged entry is no pin."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        out: dict[str, list[float]] = {}
        for set_id, entry in data.items() if isinstance(data, dict) else ():
            with contextlib.suppress(TypeError, ValueError):
                generation, expires = entry
                out[str(set_id)] = [int(generation), float(expires)]
        return out

    def get(self, client: str, set_id: str, now: float | None = None) -> int | None:
        """The generation this client is pinned to for the set, if the pin is still valid."""
        entry = self._read(_client_file(self.directory, client)).get(set_id)
        now = time.time() if now is None else now
        if not entry or entry[1] < now:
            return None
        return int(entry[0])

    def start(self, client: str, set_id: str, generation: int, now: float | None = None) -> None:
        """Pin a client to a generation for ``window`` seconds, unless it already has a valid
        pin for the set (which then keeps its generation and its expiry)."""
        if self.window <= 0:
            return
        now = time.time() if now is None else now
        path = _client_file(self.directory, client)
        data = {k: v for k, v in self._read(path).items() if v[1] >= now}
        if set_id in data:
            return
        data[set_id] = [generation, now + self.window]
        # Advisory: atomic but not durable, and a failed write only loses this pin.
        with contextlib.suppress(OSError):
            replace_file_atomically(path, json.dumps(data).encode(), durable=False)

    def clients(self, now: float | None = None) -> dict[str, dict[int, list[str]]]:
        """Who is pinned now: ``set -> generation -> clients`` (read only, for status)."""
        now = time.time() if now is None else now
        out: dict[str, dict[int, list[str]]] = {}
        if not self.directory.is_dir():
            return out
        for path in sorted(self.directory.glob("*.json")):
            for set_id, (generation, expires) in self._read(path).items():
                if expires >= now:
                    out.setdefault(set_id, {}).setdefault(int(generation), []).append(path.stem)
        return out

    def active(self, now: float | None = None, *, prune: bool = True) -> dict[str, set[int]]:
        """Every set generation some client is pinned to now (what clean-up must keep);
        ``prune`` removes the files of clients whose pins have all expired."""
        now = time.time() if now is None else now
        out: dict[str, set[int]] = {}
        if not self.directory.is_dir():
            return out
        for path in self.directory.glob("*.json"):
            data = self._read(path)
            if not data or all(v[1] < now for v in data.values()):
                if prune:
                    with contextlib.suppress(OSError):
                        path.unlink()
                continue
            for set_id, (generation, expires) in data.items():
                if expires >= now:
                    out.setdefault(set_id, set()).add(int(generation))
        return out
