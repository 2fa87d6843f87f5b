"""Path text, without touching the file system: dot segments and containment.

Every place that turns a client's or a URL's path into segments goes through
:func:`dot_segments`, so TFTP, ``/httpboot``, destination names and manifest lookups agree on
what ``a/./b//c/../d`` means.
"""

from __future__ import annotations

from typing import Literal

AboveRoot = Literal["clamp", "refuse"]


def dot_segments(path: str, *, above_root: AboveRoot) -> list[str] | None:
    """The segments of ``path`` with ``.``, empty and ``..`` segments resolved (RFC 3986 5.2.4).

    Empty segments are dropped (servers read ``a//b`` as ``a/b``). A ``..`` that would climb
    above the start is dropped with ``clamp`` (as for a URL) and makes the answer None with
    ``refuse`` (a path that must stay inside a root).
    """
    out: list[str] = []
    for seg in path.split("/"):
        if seg in ("", "."):
            continue
        if seg == "..":
            if out:
                out.pop()
            elif above_root == "refuse":
                return None
            continue
        out.append(seg)
    return out


def plain_segments(path: str) -> list[str]:
    """The segments of ``path`` without empty and ``.`` ones; ``..`` is kept for the caller."""
    return [seg for seg in path.split("/") if seg not in ("", ".")]


def is_within(path: str, base: str) -> bool:
    """Whether the absolute ``path`` is ``base`` or lies below it (both already resolved)."""
    return path == base or path.startswith(base.rstrip("/") + "/")
