"""The status report: every published name and boot set, as ``GET /tftp/status`` and
``tftproxy status`` show it."""

from __future__ import annotations

from typing import Any

from tftproxy.jobs.results import iso_time
from tftproxy.store import BootStore
from tftproxy.store.adoption import unmanaged
from tftproxy.store.syncstate import SyncState
from tftproxy.store.usage import usage


def _state(state: str, hidden: bool) -> str:
    if state == "fetching":
        return "fetching (first version)"
    return "hidden (refreshing)" if hidden and state != "published" else state


# The sentences the verifiers record, by how they begin, and the one word a table shows.
_VERIFICATION_WORDS = (
    ("sha256 matches", "verified"), ("md5 matches", "verified (md5)"),
    ("sha256 is the layer's digest", "digest"), ("verification off", "off"),
    ("no checksum manifest", "no manifest"), ("adopted", "adopted"), ("alias of", "alias"),
)


def verification_word(how: str | None) -> str:
    """How a file was verified, in a word: ``verified``, ``digest``, ``no manifest``..."""
    if not how or how == "not checked":
        return "not checked"
    for start, word in _VERIFICATION_WORDS:
        if how.startswith(start):
            return word
    return "unlisted" if "not listed" in how or "outside the tree" in how else "unverified"


def status_report(store: BootStore) -> dict[str, Any]:
    """Every published name with its source, size, hash, validators and times; every set."""
    files = []
    for rec in store.records.records() if store.layout.exists() else []:
        cur = rec.current
        files.append({
            "name": rec.name,
            "state": _state(rec.state, rec.hidden),
            "current": None if cur is None else {
                "source": cur.source,
                "final_url": cur.final_url,
                "size": cur.size,
                "sha256": cur.sha256,
                "etag": cur.etag,
                "last_modified": cur.last_modified,
                "content_length": cur.content_length,
                "verified": cur.verified or "not checked",
                "verification": verification_word(cur.verified),
                **({} if cur.manifest_digest is None else {
                    "manifest_digest": cur.manifest_digest,
                    "layer_digest": f"sha256:{cur.sha256}"}),
            },
            "set": rec.set,
            "generation": rec.generation,
            "fetched": iso_time(cur.fetched_at) if cur else None,
            "checked": iso_time(rec.checked_at) if rec.checked_at else None,
        })
    sets = []
    syncs = store.sync_states.all()
    pinned = store.pins.clients() if store.layout.exists() else {}
    for srec in store.records.set_records():
        sets.append({
            "set": srec.name,
            "current": srec.current,
            "state": srec.state,
            "generations": [
                {"generation": g.number, "current": g.number == srec.current,
                 "published": iso_time(g.published_at),
                 "retired": iso_time(g.retired_at) if g.retired_at else None,
                 "members": dict(sorted(g.members.items())),
                 "pinned": pinned.get(srec.name, {}).get(g.number, [])}
                for g in srec.generations
            ],
            "sync": sync_status(syncs.get(srec.name)),
        })
    plain = [{"name": u.name, "size": u.size, "modified": iso_time(u.mtime)}
             for u in unmanaged(store.layout)]
    return {"root": str(store.root), "files": files, "sets": sets, "unmanaged": plain,
            "disk": disk_status(store)}


def disk_status(store: BootStore) -> dict[str, int] | None:
    """What the content store holds and the room left on its file system."""
    if not store.layout.exists():
        return None
    u = usage(store.layout)
    return {"objects": u.objects, "object_bytes": u.object_bytes, "total": u.disk_total,
            "free": u.disk_free}


def sync_status(state: SyncState | None) -> dict[str, Any] | None:
    """A set's revalidation: when it was last checked, its next check, the last outcome."""
    if state is None:
        return None
    return {
        "checked": iso_time(state.checked_at) if state.checked_at else None,
        "next_check": iso_time(state.next_check) if state.next_check is not None else None,
        "outcome": state.outcome,
        "from_generation": state.from_generation if state.outcome == "updated" else None,
        "generation": state.generation,
        "error": state.message,
        "failures": state.failures,
        "failed_total": state.failed_total,
        "asked": iso_time(state.asked_at) if state.asked_at else None,
    }
