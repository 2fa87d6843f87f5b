"""``tftproxy status`` for people: a compact table, or every detail with ``--long``."""

from __future__ import annotations

from typing import Any

from tftproxy import _human
from tftproxy.cli.output import dash, table
from tftproxy.cli.remote import Downloads


def _age(when: str | None, now: float) -> str:
    return _human.age(when, now) if when else "-"


def _kept(s: dict[str, Any]) -> list[dict[str, Any]]:
    return [g for g in s["generations"] if not g["current"]]


def _pinned(s: dict[str, Any]) -> list[str]:
    return [f"{client} (generation {g['generation']})" for g in s["generations"]
            for client in g.get("pinned", [])]


def _sync(s: dict[str, Any], now: float) -> tuple[str, str, str]:
    sync = s["sync"]
    if sync is None:
        return "-", "-", "-"
    outcome = sync["outcome"] or "not yet"
    if sync["outcome"] == "failed":
        outcome = f"failed ({sync['failures']}x)"
    nxt = _age(sync["next_check"], now) if sync["next_check"] else "none"
    return _age(sync["checked"], now), outcome, nxt


def file_table(report: dict[str, Any], now: float) -> list[str]:
    rows = []
    for f in report["files"]:
        cur = f["current"] or {}
        rows.append([f["name"], f["state"], _human.size(cur.get("size")),
                     cur.get("verification", "-"), dash(f["set"]), dash(f["generation"]),
                     _age(f["fetched"], now), _age(f["checked"], now)])
    for u in report["unmanaged"]:
        rows.append([u["name"], "unmanaged", _human.size(u["size"]), "-", "-", "-", "-", "-"])
    return table(("NAME", "STATE", "SIZE", "VERIFIED", "SET", "GEN", "FETCHED", "CHECKED"),
                 rows, right=frozenset({2, 5}))


def set_table(report: dict[str, Any], now: float) -> list[str]:
    rows = []
    for s in report["sets"]:
        kept = ", ".join(str(g["generation"]) for g in _kept(s)) or "-"
        pinned = len(_pinned(s))
        rows.append([s["set"], dash(s["current"]), kept, str(pinned) if pinned else "-",
                     *_sync(s, now)])
    return table(("SET", "CURRENT", "KEPT", "PINNED", "CHECKED", "OUTCOME", "NEXT CHECK"),
                 rows, right=frozenset({1, 3}))


def download_lines(downloads: Downloads, now: float) -> list[str]:
    if downloads.jobs is None:
        return [f"downloads in progress: unknown: {downloads.problem}"]
    if not downloads.jobs:
        return [f"downloads in progress: none (asked tftproxy serve at {downloads.where})"]
    rows = []
    for job in downloads.jobs:
        p = job["progress"]
        rows.append([job["name"], _human.size(p["bytes"]), _human.size(p.get("total")),
                     f"{p['percent']:.1f} %" if p.get("percent") is not None else "-",
                     _human.rate(p.get("rate")), _human.duration(p.get("eta")),
                     _age(job.get("started"), now), job["source"]])
    return [f"downloads in progress (tftproxy serve at {downloads.where}):",
            *table(("NAME", "DONE", "OF", "%", "RATE", "LEFT", "STARTED", "SOURCE"), rows,
                   right=frozenset({1, 2, 3, 4, 5}))]


def _fields(pairs: list[tuple[str, str]]) -> list[str]:
    width = max(len(k) for k, _ in pairs) + 1
    return [f"  {(k + ':').ljust(width)} {v}" for k, v in pairs]


def _when(when: str | None, now: float) -> str:
    return f"{when} ({_human.age(when, now)})" if when else "never"


def long_lines(report: dict[str, Any], now: float) -> list[str]:
    out = []
    for f in report["files"]:
        cur = f["current"]
        pairs = [("state", f["state"])]
        if cur:
            pairs.append(("source", cur["source"] or "unknown (adopted)"))
            if cur["final_url"] and cur["final_url"] != cur["source"]:
                pairs.append(("fetched from", cur["final_url"]))
            pairs += [("size", f"{_human.size(cur['size'])} ({cur['size']} bytes)"),
                      ("sha256", dash(cur["sha256"]))]
            if "manifest_digest" in cur:
                pairs += [("manifest", cur["manifest_digest"]), ("layer", cur["layer_digest"])]
            else:
                pairs += [("etag", dash(cur["etag"])),
                          ("last-modified", dash(cur["last_modified"]))]
            pairs += [("verified", f"{cur['verification']}: {cur['verified']}"),
                      ("fetched", _when(f["fetched"], now))]
        pairs.append(("checked", _when(f["checked"], now)))
        if f["set"] is not None:
            pairs.append(("boot set", f"{f['set']}, generation {f['generation']}"))
        out += [f["name"], *_fields(pairs)]
    for u in report["unmanaged"]:
        out += [u["name"], *_fields([
            ("state", "unmanaged (a plain file: `tftproxy adopt` brings it under management)"),
            ("size", f"{_human.size(u['size'])} ({u['size']} bytes)"),
            ("modified", _when(u["modified"], now))])]
    for s in report["sets"]:
        cur = next((g for g in s["generations"] if g["current"]), None)
        pairs = [("current", f"generation {s['current']}" + (
            f", published {_when(cur['published'], now)}" if cur else ""))]
        for g in _kept(s):
            pairs.append((f"kept {g['generation']}",
                          f"retired {_when(g['retired'], now)}"))
        pinned = _pinned(s)
        pairs.append(("pinned", ", ".join(pinned) if pinned else "no client"))
        checked, outcome, nxt = _sync(s, now)
        if s["sync"] is not None:
            error = f": {s['sync']['error']}" if s["sync"]["error"] else ""
            pairs.append(("revalidated", f"{checked}, {outcome}{error}; next check {nxt}"))
        out += [f"boot set {s['set']}", *_fields(pairs)]
    return out


def status_lines(report: dict[str, Any], downloads: Downloads, now: float, *,
                 long: bool) -> list[str]:
    if not report["files"] and not report["unmanaged"]:
        lines = [f"no boot files published under {report['root']}"]
    elif long:
        lines = long_lines(report, now)
    else:
        lines = file_table(report, now)
        if report["sets"]:
            lines += ["", *set_table(report, now)]
    disk = report.get("disk")
    if disk:
        lines += ["", f"disk: {_human.size(disk['free'])} free of "
                      f"{_human.size(disk['total'])}; content store "
                      f"{_human.size(disk['object_bytes'])} in {disk['objects']} object(s)"]
    return [*lines, "", *download_lines(downloads, now)]
