"""What the commands print: tables and sizes for people, a progress bar on terminals only.

The bar is tqdm's (rate, time left, the terminal's width read again as it changes); on a
pipe or a file nothing but the result lines is written, so scripts read plain lines.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, TextIO

from tqdm import tqdm

from tftproxy import _human

human = _human.size
# What tqdm's line needs besides the name: " 56%|███| 4.25M/8.00M [00:01<00:01, 3.33MiB/s]".
_STATS = 50
_NARROW = "{percentage:3.0f}% {n_fmt}/{total_fmt} {rate_fmt} left {remaining}"


class ProgressBar:
    """A download's one-line progress on a terminal; silent elsewhere."""

    def __init__(self, stream: TextIO, label: str = "") -> None:
        self.stream = stream
        self.enabled = stream.isatty()
        self.label = label
        self._bar: tqdm[Any] | None = None

    def __call__(self, done: int, total: int | None) -> None:
        if not self.enabled:
            return
        bar = self._bar
        if bar is None:
            # "iB" with a 1024 divisor reads KiB, MiB: the units of every other line.
            bar = tqdm(total=total, unit="iB", unit_scale=True, unit_divisor=1024,
                                   dynamic_ncols=True, file=self.stream, leave=False,
                                   desc=self.label or None, mininterval=0.1, miniters=1)
            self._bar = bar
        elif total is not None and bar.total != total:
            bar.total = total
            bar.refresh()
        if done < bar.n:  # a retry starts the body again
            bar.reset(total)
        self._fit(bar)
        bar.update(done - bar.n)

    def _fit(self, bar: tqdm[Any]) -> None:
        """Keep rate and time left on the line: tqdm cuts what passes the terminal's edge,
        so the name shrinks first, then the bar gives way to the numbers alone."""
        try:
            columns = os.get_terminal_size(self.stream.fileno()).columns
        except (OSError, ValueError):
            return
        room = columns - _STATS
        label = self.label
        if len(label) + 2 > room:
            label = "" if room < 12 else "…" + label[-(room - 3):]
        bar.set_description_str(label or None, refresh=False)
        narrow = room < 8 and bar.total is not None
        bar.bar_format = _NARROW if narrow else None

    def finish(self) -> None:
        """Take the bar off the line (the result line takes its place)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def table(headers: Sequence[str], rows: Sequence[Sequence[str]],
          right: frozenset[int] = frozenset()) -> list[str]:
    """Columns as wide as their widest cell, two spaces apart; ``right``: aligned right."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(headers)]
    out = []
    for row in (headers, *rows):
        cells = [c.rjust(w) if i in right else c.ljust(w)
                 for i, (c, w) in enumerate(zip(row, widths, strict=True))]
        out.append("  ".join(cells).rstrip())
    return out


def dash(value: object) -> str:
    """A value as text, ``-`` where there is none (never ``None``)."""
    return "-" if value is None or value == "" else str(value)
