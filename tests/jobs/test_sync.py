"""Revalidating whole boot sets: now (sync) and in the background, joined with requests,
backing off from a failing or flapping upstream, never losing the last good generation."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import threading
import time
from collections.abc import Callable
from pathlib import Path

from tests.helpers.upstream import Reply, Seen, Upstream, static
from tftproxy.store import BootStore

K1, I1 = b"kernel 9.3 " * 3000, b"initrd 9.3 " * 9000
K2, I2 = b"kernel 9.4 " * 3100, b"initrd 9.4 " * 9100
KERNEL, INITRD = "/os/images/pxeboot/vmlinuz", "/os/images/pxeboot/initrd.img"


def serve_pair(upstream: Upstream, kernel: bytes, initrd: bytes, tag: str) -> None:
    upstream.routes[KERNEL] = static(kernel, etag=f'"k{tag}"')
    upstream.routes[INITRD] = static(initrd, etag=f'"i{tag}"')


async def publish(proxy, upstream: Upstream, prefix: str = "boot/s") -> None:
    for path in (KERNEL, INITRD):
        status, _, body = await proxy.fetch_boot_file(prefix, upstream.url(path))
        assert status == 200, body
    upstream.seen.clear()


def pair(root: Path, prefix: str = "boot/s") -> tuple[bytes, bytes]:
    return ((root / f"{prefix}-vmlinuz").read_bytes(),
            (root / f"{prefix}-initrd.img").read_bytes())


def member_requests(upstream: Upstream) -> list[Seen]:
    return [s for s in upstream.seen if s.path in (KERNEL, INITRD)]


async def test_a_sync_checks_every_member_and_publishes_one_generation(
        api, upstream: Upstream, root: Path) -> None:
    serve_pair(upstream, K1, I1, "1")
    proxy = await api()
    await publish(proxy, upstream)
    # Only the initrd is respun: a request for the kernel alone would not notice.
    upstream.routes[INITRD] = static(I2, etag='"i2"')
    run = await proxy.files.sync.sync()
    assert await run.wait(20)
    [outcome] = run.outcomes.values()
    assert (outcome.status, outcome.from_generation, outcome.generation) == ("updated", 2, 3)
    assert {f.name: f.status for f in outcome.files} == {
        "boot/s-vmlinuz": "unchanged", "boot/s-initrd.img": "published"}
    assert pair(root) == (K1, I2)
    kernel = [s for s in upstream.seen if s.path == KERNEL]
    assert [s.headers.get("if-none-match") for s in kernel] == ['"k1"']
    # Up to date now: one conditional request per member and nothing else (no manifests).
    upstream.seen.clear()
    run = await proxy.files.sync.sync(["boot/s"])
    assert await run.wait(20)
    assert run.outcomes["boot/s"].line() == "unchanged: boot/s generation 3"
    assert sorted((s.path, s.headers.get("if-none-match")) for s in upstream.seen) == [
        (INITRD, '"i2"'), (KERNEL, '"k1"')]


async def test_a_failing_member_keeps_the_last_good_generation(
        api, upstream: Upstream, root: Path) -> None:
    serve_pair(upstream, K1, I1, "1")
    proxy = await api()
    await publish(proxy, upstream)
    upstream.routes[KERNEL] = static(K2, etag='"k2"')
    upstream.routes[INITRD] = lambda s: Reply(404, "Not Found", body=b"mid-sync")
    run = await proxy.files.sync.sync()
    assert await run.wait(20)
    outcome = run.outcomes["boot/s"]
    assert outcome.status == "failed" and outcome.generation == 2
    assert outcome.message is not None
    assert "boot/s-initrd.img: HTTP 404 Not Found" in outcome.message
    assert outcome.message.endswith("previous version kept")
    assert pair(root) == (K1, I1)
    srec = proxy.files.store.store.records.set_record("boot/s")
    assert srec is not None and srec.current == 2
    assert list((root / ".tftproxy/private/staging").iterdir()) == []


async def test_a_sync_joins_a_request_that_is_changing_the_set(
        api, upstream: Upstream, root: Path) -> None:
    serve_pair(upstream, K1, I1, "1")
    proxy = await api()
    await publish(proxy, upstream)
    gate = threading.Event()
    upstream.routes[KERNEL] = lambda s: Reply(body=K2, headers={"ETag": '"k2"'},
                                              pause_at=10_000, pause=gate)
    request = asyncio.create_task(proxy.fetch_boot_file("boot/s", upstream.url(KERNEL)))
    for _ in range(500):
        if upstream.requests_for(KERNEL):
            break
        await asyncio.sleep(0.01)
    run = await proxy.files.sync.sync(["boot/s"])
    await asyncio.sleep(0.2)
    assert not run.done
    gate.set()
    status, _, body = await request
    assert (status, body["status"], body["generation"]) == (200, "published", 3)
    assert await run.wait(20)
    assert run.outcomes["boot/s"].line() == "updated: boot/s generation 2 -> 3"
    # Joined, not repeated: the kernel was fetched once, the initrd checked once.
    assert [s.path for s in member_requests(upstream)].count(KERNEL) == 1
    assert [s.path for s in member_requests(upstream)].count(INITRD) == 1


async def test_requests_during_a_sync_join_it_and_nothing_is_hidden(
        api, upstream: Upstream, root: Path) -> None:
    serve_pair(upstream, K1, I1, "1")
    proxy = await api()  # refresh_mode hide: a request would hide the set; a sync does not
    await publish(proxy, upstream)
    gate = threading.Event()
    upstream.routes[KERNEL] = static(K2, etag='"k2"')
    upstream.routes[INITRD] = lambda s: Reply(body=I2, headers={"ETag": '"i2"'},
                                              pause_at=20_000, pause=gate)
    run = await proxy.files.sync.sync()
    for _ in range(500):
        if upstream.requests_for(INITRD):
            break
        await asyncio.sleep(0.01)
    joined = asyncio.create_task(proxy.fetch_boot_file("boot/s", upstream.url(INITRD)))
    for _ in range(20):
        await asyncio.sleep(0.01)
        assert pair(root) == (K1, I1)  # the old generation is served until the switch
    assert proxy.files.store.store.serving.is_refreshing("boot/s-initrd.img") is False
    gate.set()
    status, _, body = await joined
    assert await run.wait(20)
    assert (status, body["status"]) == (200, "published")
    assert body["generation"] == run.outcomes["boot/s"].generation == 3
    assert len(upstream.requests_for(INITRD)) == 1
    assert pair(root) == (K2, I2)


def recorder(times: list[float], reply: Callable[[Seen], Reply]) -> Callable[[Seen], Reply]:
    def handle(seen: Seen) -> Reply:
        times.append(time.monotonic())
        return reply(seen)

    return handle


async def test_a_failing_upstream_is_backed_off_and_the_last_good_generation_stays(
        api, upstream: Upstream, root: Path) -> None:
    serve_pair(upstream, K1, I1, "1")
    proxy = await api(sync_interval=0.5, sync_jitter=0, sync_retry=0.2, sync_backoff_max=1.6)
    await publish(proxy, upstream)
    times: list[float] = []  # one initrd request per check: each checks both members
    down = Reply(503, "Service Unavailable", body=b"down")
    upstream.routes[INITRD] = recorder(times, lambda s: down)
    upstream.routes[KERNEL] = lambda s: down
    proxy.files.sync.start()
    await asyncio.sleep(4.5)
    # Every 0.5 s would be 9 checks; the backoff (0.2, 0.4, 0.8, 1.6 s...) allows 5 at most.
    assert 3 <= len(times) <= 6, times
    assert len(member_requests(upstream)) == 2 * len(times)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    for i, gap in enumerate(gaps):
        assert gap >= 0.9 * min(0.2 * 2**i, 1.6), gaps
    assert pair(root) == (K1, I1)
    state = proxy.files.store.store.sync_states.get("boot/s")
    assert state is not None and state.outcome == "failed" and state.failures == len(times)
    assert state.generation == 2 and state.message and "HTTP 503" in state.message
    # The upstream comes back: the next check succeeds and the backoff is forgotten.
    serve_pair(upstream, K1, I1, "1")
    for _ in range(400):
        state = proxy.files.store.store.sync_states.get("boot/s")
        if state is not None and state.outcome == "unchanged":
            break
        await asyncio.sleep(0.01)
    assert state is not None and (state.outcome, state.failures) == ("unchanged", 0)
    assert state.failed_total == len(times)
    assert state.next_check is not None and state.next_check - state.checked_at >= 0.45


async def test_a_flapping_upstream_never_publishes_a_mixed_or_partial_generation(
        api, upstream: Upstream, root: Path) -> None:
    serve_pair(upstream, K1, I1, "1")
    proxy = await api(sync_interval=0.3, sync_jitter=0, sync_retry=0.1, sync_backoff_max=0.4)
    await publish(proxy, upstream)
    # A mirror mid-sync: the new kernel is there, the initrd breaks a different way each
    # time (truncated, 503, reset), then is complete.
    faults = [Reply(body=I2, headers={"ETag": '"i2"'}, cut_at=30_000),
              Reply(503, "Service Unavailable", body=b"busy"),
              Reply(body=I2, headers={"ETag": '"i2"'}, cut_at=50_000, then="reset")]
    times: list[float] = []

    def initrd(seen: Seen) -> Reply:
        times.append(time.monotonic())
        if len(times) <= len(faults):
            return faults[len(times) - 1]
        return static(I2, etag='"i2"')(seen)

    upstream.routes[KERNEL] = static(K2, etag='"k2"')
    upstream.routes[INITRD] = initrd
    seen: set[tuple[bytes, bytes]] = set()
    store = BootStore(root, create=False)
    proxy.files.sync.start()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        # The names are never missing and each is whole, an old or a new version.
        kernel, initrd_now = pair(root)
        assert kernel in (K1, K2) and initrd_now in (I1, I2)
        seen.add((kernel, initrd_now))
        srec = store.records.set_record("boot/s")
        if srec is not None and srec.current == 3:
            break
        await asyncio.sleep(0.005)
    assert pair(root) == (K2, I2)
    assert len(times) == len(faults) + 1
    srec = store.records.set_record("boot/s")
    assert srec is not None
    shas = {g.number: set(g.members.values()) for g in srec.generations}
    k = {data: hashlib.sha256(data).hexdigest() for data in (K1, I1, K2, I2)}
    # Generation 1 was the kernel alone; 2 the old pair; 3 the new pair; nothing between.
    assert shas == {1: {k[K1]}, 2: {k[K1], k[I1]}, 3: {k[K2], k[I2]}}
    # Throughout the failures the old pair was served (readers' pairs are the pins' business:
    # tests/tftp/test_sync.py reads them with real clients).
    assert (K1, I1) in seen


async def test_idle_sets_are_left_alone_and_sets_in_use_kept_current(
        api, upstream: Upstream, root: Path) -> None:
    serve_pair(upstream, K1, I1, "1")
    proxy = await api(sync_interval=0.3, sync_jitter=0, sync_idle_after=2.0,
                      sync_idle_interval=0)
    await publish(proxy, upstream, "boot/old")
    await asyncio.sleep(2.2)
    await publish(proxy, upstream, "boot/new")  # asked for now; boot/old 2.2 s ago
    proxy.files.sync.start()
    await asyncio.sleep(1.5)
    ifnm = [s.headers.get("if-none-match") for s in member_requests(upstream)]
    # Only boot/new was checked (its members twice or more), always conditionally.
    assert len(ifnm) >= 4 and set(ifnm) == {'"k1"', '"i1"'}
    states = proxy.files.store.store.sync_states.all()
    assert states["boot/new"].outcome == "unchanged"
    assert states["boot/old"].outcome is None and states["boot/old"].next_check is None


async def test_prefetched_sets_are_fetched_at_start_without_a_request(
        make_settings, upstream: Upstream, root: Path) -> None:
    from tftproxy import assemble
    from tftproxy.settings.model import PrefetchEntry

    serve_pair(upstream, K1, I1, "1")
    entry = PrefetchEntry(prefix="boot/pre", urls=[upstream.url(KERNEL), upstream.url(INITRD)])
    settings = make_settings(sync_interval=0, prefetch=[entry])
    before = 0.0
    for expected in ("updated", "unchanged"):  # a first start, then a restart
        files = assemble.boot_files(settings)
        await files.recover()
        files.sync.start()
        for _ in range(1000):
            state = files.store.store.sync_states.get("boot/pre")
            if state is not None and state.checked_at > before:
                break
            await asyncio.sleep(0.01)
        before = state.checked_at if state is not None else 0.0
        await files.close()
        assert state is not None and state.outcome == expected, state
        assert pair(root, "boot/pre") == (K1, I1)
        assert state.generation == 2 and state.next_check is None
    # Downloaded once; every later request (adding the initrd, the restart) conditional.
    for path in (KERNEL, INITRD):
        asked = [s.headers.get("if-none-match") for s in upstream.requests_for(path)]
        assert asked[0] is None and len(asked) >= 2 and None not in asked[1:], asked
    assert list((root / ".tftproxy/private/staging").iterdir()) == []


async def test_a_round_is_polite_to_each_upstream_host(api, upstream: Upstream) -> None:
    lock = threading.Lock()
    now_in: dict[str, int] = {"127.0.0.1": 0, "localhost": 0}
    peak = dict(now_in)

    def slow(body: bytes, tag: str) -> Callable[[Seen], Reply]:
        inner = static(body, etag=f'"{tag}"')

        def handle(seen: Seen) -> Reply:
            host = seen.headers["host"].rsplit(":", 1)[0]
            with lock:
                now_in[host] += 1
                peak[host] = max(peak[host], now_in[host])
            time.sleep(0.15)
            with lock:
                now_in[host] -= 1
            return inner(seen)

        return handle

    proxy = await api(sync_concurrency=3, sync_host_concurrency=1)
    prefixes = []
    for i in range(3):
        for host in ("127.0.0.1", "localhost"):  # two names, two upstream hosts
            for f in ("vmlinuz", "initrd.img"):
                upstream.routes[f"/m{i}/{f}"] = slow(f"{f} {i}".encode() * 500, f"{i}{f}")
                url = f"http://{host}:{upstream.port}/m{i}/{f}"
                status, _, body = await proxy.fetch_boot_file(f"boot/{host}-{i}", url)
                assert status == 200, body
            prefixes.append(f"boot/{host}-{i}")
    for host in peak:
        peak[host] = 0
    upstream.seen.clear()
    run = await proxy.files.sync.sync()
    assert await run.wait(60)
    assert sorted(run.outcomes) == sorted(prefixes)
    assert {o.status for o in run.outcomes.values()} == {"unchanged"}
    assert len(upstream.seen) == 12
    # One set per host at a time, its two members checked together: two requests at most.
    assert peak == {"127.0.0.1": 2, "localhost": 2}


async def test_overdue_sets_are_spread_over_the_jitter_window_and_stay_put(root: Path) -> None:
    import random

    from tftproxy.jobs.catalogue import Catalogue
    from tftproxy.jobs.options import SyncOptions
    from tftproxy.store import Version
    from tftproxy.store.aio import AsyncStore

    store = BootStore(root)
    long_ago = time.time() - 7200  # an older release's tree, never revalidated: overdue
    for i in range(20):
        data = f"kernel {i}".encode()
        sha = hashlib.sha256(data).hexdigest()
        staging = store.objects.new_staging(f"boot/o{i}-vmlinuz")
        staging.write(data)
        store.objects.ingest(staging, sha)
        store.transactions.publish_generation(f"boot/o{i}", {f"boot/o{i}-vmlinuz": Version(
            sha256=sha, size=len(data), source=f"http://m/o{i}/vmlinuz",
            final_url=f"http://m/o{i}/vmlinuz", fetched_at=long_ago)}, long_ago)
    aio = AsyncStore(store)
    try:
        catalogue = Catalogue(aio, SyncOptions(interval=3600.0, jitter=0.1), random.random)
        catalogue.background = True
        now = time.time()
        await catalogue.refresh(now, ())
        first = {s: e.state.next_check for s, e in catalogue.entries.items()}
        assert len(first) == 20 and len(set(first.values())) == 20
        assert all(n is not None and now <= n <= now + 360 for n in first.values())
        # Re-read (as every 30 s): nobody is pushed back, and the schedule is on disk.
        await catalogue.refresh(time.time(), ())
        assert {s: e.state.next_check for s, e in catalogue.entries.items()} == first
        assert {s: st.next_check for s, st in store.sync_states.all().items()} == first
        assert [e.set for e in catalogue.due(now + 400, ())] == sorted(
            first, key=lambda s: first[s] or 0.0)
        # A restart with a longer interval keeps them; none is due before its time.
        later = Catalogue(aio, SyncOptions(interval=7200.0, jitter=0.1), random.random)
        later.background = True
        await later.refresh(time.time(), ())
        assert {s: e.state.next_check for s, e in later.entries.items()} == first
        assert later.due(now, ()) == []
    finally:
        await aio.close()
