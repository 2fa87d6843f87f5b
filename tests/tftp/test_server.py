"""Our server at packet level over real loopback sockets: the rules a client can observe."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.tftp.clients import (
    RawClient,
    curl_get,
    free_udp_port,
    running_server,
    wait_for,
    wait_ready,
)
from tftproxy.assemble import start_tftp
from tftproxy.settings.model import Settings
from tftproxy.store import BootStore
from tftproxy.tftp.packets import Data, Error, OAck, build_ack, build_data, build_request
from tftproxy.tftp.protocol import Policy
from tftproxy.tftp.server import ServerConfig, TftpServer


def test_missing_file_is_error_1_at_once_from_a_new_port(port: int) -> None:
    with RawClient(("127.0.0.1", port)) as c:
        c.rrq("pxelinux.cfg/01-52-54-00-aa-bb-cc")
        packet, source = c.recv(timeout=2)
        assert packet == Error(1, "file not found")
        assert source[0] == "127.0.0.1" and source[1] != port


@pytest.mark.parametrize(("raw", "code"), [
    (build_request("pxelinux.0", write=True), 2),
    (build_request("pxelinux.0", "mail"), 4),
    (b"\x00\x01pxelinux.0\x00", 4),  # no mode
    (b"\x00\x01\x00octet\x00", 4),  # no file name
])
def test_refused_requests(port: int, server: TftpServer, raw: bytes, code: int) -> None:
    with RawClient(("127.0.0.1", port)) as c:
        c.send_raw(raw)
        packet, _ = c.recv(timeout=2)
        assert isinstance(packet, Error) and packet.code == code
    assert server.counters.snapshot()["transfers"] == 0


@pytest.mark.parametrize("raw", [build_ack(1), build_data(1, b"x"), b"\x00\x05\x00\x01x\x00",
                                 b"", b"\x00", b"\xff\xff\xff", b"\x00\x06blksize\x00512\x00"])
def test_non_requests_to_the_service_port_get_no_answer(port: int, server: TftpServer,
                                                        raw: bytes) -> None:
    with RawClient(("127.0.0.1", port)) as c:
        c.send_raw(raw)
        assert c.silent(0.3)
        c.rrq("missing")  # the server is still there
        assert c.recv(timeout=2)[0] == Error(1, "file not found")


def test_paths_are_the_stores(port: int, tree: dict[str, bytes]) -> None:
    cases = {"/pxelinux.0": "pxelinux.0", "\\boot\\grub\\grubx64.efi": "boot/grub/grubx64.efi",
             "boot/../pxelinux.0": "pxelinux.0", "kernel-link": "images/vmlinuz"}
    for requested, name in cases.items():
        with RawClient(("127.0.0.1", port)) as c:
            c.rrq(requested, options={"tsize": "0"})
            packet, _ = c.recv(timeout=2)
            assert packet == OAck((("tsize", str(len(tree[name]))),)), requested
    for refused in ("../secret", "escape", "boot/escape2", "boot", "/", ".tftproxy/private",
                    ".tftproxy/private/meta", "a/../../secret"):
        with RawClient(("127.0.0.1", port)) as c:
            c.rrq(refused)
            assert c.recv(timeout=2)[0] == Error(2, "access violation"), refused


def test_lock_step_transfer_by_hand(port: int, tree: dict[str, bytes]) -> None:
    data = tree["pxelinux.0"]
    with RawClient(("127.0.0.1", port)) as c:
        c.rrq("pxelinux.0", options={"blksize": "1468", "tsize": "0", "timeout": "1"})
        assert c.recv()[0] == OAck((("blksize", "1468"), ("tsize", str(len(data))),
                                    ("timeout", "1")))
        received = bytearray()
        c.ack(0)
        for block in range(1, 100):
            packet, _ = c.recv()
            assert isinstance(packet, Data) and packet.block == block
            received += packet.payload
            c.ack(block)
            if len(packet.payload) < 1468:
                break
        assert bytes(received) == data


def test_duplicate_ack_gets_no_second_block(port: int) -> None:
    with RawClient(("127.0.0.1", port)) as c:
        c.rrq("images/vmlinuz")
        assert isinstance(c.recv()[0], Data)
        c.ack(1)
        c.ack(1)
        c.ack(1)
        packet, _ = c.recv()
        assert isinstance(packet, Data) and packet.block == 2
        assert c.silent(0.3)  # the timer (1 s) has not fired; nothing answered the duplicates


def test_duplicate_request_does_not_start_a_second_transfer(port: int,
                                                            server: TftpServer) -> None:
    with RawClient(("127.0.0.1", port)) as c:
        raw = c.rrq("images/vmlinuz", options={"tsize": "0"})
        c.send_raw(raw)
        c.send_raw(raw)
        first, source = c.recv()
        assert isinstance(first, OAck)
        assert c.silent(0.3)
        counters = server.counters.snapshot()
        assert counters["transfers"] == 1 and counters["duplicate_requests"] == 2
        # Once the client has answered, the same port asking again is a new request.
        c.ack(0)
        assert isinstance(c.recv()[0], Data)
        c.peer = None
        c.send_raw(raw)
        again, new_source = c.recv()
        assert isinstance(again, OAck) and new_source != source
    assert wait_for(lambda: server.counters.snapshot()["superseded"] == 1)


def test_uefi_size_probe(port: int, server: TftpServer, tree: dict[str, bytes],
                         caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "tftproxy.tftp")
    with RawClient(("127.0.0.1", port)) as c:
        c.rrq("boot/grub/grubx64.efi", options={"tsize": "0", "blksize": "1468"})
        packet, _ = c.recv()
        assert packet == OAck((("tsize", str(len(tree["boot/grub/grubx64.efi"]))),
                               ("blksize", "1468")))
        c.error(8, "")
        assert c.silent(0.2)
    assert wait_for(lambda: server.counters.snapshot()["probes"] == 1)
    counters = server.counters.snapshot()
    assert counters["client_errors"] == counters["timeouts"] == 0
    assert any(r.getMessage().endswith(", probe") and r.levelno == logging.INFO
               for r in caplog.records)


def test_unanswered_transfer_gives_up_after_bounded_retries(store: BootStore,
                                                            tree: dict[str, bytes]) -> None:
    # Unanswered means unverified: first_retries bounds it, whatever retries allows later.
    config = ServerConfig(policy=Policy(timeout=0.1, retries=5, first_retries=2))
    with running_server(store, config) as srv, RawClient(srv.addresses[0]) as c:
        c.rrq("pxelinux.0")
        blocks = [c.recv()[0] for _ in range(3)]  # the first send and two resends
        assert blocks == [blocks[0]] * 3 and isinstance(blocks[0], Data)
        assert c.silent(0.5)
        counters = srv.counters.snapshot()
        assert counters["timeouts"] == 1 and counters["retransmits"] == 2
        assert counters["active"] == 0


def test_client_gone_ends_the_transfer(store: BootStore, tree: dict[str, bytes]) -> None:
    config = ServerConfig(policy=Policy(timeout=0.1, retries=50))
    with running_server(store, config) as srv:
        c = RawClient(srv.addresses[0])
        c.rrq("pxelinux.0")
        c.recv()
        c.close()  # ICMP port unreachable answers the next resend
        assert wait_for(lambda: srv.counters.snapshot()["client_gone"] == 1)
        assert srv.counters.snapshot()["active"] == 0


def test_busy_server_stays_silent(store: BootStore, tree: dict[str, bytes]) -> None:
    config = ServerConfig(policy=Policy(timeout=5.0), max_transfers=1)
    with running_server(store, config) as srv, RawClient(srv.addresses[0]) as a, \
            RawClient(srv.addresses[0]) as b:
        a.rrq("pxelinux.0")
        assert isinstance(a.recv()[0], Data)
        a.ack(1)  # a real client: its transfer is never evicted for a newcomer
        assert isinstance(a.recv()[0], Data)
        b.rrq("pxelinux.0")
        assert b.silent(0.3)  # no ERROR: firmware would give up; silence makes it retry
        assert srv.counters.snapshot()["busy"] == 1


def test_a_full_server_evicts_the_oldest_unverified_transfer(store: BootStore,
                                                             tree: dict[str, bytes]) -> None:
    config = ServerConfig(policy=Policy(timeout=5.0), max_transfers=2)
    with running_server(store, config) as srv, RawClient(srv.addresses[0]) as a, \
            RawClient(srv.addresses[0]) as b, RawClient(srv.addresses[0]) as c:
        for client in (a, b):
            client.rrq("pxelinux.0")
            assert isinstance(client.recv()[0], Data)
        b.ack(1)
        assert isinstance(b.recv()[0], Data)
        c.rrq("pxelinux.0")  # every slot is taken: a never answered, so c gets its slot
        assert isinstance(c.recv()[0], Data)
        assert wait_for(lambda: srv.counters.snapshot()["evicted"] == 1)
        a.ack(1)
        assert a.silent(0.3)  # a's transfer is gone
        b.ack(2)
        assert isinstance(b.recv()[0], Data)  # b's goes on


def test_one_host_cannot_take_every_slot(store: BootStore, tree: dict[str, bytes]) -> None:
    config = ServerConfig(policy=Policy(timeout=5.0), max_per_client=2)
    with running_server(store, config) as srv:
        clients = [RawClient(srv.addresses[0]) for _ in range(3)]
        try:
            for client in clients[:2]:
                client.rrq("pxelinux.0")
                assert isinstance(client.recv()[0], Data)
            clients[2].rrq("pxelinux.0")
            assert clients[2].silent(0.3)
            assert srv.counters.snapshot()["busy_client"] == 1
            with RawClient(srv.addresses[0], bind="127.0.0.2") as other:
                other.rrq("pxelinux.0")  # another host still gets its transfer
                assert isinstance(other.recv()[0], Data)
        finally:
            for client in clients:
                client.close()


def test_netascii_on_the_wire(port: int) -> None:
    with RawClient(("127.0.0.1", port)) as c:
        c.rrq("plain.txt", "netascii", options={"tsize": "0", "blksize": "8"})
        assert c.recv()[0] == OAck((("blksize", "8"),))  # no tsize in netascii
        c.ack(0)
        received = bytearray()
        for block in range(1, 10):
            packet, _ = c.recv()
            assert isinstance(packet, Data)
            received += packet.payload
            c.ack(block)
            if len(packet.payload) < 8:
                break
        assert bytes(received) == b"plain\r\x00\r\nfile\r\n"


def test_windowed_transfer_by_hand(port: int, tree: dict[str, bytes]) -> None:
    data = tree["images/vmlinuz"]
    with RawClient(("127.0.0.1", port)) as c:
        c.rrq("images/vmlinuz", options={"blksize": "1024", "windowsize": "8"})
        assert c.recv()[0] == OAck((("blksize", "1024"), ("windowsize", "8")))
        c.ack(0)
        got = [c.recv()[0] for _ in range(8)]
        assert [p.block for p in got if isinstance(p, Data)] == list(range(1, 9))
        assert b"".join(p.payload for p in got if isinstance(p, Data)) == data[: 8 * 1024]
        c.ack(3)  # a gap after 3: the window restarts at 4
        again = [c.recv()[0] for _ in range(8)]
        assert [p.block for p in again if isinstance(p, Data)] == list(range(4, 12))


def test_wildcard_listener_answers_from_the_address_asked(store: BootStore,
                                                          tree: dict[str, bytes]) -> None:
    with running_server(store, None, ("0.0.0.0:0",)) as srv:
        port = srv.addresses[0][1]
        for address in ("127.0.0.1", "127.0.0.2", "127.3.4.5"):
            with RawClient((address, port)) as c:
                c.rrq("pxelinux.0")
                packet, source = c.recv()
                assert isinstance(packet, Data)
                assert source[0] == address  # PXE ROMs drop answers from another address


def test_names_that_cannot_exist_are_not_found(port: int) -> None:
    for name in ("pxelinux.0/inside-a-file", "x" * 300, "a/" * 2000 + "b"):
        with RawClient(("127.0.0.1", port)) as c:
            c.rrq(name)
            assert c.recv(timeout=2)[0] == Error(1, "file not found"), name[:40]


def test_ipv6_wildcard_answers_from_the_address_asked(store: BootStore,
                                                      tree: dict[str, bytes]) -> None:
    with running_server(store, None, ("[::]:0",)) as srv, \
            RawClient(("::1", srv.addresses[0][1]), socket.AF_INET6, "::1") as c:
        c.rrq("pxelinux.0")
        packet, source = c.recv()
        assert isinstance(packet, Data) and source[0] == "::1"


def test_ipv6_by_hand(store: BootStore, tree: dict[str, bytes]) -> None:
    with running_server(store, None, ("[::1]:0",)) as srv, \
            RawClient(("::1", srv.addresses[0][1]), socket.AF_INET6, "::1") as c:
        c.rrq("missing")
        assert c.recv()[0] == Error(1, "file not found")
        c.peer = None
        c.rrq("pxelinux.0")
        packet, source = c.recv()
        assert isinstance(packet, Data) and source[0] == "::1"


# ------------------------------------------------------------------ processes


def test_worker_processes(store: BootStore, tree: dict[str, bytes], tmp_path: Path) -> None:
    settings = Settings.model_validate(
        {"tftproot": store.root, "tftp_listen": ["127.0.0.1:0"], "tftp_workers": 2})
    handle = start_tftp(settings, store.serving)
    try:
        port = handle.addresses[0][1]
        assert len(handle.pids) == 2
        # Many client ports, so the kernel spreads them over both workers.
        procs = [subprocess.Popen(["curl", "-sS", "--tftp-blksize", "1468", "-o",
                                   str(tmp_path / f"out{i}"), f"tftp://127.0.0.1:{port}/pxelinux.0"])
                 for i in range(12)]
        assert all(p.wait(60) == 0 for p in procs)
        for i in range(12):
            assert (tmp_path / f"out{i}").read_bytes() == tree["pxelinux.0"]
        # curl exits on sending its last ACK; the worker counts the transfer once it reads it.
        assert wait_for(lambda: handle.counters()["complete"] == 12)
        counters = handle.counters()
        assert counters["transfers"] == 12 and counters["complete"] == 12
        assert counters["bytes_sent"] == 12 * len(tree["pxelinux.0"])
        # A worker that dies is replaced; the address keeps answering.
        victim = handle.pids[0]
        os.kill(victim, signal.SIGKILL)
        assert wait_for(lambda: victim not in handle.pids and len(handle.pids) == 2)
        out = tmp_path / "after"
        for _ in range(4):
            assert curl_get(port, "pxelinux.0", out).returncode == 0
            assert out.read_bytes() == tree["pxelinux.0"]
        pids = handle.pids
    finally:
        handle.close()
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert handle.counters()["complete"] >= 12
    # The address is free again.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", port))


@pytest.mark.parametrize("workers", [1, 2])
def test_tftpd_command(store: BootStore, tree: dict[str, bytes], tmp_path: Path,
                       workers: int) -> None:
    port = free_udp_port()
    proc = subprocess.Popen(
        [os.path.join(os.path.dirname(sys.executable), "tftproxy"), "tftpd", "--root",
         str(store.root), "--listen", f"127.0.0.1:{port}", "--workers", str(workers)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert wait_ready(port), "tftproxy tftpd did not answer"
        out = tmp_path / "out"
        for _ in range(3):
            assert curl_get(port, "images/vmlinuz", out, blksize=1468).returncode == 0
            assert out.read_bytes() == tree["images/vmlinuz"]
        # The command's own process is a worker: N workers are N processes.
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        assert len(children) == workers - 1
    finally:
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert "'images/vmlinuz' octet" in output and "complete" in output


def test_serve_runs_tftp_and_httpboot(store: BootStore, tree: dict[str, bytes],
                                      tmp_path: Path) -> None:
    """`tftproxy serve --tftp-listen`: one command is a complete boot-file service."""
    tftp_port = free_udp_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        http_port = s.getsockname()[1]
    proc = subprocess.Popen(
        [os.path.join(os.path.dirname(sys.executable), "tftproxy"), "serve", "--root",
         str(store.root), "--listen", f"127.0.0.1:{http_port}",
         "--tftp-listen", f"127.0.0.1:{tftp_port}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert wait_ready(tftp_port), "tftproxy serve did not answer TFTP"
        out = tmp_path / "out"
        assert curl_get(tftp_port, "pxelinux.0", out).returncode == 0
        assert out.read_bytes() == tree["pxelinux.0"]
        url = f"http://127.0.0.1:{http_port}/httpboot/images/vmlinuz"
        assert wait_for(lambda: subprocess.run(["curl", "-sf", "-o", str(out), url],
                                               timeout=30).returncode == 0)
        assert out.read_bytes() == tree["images/vmlinuz"]
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        assert len(children) == 1  # the TFTP worker
    finally:
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=15)
    assert proc.returncode == 0, output
    assert f"TFTP on 127.0.0.1:{tftp_port}" in output
    assert wait_for(lambda: not any(Path(f"/proc/{pid}").exists() for pid in children))
