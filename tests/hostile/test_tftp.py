"""The TFTP service under attack, as deployed: a worker process serving the tree (classes 4
and 5, and the datagram fuzzer). Loopback addresses stand in for forged sources: they send a
request and never answer, as a forged address never does."""

from __future__ import annotations

import contextlib
import os
import random
import select
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.hostile.figures import process_usage, record
from tests.tftp.clients import need, wait_for
from tftproxy.store import BootStore
from tftproxy.tftp.packets import build_ack, build_data, build_error, build_request
from tftproxy.tftp.protocol import Policy
from tftproxy.tftp.server import ServerConfig
from tftproxy.tftp.workers import TftpHandle

SECRET = b"SECRET-OUTSIDE-THE-ROOT-" * 8
# The deployed defaults (tftp_first_retries 1), fewer slots: a flood costs less to make.
CONFIG = ServerConfig(policy=Policy(max_blksize=1468, timeout=1.0, retries=5, first_retries=1,
                                    first_timeout=1.0),
                      max_transfers=200, max_per_client=32, refresh_hold=2.0)


@pytest.fixture
def served(store: BootStore, tree: dict[str, bytes], tmp_path: Path) -> Iterator[TftpHandle]:
    """One worker process serving the test tree (its traps included)."""
    (tmp_path / "secret").write_bytes(SECRET)  # what the tree's escape links point at
    with TftpHandle(store.serving, ["127.0.0.1:0"], 1, CONFIG) as handle:
        assert wait_for(lambda: bool(handle.pids))
        port = handle.addresses[0][1]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.settimeout(0.2)
            for _ in range(50):
                probe.sendto(build_request("nothing-here"), ("127.0.0.1", port))
                try:
                    probe.recvfrom(100)
                    break
                except TimeoutError:
                    continue
        yield handle


def _curl(port: int, name: str, out: Path, timeout: float = 20) -> bytes | None:
    done = subprocess.run([need("curl"), "-sS", "--max-time", str(timeout), "--tftp-blksize",
                           "1468", "-o", str(out), f"tftp://127.0.0.1:{port}/{name}"],
                          capture_output=True, timeout=timeout + 5)
    return out.read_bytes() if done.returncode == 0 else None


def _forged(count: int, hosts: int, net: str = "127.0.1") -> list[socket.socket]:
    """Non-blocking sockets on ``hosts`` loopback addresses of ``net``: sources that send
    what the test decides and never answer on their own."""
    out = []
    for i in range(count):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((f"{net}.{1 + i % hosts}", 0))
        s.setblocking(False)
        out.append(s)
    return out


def test_a_flood_of_forged_requests_never_starves_a_real_client(served: TftpHandle,
                                                                tree: dict[str, bytes],
                                                                tmp_path: Path) -> None:
    port = served.addresses[0][1]
    pid = served.pids[0]
    before = process_usage(pid)
    options = {"timeout": "255", "blksize": "1468", "windowsize": "64", "tsize": "0"}
    sent = 0
    worst = 0.0
    for _ in range(3):  # three waves of a thousand, each larger than every slot there is
        flood = _forged(1000, 25)
        try:
            for s in flood:
                s.sendto(build_request("images/vmlinuz", "octet", options), ("127.0.0.1", port))
                sent += 1
            time.sleep(0.2)
            peak = process_usage(pid)
            started = time.monotonic()
            got = _curl(port, "images/vmlinuz", tmp_path / "legit")
            worst = max(worst, time.monotonic() - started)
            assert got == tree["images/vmlinuz"], "a real client got no file during the flood"
        finally:
            for s in flood:
                s.close()
    # Every forged transfer ends within (1 + first_retries) x timeout: no slot stays taken.
    assert wait_for(lambda: served.counters()["active"] == 0, 8)
    after = process_usage(pid)
    counters = served.counters()
    assert served.pids == [pid]  # the worker never died
    assert counters["evicted"] > 0
    assert after["fds"] <= before["fds"] + 2
    assert peak["rss_kib"] - before["rss_kib"] < 32 * 1024, (before, peak)
    record("TFTP flood of forged requests (timeout=255, windowsize=64)", requests=sent,
           slots=CONFIG.max_transfers, legit_client_worst_s=round(worst, 2),
           evicted=counters["evicted"], refused_per_host=counters["busy_client"],
           rss_kib_before=before["rss_kib"], rss_kib_peak=peak["rss_kib"],
           rss_kib_after=after["rss_kib"], fds_before=before["fds"], fds_after=after["fds"])


@pytest.mark.parametrize("options", [None, {"timeout": "255", "tsize": "0", "blksize": "1468"}],
                         ids=["no-options", "options"])
def test_a_forged_request_gets_little_back(served: TftpHandle, options) -> None:
    port = served.addresses[0][1]
    request = build_request("images/vmlinuz", "octet", options)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as victim:
        victim.bind(("127.0.1.200", 0))
        victim.sendto(request, ("127.0.0.1", port))
        victim.settimeout(0.2)
        got = []
        # An unverified transfer lives (1 + first_retries) x timeout = 2 s: watch a while longer.
        deadline = time.monotonic() + 3.5
        while time.monotonic() < deadline:
            try:
                got.append(victim.recv(65536))
            except TimeoutError:
                continue
    assert 1 <= len(got) <= 2, [len(g) for g in got]  # the answer and at most one resend
    total = sum(map(len, got))
    if options is None:
        assert total <= 2 * 516  # RFC 1350: without options the answer is DATA 1 itself
    else:
        assert max(map(len, got)) <= len(request) + 16  # an OACK is about the request's size
    record(f"TFTP amplification ({'with' if options else 'no'} options)",
           request_bytes=len(request), datagrams_back=len(got), bytes_back=total,
           factor=round(total / len(request), 1))


# ------------------------------------------------------------------- fuzzer

NAMES = ["pxelinux.0", "images/vmlinuz", "boot/grub/grubx64.efi", "escape", "boot/escape2",
         "../secret", ".tftproxy/private/meta", "kernel-link", "a" * 600, "\\..\\secret"]
OPTIONS = ["blksize", "tsize", "timeout", "windowsize", "BLKSIZE", "multicast", "rollover"]
VALUES = ["0", "1", "7", "8", "512", "1468", "65464", "65465", "99999999999", "-1", "", "255",
          "256", "64", "65535", "65536", " 5", "5_0", "\xff"]


def _mutant(rng: random.Random) -> bytes:
    """A request-shaped datagram: mostly valid, then bent in one of many ways."""
    opts = {rng.choice(OPTIONS): rng.choice(VALUES) for _ in range(rng.randrange(0, 6))}
    base = build_request(rng.choice(NAMES), rng.choice(["octet", "netascii", "mail", "OCTET"]),
                         opts)
    kind = rng.randrange(8)
    if kind == 0:
        return os.urandom(rng.randrange(0, 700))
    if kind == 1:
        return base[: rng.randrange(len(base))]  # truncated
    if kind == 2:
        data = bytearray(base)
        for _ in range(rng.randrange(1, 6)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        return bytes(data)
    if kind == 3:
        return base + b"x\x00" * rng.randrange(1, 300)  # many, or unterminated, options
    if kind == 4:
        return rng.choice([build_ack(rng.randrange(65536)), build_data(1, b"x" * 600),
                           build_error(rng.randrange(9), "no"), b"\x00\x06blksize\x00512\x00"])
    if kind == 5:
        return build_request("x" * rng.randrange(200, 5000))
    return base


def test_the_running_server_survives_a_datagram_fuzzer(served: TftpHandle,
                                                       tree: dict[str, bytes],
                                                       tmp_path: Path) -> None:
    port = served.addresses[0][1]
    pid = served.pids[0]
    rng = random.Random(11)
    before = process_usage(pid)
    socks = _forged(64, 8, "127.0.2")
    sent = received = escapes = 0
    peers: dict[int, tuple[str, int]] = {}
    deadline = time.monotonic() + 15
    try:
        while sent < 30_000 and time.monotonic() < deadline:
            i = rng.randrange(len(socks))
            s = socks[i]
            # At the service port, or at the transfer this socket was answered from.
            target = peers.get(i) if rng.random() < 0.3 else None
            payload = _mutant(rng) if target is None else rng.choice([
                build_ack(rng.randrange(65536)), build_error(rng.randrange(9), "x"),
                os.urandom(rng.randrange(0, 40)), build_ack(0), build_ack(1)])
            with contextlib.suppress(OSError):  # ICMP from an ended transfer, a full buffer
                s.sendto(payload, target or ("127.0.0.1", port))
            sent += 1
            if sent % 32 == 0:
                ready, _, _ = select.select(socks, [], [], 0)
                for r in ready:
                    try:
                        data, source = r.recvfrom(70000)
                    except OSError:
                        continue
                    received += 1
                    peers[socks.index(r)] = source
                    if b"SECRET-OUTSIDE" in data or b'"sha256"' in data:
                        escapes += 1
    finally:
        for s in socks:
            s.close()
    assert escapes == 0
    assert served.pids == [pid], "the worker died"
    got = _curl(port, "boot/grub/grubx64.efi", tmp_path / "after")
    assert got == tree["boot/grub/grubx64.efi"]
    assert wait_for(lambda: served.counters()["active"] == 0, 10)
    after = process_usage(pid)
    assert after["fds"] <= before["fds"] + 2
    counters = served.counters()
    record("TFTP datagram fuzzer (running worker)", datagrams=sent, answers_seen=received,
           escapes=escapes, crashes=0, server_errors=counters["server_errors"],
           rss_kib_before=before["rss_kib"], rss_kib_after=after["rss_kib"],
           fds_before=before["fds"], fds_after=after["fds"])
    assert counters["server_errors"] == 0
