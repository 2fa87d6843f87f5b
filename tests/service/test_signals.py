"""Signals as an admin sends them (systemctl reload/stop, logrotate) to a real `tftproxy serve`:
SIGHUP reloads and never stops, SIGTERM drains, and systemd is told each step."""

from __future__ import annotations

import hashlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.service import Serve
from tests.helpers.upstream import Reply, Upstream
from tests.tftp.clients import RawClient, publish
from tftproxy.store import BootStore
from tftproxy.tftp.packets import Data, Error, OAck


@pytest.fixture
def served(tmp_path: Path, store: BootStore) -> Iterator[Serve]:
    publish(store, "boot/kernel", os.urandom(600 * 512 + 7))
    service = Serve(tmp_path / "svc", store.root, {"drain_timeout": 20})
    yield service
    service.stop(signal.SIGKILL)


def test_sighup_applies_what_can_change_and_never_stops(served: Serve) -> None:
    assert served.get("/tftp/status")[0] == 200
    served.write_settings(log_level="DEBUG", trusted_hosts=["foreman.example.com"],
                          listen="127.0.0.1:1")
    served.send(signal.SIGHUP)
    assert served.wait_note("RELOADING=1")
    assert served.wait_log("reloaded settings:")
    log = served.log_text()
    assert "log_level 'INFO' -> 'DEBUG'" in log
    assert "trusted_hosts None -> ['foreman.example.com']" in log
    assert "listen changed" in log and "takes effect only after a restart" in log
    # trusted_hosts took effect (127.0.0.1 is not foreman.example.com); the old port serves.
    status, body = served.get("/tftp/status")
    assert status == 403 and "Untrusted client" in body
    assert served.get("/features")[0] == 200

    served.config.write_text("log_level: [unclosed\n")
    served.send(signal.SIGHUP)
    assert served.wait_log("reload failed, nothing changed")
    assert served.proc.poll() is None
    assert served.get("/features")[0] == 200
    assert served.stop() == 0
    assert "STOPPING=1" in served.notes


def _start_transfer(port: int, name: str) -> RawClient:
    client = RawClient(("127.0.0.1", port))
    client.rrq(name, options={"blksize": "512", "timeout": "5"})
    assert isinstance(client.recv()[0], OAck)
    return client


def test_sigterm_lets_a_running_transfer_finish(served: Serve, store: BootStore) -> None:
    data = (store.root / "boot/kernel").read_bytes()
    assert served.tftp_port is not None
    client = _start_transfer(served.tftp_port, "boot/kernel")
    received = bytearray()
    client.ack(0)
    packet, _ = client.recv()
    assert isinstance(packet, Data)
    received += packet.payload
    served.send(signal.SIGTERM)
    assert served.wait_note("STOPPING=1")
    assert served.wait_log("TFTP worker draining")
    # Stop accepting: a new request is not answered ...
    with RawClient(("127.0.0.1", served.tftp_port)) as late:
        late.rrq("boot/kernel")
        assert late.silent(1.0)
    # ... while the transfer in progress goes on to its last block.
    block = packet.block
    while True:
        client.ack(block)
        packet, _ = client.recv()
        assert isinstance(packet, Data) and packet.block == (block + 1) & 0xFFFF
        received += packet.payload
        block = packet.block
        if len(packet.payload) < 512:
            client.ack(block)
            break
    client.close()
    assert bytes(received) == data
    served.proc.wait(30)
    assert served.proc.returncode == 0
    assert "TFTP worker drained" in served.log_text()


def test_sigterm_ends_what_outlives_the_drain_with_an_error(tmp_path: Path,
                                                              store: BootStore) -> None:
    publish(store, "boot/kernel", os.urandom(600 * 512))
    served = Serve(tmp_path / "svc", store.root, {"drain_timeout": 1})
    try:
        assert served.tftp_port is not None
        client = _start_transfer(served.tftp_port, "boot/kernel")
        served.send(signal.SIGTERM)
        # The client stalls (no ACK of the OACK): after the drain it is told, not left waiting.
        deadline_packets = []
        for _ in range(20):
            packet, _ = client.recv(timeout=10)
            deadline_packets.append(packet)
            if isinstance(packet, Error):
                break
        assert deadline_packets[-1] == Error(0, "server shutting down")
        client.close()
        served.proc.wait(30)
        assert served.proc.returncode == 0
        log = served.log_text()
        assert "ending 1 transfer(s) in progress" in log
        assert "'boot/kernel'" in log and "shutdown: server stopping" in log
    finally:
        served.stop(signal.SIGKILL)


def test_sigterm_aborts_a_slow_fetch_and_keeps_the_previous_version(
        tmp_path: Path, store: BootStore, upstream: Upstream) -> None:
    old = os.urandom(50_000)
    new = os.urandom(400_000)
    upstream.routes["/os/vmlinuz"] = lambda seen: Reply(
        body=old, headers={"ETag": '"v1"'})
    served = Serve(tmp_path / "svc", store.root, {"drain_timeout": 1, "fetch_wait": 1},
                   tftp=False)
    try:
        url = upstream.url("/os/vmlinuz")
        assert served.post("/tftp/fetch_boot_file", {"prefix": "boot/c", "path": url})[0] == 200
        # A respin arrives over a slow link: the new version takes far longer than the drain.
        upstream.routes["/os/vmlinuz"] = lambda seen: Reply(
            body=new, headers={"ETag": '"v2"'}, chunk=4096, chunk_delay=0.05)
        status, _ = served.post("/tftp/fetch_boot_file", {"prefix": "boot/c", "path": url})
        assert status == 202  # still downloading after fetch_wait
        served.send(signal.SIGTERM)
        served.proc.wait(30)
        assert served.proc.returncode == 0
        log = served.log_text()
        assert f"aborted fetch of {url} for boot/c-vmlinuz" in log
        assert "previous version put back" in log
        assert f"aborted fetches: boot/c-vmlinuz <- {url}" in log
        published = (store.root / "boot/c-vmlinuz").read_bytes()
        assert hashlib.sha256(published).digest() == hashlib.sha256(old).digest()
    finally:
        served.stop(signal.SIGKILL)


def test_the_watchdog_is_fed_while_the_service_runs(tmp_path: Path, store: BootStore) -> None:
    served = Serve(tmp_path / "svc", store.root, env={"WATCHDOG_USEC": "1000000"})
    try:
        assert served.wait_note("WATCHDOG=1", 3)
        served.notes.clear()
        assert served.wait_note("WATCHDOG=1", 3)  # fed again, every half period
    finally:
        served.stop()
    # Not ours to feed: a WATCHDOG_PID naming another process.
    other = Serve(tmp_path / "svc2", store.root,
                  env={"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"})
    try:
        assert not other.wait_note("WATCHDOG=1", 2)
    finally:
        other.stop()
