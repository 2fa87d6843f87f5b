"""The transfer state machine at packet level: every rule of the protocol, no sockets."""

from __future__ import annotations

import os
from collections.abc import Sequence

import pytest

from tftproxy.tftp.packets import (
    Ack,
    Data,
    Error,
    ErrorCode,
    OAck,
    Request,
    build_ack,
    build_error,
    build_request,
    parse_packet,
    parse_request,
)
from tftproxy.tftp.protocol import (
    Action,
    BytesSource,
    Close,
    Negotiated,
    Outcome,
    Policy,
    ReadTransfer,
    Send,
    negotiate,
)

T0 = 1000.0


def rrq(**options: str | int) -> Request:
    return parse_request(build_request("f", "octet", {k: str(v) for k, v in options.items()}))


def datagrams(actions: Sequence[Action]) -> list[bytes]:
    return [bytes(d) for a in actions if isinstance(a, Send) for d in a.datagrams()]


def packets(actions: Sequence[Action]) -> list[object]:
    return [parse_packet(d) for d in datagrams(actions)]


def closes(actions: Sequence[Action]) -> list[Close]:
    return [a for a in actions if isinstance(a, Close)]


def data_blocks(actions: Sequence[Action]) -> list[int]:
    return [p.block for p in packets(actions) if isinstance(p, Data)]


def transfer(data: bytes, *, retries: int = 3, **options: str | int) -> ReadTransfer:
    negotiated = negotiate(rrq(**options), len(data), Policy(max_blksize=65464, timeout=1.0))
    return ReadTransfer(negotiated, BytesSource(data), retries=retries)


def drive(machine: ReadTransfer, first: Sequence[Action], now: float = T0) -> bytes:
    """Acknowledge every window as a perfect client would; returns the bytes received."""
    received = bytearray()
    expected = 1
    actions = first
    for _ in range(10**6):
        if closes(actions):
            break
        last = None
        for p in packets(actions):
            if isinstance(p, OAck):
                last = 0
            elif isinstance(p, Data):
                assert p.block == expected & 0xFFFF
                received += p.payload
                expected += 1
                last = p.block
        assert last is not None, "the machine sent nothing while a transfer was open"
        actions = machine.receive(build_ack(last), now)
    return bytes(received)


# ------------------------------------------------------------------ negotiation


def test_no_options_means_no_oack_and_512_byte_blocks() -> None:
    data = os.urandom(1300)
    m = transfer(data)
    first = m.start(T0)
    assert packets(first) == [Data(1, data[:512])]
    assert packets(m.receive(build_ack(1), T0)) == [Data(2, data[512:1024])]
    assert packets(m.receive(build_ack(2), T0)) == [Data(3, data[1024:])]
    assert closes(m.receive(build_ack(3), T0)) == [Close(Outcome.COMPLETE)]
    assert m.finished and m.outcome is Outcome.COMPLETE
    assert m.bytes_acknowledged == 1300


def test_oack_carries_only_what_was_asked_in_the_clients_spelling() -> None:
    m = transfer(b"x" * 5000, BLKSIZE=1024, tsize=0)
    assert packets(m.start(T0)) == [OAck((("BLKSIZE", "1024"), ("tsize", "5000")))]


@pytest.mark.parametrize(("asked", "policy_max", "granted"), [
    (1468, 1468, "1468"), (65464, 1468, "1468"), (1024, 1468, "1024"), (8, 1468, "8"),
    (70000, 65464, "65464"),
])
def test_blksize_is_never_larger_than_asked_or_allowed(asked: int, policy_max: int,
                                                       granted: str) -> None:
    n = negotiate(rrq(blksize=asked), 10, Policy(max_blksize=policy_max))
    assert n.oack == (("blksize", granted),)
    assert n.blksize == int(granted)


@pytest.mark.parametrize("value", ["7", "0", "-1", "abc", "", "+1468", " 1468", "1e3",
                                   "99999999999999"])
def test_malformed_or_tiny_blksize_is_left_out(value: str) -> None:
    n = negotiate(rrq(blksize=value), 10, Policy())
    assert n.oack == ()
    assert n.blksize == 512


@pytest.mark.parametrize(("value", "accepted"), [
    ("1", True), ("255", True), ("5", True), ("0", False), ("256", False), ("1.5", False),
    ("x", False),
])
def test_timeout_is_echoed_as_an_integer_or_refused(value: str, accepted: bool) -> None:
    n = negotiate(rrq(timeout=value), 10, Policy(timeout=2.0))
    if accepted:
        assert n.oack == (("timeout", str(int(value))),)
        assert n.timeout == float(value)
    else:
        assert n.oack == ()
        assert n.timeout == 2.0


def test_windowsize_is_capped_by_policy_and_by_window_memory() -> None:
    assert negotiate(rrq(windowsize=16), 1, Policy()).oack == (("windowsize", "16"),)
    assert negotiate(rrq(windowsize=500), 1, Policy(max_windowsize=64)).windowsize == 64
    big = negotiate(rrq(windowsize=64, blksize=65464), 1,
                    Policy(max_blksize=65464, window_bytes=1 << 20))
    assert big.windowsize == (1 << 20) // (65464 + 4)
    assert dict(big.oack)["windowsize"] == str(big.windowsize)
    assert negotiate(rrq(windowsize=0), 1, Policy()).oack == ()
    assert negotiate(rrq(windowsize=65536), 1, Policy()).oack == ()


def test_tsize_is_the_size_given_and_left_out_when_unknown() -> None:
    assert negotiate(rrq(tsize=0), 123456, Policy()).oack == (("tsize", "123456"),)
    assert negotiate(rrq(tsize=0), None, Policy()).oack == ()  # netascii


def test_unknown_and_repeated_options_are_left_out() -> None:
    req = parse_request(b"\x00\x01f\x00octet\x00multicast\x00\x00blksize\x00600\x00"
                        b"blksize\x00900\x00utimeout\x00100\x00")
    assert negotiate(req, 1, Policy()).oack == (("blksize", "600"),)


# --------------------------------------------------------------------- transfer


def test_ack_0_after_oack_starts_the_data() -> None:
    data = os.urandom(3000)
    m = transfer(data, blksize=1024, tsize=0)
    assert isinstance(packets(m.start(T0))[0], OAck)
    assert not m.progressed
    assert packets(m.receive(build_ack(0), T0)) == [Data(1, data[:1024])]
    assert m.progressed


def test_file_of_whole_blocks_ends_with_an_empty_block() -> None:
    data = os.urandom(1024)
    m = transfer(data)
    m.start(T0)
    assert packets(m.receive(build_ack(1), T0)) == [Data(2, data[512:])]
    assert packets(m.receive(build_ack(2), T0)) == [Data(3, b"")]
    assert closes(m.receive(build_ack(3), T0))[0].outcome is Outcome.COMPLETE


def test_empty_file_is_one_empty_block() -> None:
    m = transfer(b"")
    assert packets(m.start(T0)) == [Data(1, b"")]
    assert closes(m.receive(build_ack(1), T0))[0].outcome is Outcome.COMPLETE


@pytest.mark.parametrize("options", [{}, {"blksize": 1468}, {"blksize": 8, "windowsize": 7},
                                     {"windowsize": 4, "tsize": 0}, {"windowsize": 64}])
def test_a_perfect_client_receives_the_file(options: dict[str, int]) -> None:
    data = os.urandom(100_003)
    m = transfer(data, **options)
    assert drive(m, m.start(T0)) == data
    assert m.outcome is Outcome.COMPLETE
    assert m.retransmits == 0


def test_block_numbers_wrap_past_65535() -> None:
    data = os.urandom(8 * 70_000 + 3)  # 70,001 blocks of 8 bytes
    m = transfer(data, blksize=8)
    assert drive(m, m.start(T0)) == data
    assert m.last_block == 70_001


def test_block_numbers_wrap_in_windows_too() -> None:
    data = os.urandom(8 * 66_000)
    m = transfer(data, blksize=8, windowsize=64)
    assert drive(m, m.start(T0)) == data


def test_duplicate_ack_never_resends_lock_step() -> None:
    """Sorcerer's Apprentice: the ACK for block n arrives twice; block n+1 goes out once."""
    m = transfer(os.urandom(5000))
    m.start(T0)
    assert data_blocks(m.receive(build_ack(1), T0)) == [2]
    assert m.receive(build_ack(1), T0) == ()
    assert data_blocks(m.receive(build_ack(2), T0)) == [3]
    assert m.ignored == 1
    assert m.retransmits == 0


def test_stale_and_future_acks_are_ignored() -> None:
    m = transfer(os.urandom(5000))
    m.start(T0)
    for block in (1, 2, 3):
        m.receive(build_ack(block), T0)
    # Block 4 is in flight: ACKs for 1, 2 (stale), 0 (stale), 5 and 40000 (never sent).
    for block in (1, 2, 0, 5, 40000):
        assert m.receive(build_ack(block), T0) == ()
    assert m.ignored == 5
    assert data_blocks(m.receive(build_ack(4), T0)) == [5]


def test_lost_data_is_resent_on_timeout_only() -> None:
    m = transfer(os.urandom(5000), retries=3)
    m.start(T0)
    assert m.deadline == T0 + 1.0
    assert m.on_timer(T0 + 0.5) == ()  # not yet due
    assert data_blocks(m.on_timer(T0 + 1.0)) == [1]
    assert m.retransmits == 1
    assert m.deadline == T0 + 2.0
    assert data_blocks(m.receive(build_ack(1), T0 + 1.2)) == [2]


def test_lost_ack_then_late_duplicate_ack_sends_one_block() -> None:
    """The ACK for 1 was slow: the timer resent block 1, then both ACKs for 1 arrive."""
    m = transfer(os.urandom(5000))
    m.start(T0)
    m.on_timer(T0 + 1.0)
    assert data_blocks(m.receive(build_ack(1), T0 + 1.1)) == [2]
    assert m.receive(build_ack(1), T0 + 1.1) == ()


def test_negotiated_timeout_drives_the_timer() -> None:
    m = transfer(b"abc", timeout=3)
    m.start(T0)
    assert m.deadline == T0 + 3.0


def test_retries_are_bounded_and_the_end_is_silent() -> None:
    m = transfer(os.urandom(5000), retries=2)
    m.start(T0)
    assert data_blocks(m.on_timer(T0 + 1)) == [1]
    assert data_blocks(m.on_timer(T0 + 2)) == [1]
    end = m.on_timer(T0 + 3)
    assert datagrams(end) == []  # nobody is listening: no ERROR
    assert closes(end)[0].outcome is Outcome.TIMEOUT
    assert m.on_timer(T0 + 10) == ()
    assert m.receive(build_ack(1), T0 + 10) == ()


def test_progress_resets_the_retry_budget() -> None:
    m = transfer(os.urandom(5000), retries=1)
    m.start(T0)
    m.on_timer(T0 + 1)
    m.receive(build_ack(1), T0 + 1.5)
    assert data_blocks(m.on_timer(T0 + 2.5)) == [2]
    assert closes(m.on_timer(T0 + 3.5))[0].outcome is Outcome.TIMEOUT


def test_oack_is_resent_on_timeout() -> None:
    m = transfer(b"abc", tsize=0)
    m.start(T0)
    resent = packets(m.on_timer(T0 + 1))
    assert resent == [OAck((("tsize", "3"),))]


# ---------------------------------------------------------------------- windows


def test_window_goes_out_as_one_run_of_segments() -> None:
    data = os.urandom(10 * 100)
    m = transfer(data, blksize=100, windowsize=4)
    first = m.start(T0)  # OACK
    window = m.receive(build_ack(0), T0)
    assert len(window) == 1 and isinstance(window[0], Send) and window[0].segment == 104
    assert data_blocks(window) == [1, 2, 3, 4]
    assert isinstance(packets(first)[0], OAck)


def test_window_ack_of_last_block_sends_the_next_window() -> None:
    m = transfer(os.urandom(100 * 10), blksize=100, windowsize=4)
    m.start(T0)
    m.receive(build_ack(0), T0)
    assert data_blocks(m.receive(build_ack(4), T0)) == [5, 6, 7, 8]
    # 1000 bytes = 10 full blocks, then the empty 11th.
    assert data_blocks(m.receive(build_ack(8), T0)) == [9, 10, 11]
    assert closes(m.receive(build_ack(11), T0))[0].outcome is Outcome.COMPLETE


def test_window_ack_inside_the_window_goes_back_to_the_gap() -> None:
    """Block 3 was lost: the client acknowledges 2; the window restarts at 3."""
    m = transfer(os.urandom(100 * 20), blksize=100, windowsize=4)
    m.start(T0)
    m.receive(build_ack(0), T0)
    assert data_blocks(m.receive(build_ack(2), T0)) == [3, 4, 5, 6]


def test_window_duplicate_acks_never_resend_a_window() -> None:
    """EDK2 at windowsize 4 repeats ACKs; a server that answers each one storms."""
    m = transfer(os.urandom(100 * 40), blksize=100, windowsize=4)
    m.start(T0)
    m.receive(build_ack(0), T0)
    assert data_blocks(m.receive(build_ack(4), T0)) == [5, 6, 7, 8]
    for _ in range(10):
        assert m.receive(build_ack(4), T0) == ()
        assert m.receive(build_ack(2), T0) == ()
    assert m.retransmits == 0
    assert m.packets_sent == 1 + 8


def test_window_timeout_resends_everything_unacknowledged_once() -> None:
    m = transfer(os.urandom(100 * 40), blksize=100, windowsize=4)
    m.start(T0)
    m.receive(build_ack(0), T0)
    m.receive(build_ack(2), T0)  # 3..6 in flight
    before = m.retransmits
    assert data_blocks(m.on_timer(T0 + 1)) == [3, 4, 5, 6]
    assert m.retransmits == before + 4


def test_window_goes_back_once_per_round() -> None:
    """After a go-back, partial ACKs for the blocks it resent only release new blocks."""
    m = transfer(os.urandom(100 * 40), blksize=100, windowsize=4)
    m.start(T0)
    m.receive(build_ack(0), T0)  # 1..4
    assert data_blocks(m.receive(build_ack(2), T0)) == [3, 4, 5, 6]  # gap at 3: go back
    assert data_blocks(m.receive(build_ack(3), T0)) == [7]  # 4..6 were just resent or sent
    assert data_blocks(m.receive(build_ack(4), T0)) == [8]
    assert data_blocks(m.receive(build_ack(5), T0)) == [9]
    # Everything the go-back sent is acknowledged: a new gap may go back again.
    assert data_blocks(m.receive(build_ack(6), T0)) == [7, 8, 9, 10]


def test_client_acknowledging_every_block_gets_no_storm() -> None:
    """A window client that ACKs each block (a confused one) costs at most ~2x, not W x."""
    data = os.urandom(100 * 2000)
    m = transfer(data, blksize=100, windowsize=64)
    actions = m.start(T0)
    received = bytearray()
    expected = 1
    for _ in range(100_000):
        if closes(actions):
            break
        for p in packets(actions):
            if isinstance(p, Data) and p.block == expected:
                received += p.payload
                expected += 1
        # ACK each block in turn, as soon as the previous ACK is answered.
        actions = m.receive(build_ack(expected - 1 if expected > 1 else 0), T0)
        if not actions:
            actions = m.on_timer(m.deadline)
    assert bytes(received) == data
    assert m.packets_sent < 2 * 2001 + 64


def test_window_wrapping_around_the_slot_ring_is_sent_in_two_runs() -> None:
    data = os.urandom(100 * 40)
    m = transfer(data, blksize=100, windowsize=4)
    m.start(T0)
    m.receive(build_ack(0), T0)
    window = m.receive(build_ack(2), T0)  # blocks 3,4 | 5,6 across the end of the ring
    assert len(window) == 2
    assert [(p.block, p.payload) for p in packets(window) if isinstance(p, Data)] == [
        (k, data[(k - 1) * 100 : k * 100]) for k in (3, 4, 5, 6)
    ]


def test_window_final_short_block_ends_the_run() -> None:
    data = os.urandom(100 * 5 + 42)
    m = transfer(data, blksize=100, windowsize=8)
    m.start(T0)
    window = packets(m.receive(build_ack(0), T0))
    assert [len(p.payload) for p in window if isinstance(p, Data)] == [100] * 5 + [42]


# ----------------------------------------------------------------- errors, ends


def test_uefi_size_probe_is_a_normal_end() -> None:
    m = transfer(os.urandom(4000), tsize=0, blksize=1468)
    assert isinstance(packets(m.start(T0))[0], OAck)
    end = m.receive(build_error(ErrorCode.OPTION_REFUSED, "tsize only"), T0)
    assert datagrams(end) == []
    assert closes(end) == [Close(Outcome.PROBE, "tsize only")]


def test_other_errors_are_the_client_giving_up() -> None:
    m = transfer(os.urandom(4000), tsize=0)
    m.start(T0)
    assert closes(m.receive(build_error(0, "no space"), T0))[0].outcome is Outcome.CLIENT_ERROR
    m = transfer(os.urandom(4000), tsize=0)
    m.start(T0)
    m.receive(build_ack(0), T0)
    # ERROR 8 once data flows is not a probe.
    assert closes(m.receive(build_error(8, ""), T0))[0].outcome is Outcome.CLIENT_ERROR


@pytest.mark.parametrize("datagram", [
    b"", b"\x00", b"\x00\x04", b"\x00\x04\x00",  # truncated
    b"\x00\x00\x00\x01", b"\x00\x07\x00\x01", b"\xff\xff\x00\x01", b"\x01\x04\x00\x01",  # opcodes
    b"\x00\x03\x00\x01hello", build_request("f"), b"\x00\x06blksize\x00512\x00",  # wrong way
    b"\x00\x05",  # ERROR without a code
])
def test_truncated_and_unexpected_packets_are_ignored(datagram: bytes) -> None:
    m = transfer(os.urandom(2000))
    m.start(T0)
    assert m.receive(datagram, T0) == ()
    assert not m.finished
    assert m.ignored == 1
    assert data_blocks(m.receive(build_ack(1), T0)) == [2]


def test_ack_with_trailing_bytes_counts() -> None:
    m = transfer(os.urandom(2000))
    m.start(T0)
    assert data_blocks(m.receive(build_ack(1) + b"\x00\x00", T0)) == [2]


def test_receive_reads_only_size_bytes_of_a_reused_buffer() -> None:
    m = transfer(os.urandom(2000))
    m.start(T0)
    buf = bytearray(b"\x00\x04\x00\x01" + b"\xff" * 100)
    assert data_blocks(m.receive(buf, T0, 4)) == [2]
    assert m.receive(buf, T0, 3) == ()  # truncated view of the same buffer


class FailingSource:
    def readv(self, offset: int, bufs: Sequence[memoryview]) -> int:
        raise OSError(5, "Input/output error")


def test_read_error_sends_error_0_and_ends() -> None:
    m = ReadTransfer(Negotiated(), FailingSource())
    actions = m.start(T0)
    assert packets(actions) == [Error(0, "read error")]
    assert closes(actions)[0].outcome is Outcome.SERVER_ERROR
    assert "Input/output error" in m.detail


def test_abort_from_the_edge() -> None:
    m = transfer(os.urandom(2000))
    m.start(T0)
    m.abort(Outcome.CLIENT_GONE, "port unreachable")
    assert m.finished and m.outcome is Outcome.CLIENT_GONE
    assert m.receive(build_ack(1), T0) == ()
    assert m.on_timer(T0 + 100) == ()


def test_nothing_happens_after_completion() -> None:
    m = transfer(b"abc")
    m.start(T0)
    m.receive(build_ack(1), T0)
    assert m.finished
    assert m.receive(build_ack(1), T0) == ()
    assert m.start(T0) == ()
    assert m.deadline == float("inf")


def test_ack_packet_type_roundtrip() -> None:
    assert parse_packet(build_ack(65535)) == Ack(65535)


# ---------------------------------------------------- an unverified client address


def _unverified(data: bytes, **options: str | int) -> ReadTransfer:
    policy = Policy(max_blksize=65464, timeout=1.0, retries=5, first_retries=2)
    negotiated = negotiate(rrq(**options), len(data), policy)
    return ReadTransfer(negotiated, BytesSource(data), retries=policy.retries,
                        first_retries=policy.first_retries, first_timeout=policy.first_timeout)


@pytest.mark.parametrize("options", [{}, {"timeout": 255, "tsize": 0, "blksize": 1468}],
                         ids=["no-options", "timeout-255"])
def test_before_the_first_ack_the_answer_is_resent_twice_at_our_timeout(options) -> None:
    m = _unverified(b"x" * 100_000, **options)
    sent = datagrams(m.start(T0))
    assert m.deadline == T0 + 1.0  # not the 255 s the client asked for
    now = T0
    while not m.finished:
        now = m.deadline
        actions = m.on_timer(now)
        sent += datagrams(actions)
    assert len(sent) == 3 and len(set(sent)) == 1  # the first answer and two resends
    assert now == T0 + 3.0 and m.outcome is Outcome.TIMEOUT
    assert max(map(len, sent)) <= 516


def test_after_the_first_ack_the_clients_timeout_and_full_retries_apply() -> None:
    m = _unverified(b"x" * 100_000, timeout=7, blksize=1000)
    m.start(T0)
    assert m.deadline == T0 + 1.0
    assert data_blocks(m.receive(build_ack(0), T0 + 0.5)) == [1]
    assert m.deadline == T0 + 7.5
    resends = 0
    while not m.finished:
        resends += len(data_blocks(m.on_timer(m.deadline)))
    assert resends == 5


def test_the_window_is_allocated_only_once_the_oack_is_acknowledged() -> None:
    import tracemalloc

    data = b"x" * 10_000_000
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    machines = [_unverified(data, windowsize=64, blksize=1468, tsize=0) for _ in range(200)]
    for m in machines:
        m.start(T0)
    unverified = tracemalloc.get_traced_memory()[0] - base
    m = machines[0]
    assert len(datagrams(m.receive(build_ack(0), T0 + 0.1))) == 64
    verified = tracemalloc.get_traced_memory()[0] - base - unverified
    tracemalloc.stop()
    # 200 windows of 64 x 1472 bytes would be 18 MiB; unacknowledged they cost almost nothing.
    assert unverified < 2 * 1024 * 1024, unverified
    assert verified >= 64 * 1472
