"""Files under refresh: holds while a name is hidden, and transfers pinned to what they opened."""

from __future__ import annotations

import hashlib
import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.tftp.clients import (
    CLIENT_TIMEOUT,
    RawClient,
    curl_get,
    need,
    publish,
    running_server,
    wait_for,
)
from tftproxy.store import BootStore, Version
from tftproxy.tftp.packets import Data, Error, OAck
from tftproxy.tftp.protocol import Policy
from tftproxy.tftp.server import ServerConfig, TftpServer

NAME = "boot/vmlinuz"


@contextmanager
def refreshing(store: BootStore, name: str) -> Iterator[Callable[[bytes | None], None]]:
    """Hide ``name`` as the fetcher does for a changed version; the body calls ``finish(data)``
    to publish ``data`` (or ``finish(None)`` for a failed fetch that restores the old one)."""
    lock = store.lock(name)
    lock.acquire()
    store.transactions.begin_refresh(name, hide=True)
    done = False

    def finish(data: bytes | None) -> None:
        nonlocal done
        if data is None:
            store.transactions.abort_refresh(name)
        else:
            sha = hashlib.sha256(data).hexdigest()
            staging = store.objects.new_staging(name)
            staging.write(data)
            store.objects.ingest(staging, sha)
            store.transactions.commit(name, Version(sha256=sha, size=len(data), source="test",
                                       final_url="test", fetched_at=time.time()))
        done = True

    try:
        yield finish
    finally:
        if not done:
            store.transactions.abort_refresh(name)
        lock.release()


def receive_all(c: RawClient, blksize: int = 512,
                between: Callable[[int], None] | None = None) -> bytes:
    """Lock-step by hand after the first DATA or OACK was read by the caller's request."""
    received = bytearray()
    for block in range(1, 10**6):
        packet, _ = c.recv()
        assert isinstance(packet, Data) and packet.block == block & 0xFFFF, packet
        received += packet.payload
        if between is not None:
            between(block)
        c.ack(block)
        if len(packet.payload) < blksize:
            return bytes(received)
    raise AssertionError("transfer did not end")


def test_publish_during_a_transfer_never_changes_its_bytes(store: BootStore) -> None:
    old, new = os.urandom(40_000), os.urandom(50_000)
    publish(store, NAME, old)
    with running_server(store) as srv, RawClient(srv.addresses[0]) as c:
        c.rrq(NAME)

        def publish_new(block: int) -> None:
            if block == 1:
                publish(store, NAME, new)

        assert receive_all(c, between=publish_new) == old
        # A client new to this file gets the new version...
        with RawClient(srv.addresses[0], bind="127.0.0.2") as other:
            other.rrq(NAME)
            assert receive_all(other) == new
        # ...while this one stays on the generation it started on (the store's pins).
        with RawClient(srv.addresses[0]) as again:
            again.rrq(NAME)
            assert receive_all(again) == old


def test_request_during_refresh_is_held_then_answered_with_the_new_version(
        store: BootStore) -> None:
    old, new = os.urandom(30_000), os.urandom(31_000)
    publish(store, NAME, old)
    with running_server(store) as srv, refreshing(store, NAME) as finish, \
            RawClient(srv.addresses[0]) as c:
        raw = c.rrq(NAME, options={"tsize": "0"})
        assert c.silent(0.3)  # no ERROR 1: firmware would not retry it
        c.send_raw(raw)  # the client's retransmission is a duplicate, not a new transfer
        assert c.silent(0.2)
        counters = srv.counters.snapshot()
        assert counters["held"] == 1 and counters["duplicate_requests"] == 1
        assert counters["not_found"] == 0
        finish(new)
        packet, _ = c.recv(timeout=5)
        assert packet == OAck((("tsize", str(len(new))),))
        c.ack(0)
        assert receive_all(c) == new
        assert srv.counters.snapshot()["transfers"] == 1


def test_failed_refresh_serves_the_restored_version(store: BootStore, tmp_path: Path) -> None:
    old = os.urandom(30_000)
    publish(store, NAME, old)
    with running_server(store) as srv, refreshing(store, NAME) as finish:
        out = tmp_path / "out"
        client = subprocess.Popen([need("curl"), "-sS", "-o", str(out),
                                   f"tftp://127.0.0.1:{srv.addresses[0][1]}/{NAME}"])
        assert wait_for(lambda: srv.counters.snapshot()["held"] == 1)
        finish(None)
        assert client.wait(CLIENT_TIMEOUT) == 0
    assert out.read_bytes() == old


def test_hold_is_bounded(store: BootStore) -> None:
    """A refresh that outlasts refresh_hold: the published state is served (nothing: ERROR 1)."""
    publish(store, NAME, b"old")
    config = ServerConfig(refresh_hold=0.3)
    with running_server(store, config) as srv, refreshing(store, NAME), \
            RawClient(srv.addresses[0]) as c:
        c.rrq(NAME)
        start = time.monotonic()
        packet, _ = c.recv(timeout=5)
        assert packet == Error(1, "file not found")
        assert time.monotonic() - start >= 0.25


def test_names_not_refreshing_are_not_held(store: BootStore, server: TftpServer) -> None:
    with RawClient(server.addresses[0]) as c:
        c.rrq("never-published")
        assert c.recv(timeout=2)[0] == Error(1, "file not found")
    assert server.counters.snapshot()["held"] == 0


def test_refreshes_during_real_transfers(store: BootStore, tmp_path: Path) -> None:
    """Clients fetch while the name is refreshed again and again: each gets one whole version,
    and a request made while the name is hidden gets the version published next."""
    # Pins off: a client asking again must see the refreshes, not its first generation.
    store = BootStore(store.root, pin_window=0)
    versions = [os.urandom(400_000 + i) for i in range(6)]
    publish(store, NAME, versions[0])
    config = ServerConfig(policy=Policy(max_blksize=1468))
    stop = threading.Event()
    results: list[bytes] = []
    errors: list[str] = []

    def fetch_loop(i: int, port: int) -> None:
        n = 0
        while not stop.is_set() and n < 20:
            out = tmp_path / f"out-{i}-{n}"
            result = curl_get(port, NAME, out, blksize=512)
            if result.returncode != 0:
                errors.append(result.stderr)
            else:
                results.append(out.read_bytes())
            n += 1

    with running_server(store, config) as srv:
        port = srv.addresses[0][1]
        clients = [threading.Thread(target=fetch_loop, args=(i, port)) for i in range(4)]
        for t in clients:
            t.start()
        try:
            for data in versions[1:]:
                with refreshing(store, NAME) as finish:
                    time.sleep(0.15)  # clients arrive while the name is hidden
                    finish(data)
                time.sleep(0.1)
        finally:
            stop.set()
            for t in clients:
                t.join(CLIENT_TIMEOUT)
        counters = srv.counters.snapshot()
    assert not errors
    assert results and all(r in versions for r in results)
    assert len(set(results)) >= 2  # the refreshes did overlap the fetches
    assert counters["not_found"] == 0
    assert counters["held"] >= 1
