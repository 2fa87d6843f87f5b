"""Fuzzing: whatever arrives, the parser raises only PacketError and the machine nothing."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tftproxy.tftp.packets import (
    Ack,
    Data,
    Error,
    OAck,
    PacketError,
    Request,
    build_ack,
    build_data,
    build_error,
    build_oack,
    build_request,
    parse_packet,
    parse_request,
)
from tftproxy.tftp.protocol import BytesSource, Outcome, Policy, ReadTransfer, Send, negotiate

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

opcodes = st.sampled_from([b"\x00\x01", b"\x00\x02", b"\x00\x03", b"\x00\x04", b"\x00\x05",
                           b"\x00\x06", b"\x00\x00", b"\x00\x07", b"\xff\xff"])
# Bytes that look like TFTP (an opcode, then NUL-separated words) reach deeper than noise.
words = st.lists(st.one_of(st.binary(max_size=12),
                           st.sampled_from([b"octet", b"netascii", b"blksize", b"tsize",
                                            b"timeout", b"windowsize", b"1468", b"0", b"-1",
                                            b"65536", b"\xff\xfe"])), max_size=8)
datagrams = st.one_of(
    st.binary(max_size=600),
    st.builds(lambda op, ws, tail: op + b"\x00".join(ws) + tail, opcodes, words,
              st.sampled_from([b"", b"\x00", b"\x00\x00\x00"])),
)


@FUZZ
@given(datagrams)
def test_parser_raises_only_packet_error(data: bytes) -> None:
    try:
        packet = parse_packet(data)
    except PacketError:
        return
    assert isinstance(packet, Request | Data | Ack | Error | OAck)
    if isinstance(packet, Request):
        assert packet.filename and packet.mode


@FUZZ
@given(datagrams)
def test_request_parser_raises_only_packet_error_and_negotiation_never_fails(data: bytes) -> None:
    try:
        request = parse_request(data)
    except PacketError:
        return
    for size in (0, 1, 10**12, None):
        n = negotiate(request, size, Policy())
        assert 8 <= n.blksize <= 1468 and 1 <= n.windowsize <= 64
        assert len(n.oack) <= len(request.options)
        assert all(value.isdigit() for _, value in n.oack)


@FUZZ
@given(st.text(min_size=1, max_size=30).filter(lambda s: "\x00" not in s),
       st.dictionaries(st.sampled_from(["blksize", "tsize", "timeout", "windowsize", "x"]),
                       st.integers(0, 70000).map(str), max_size=4))
def test_requests_round_trip(name: str, options: dict[str, str]) -> None:
    request = parse_request(build_request(name, "octet", options))
    assert request.filename == name
    assert dict(request.options) == options


@FUZZ
@given(st.integers(0, 65535), st.binary(max_size=100), st.text(max_size=20).filter(
    lambda s: "\x00" not in s))
def test_builders_round_trip(block: int, payload: bytes, message: str) -> None:
    assert parse_packet(build_data(block, payload)) == Data(block, payload)
    assert parse_packet(build_ack(block)) == Ack(block)
    assert parse_packet(build_error(block, message)) == Error(block, message)
    assert parse_packet(build_oack([("blksize", "512")])) == OAck((("blksize", "512"),))


# A client event: a datagram (structured ACK/ERROR, or anything) or time passing.
events = st.lists(
    st.one_of(
        st.tuples(st.just("ack"), st.integers(0, 65535)),
        st.tuples(st.just("ack-near"), st.integers(-3, 5)),
        st.tuples(st.just("raw"), datagrams),
        st.tuples(st.just("error"), st.integers(0, 9)),
        st.tuples(st.just("time"), st.floats(0, 5)),
    ),
    max_size=60,
)


@FUZZ
@given(st.binary(max_size=3000), st.sampled_from([1, 2, 4, 7]), st.sampled_from([8, 100, 512]),
       st.booleans(), events)
def test_machine_never_raises_and_keeps_its_invariants(
    data: bytes, window: int, blksize: int, oack: bool, script: list[tuple[str, object]]
) -> None:
    options = {"blksize": str(blksize), "windowsize": str(window)}
    if oack:
        options["tsize"] = "0"
    request = parse_request(build_request("f", "octet", options))
    m = ReadTransfer(negotiate(request, len(data), Policy()), BytesSource(data), retries=3)
    now = 0.0
    sent_blocks: set[int] = set()
    last_data_block = 0

    def record(actions: object) -> None:
        nonlocal last_data_block
        assert isinstance(actions, tuple | list)
        for action in actions:
            if isinstance(action, Send):
                for d in action.datagrams():
                    packet = parse_packet(bytes(d))
                    if isinstance(packet, Data):
                        assert len(packet.payload) <= blksize
                        sent_blocks.add(packet.block)
                        last_data_block = packet.block

    record(m.start(now))
    for kind, value in script:
        if kind == "ack":
            assert isinstance(value, int)
            record(m.receive(build_ack(value), now))
        elif kind == "ack-near":
            assert isinstance(value, int)
            record(m.receive(build_ack((last_data_block + value) & 0xFFFF), now))
        elif kind == "raw":
            assert isinstance(value, bytes)
            record(m.receive(value, now))
        elif kind == "error":
            assert isinstance(value, int)
            record(m.receive(build_error(value, "x"), now))
        else:
            assert isinstance(value, float)
            now += value
            record(m.on_timer(now))
        if m.finished:
            assert m.outcome in set(Outcome)
            assert m.deadline == float("inf")
        else:
            assert m.deadline > now - 5.0
        assert m.bytes_acknowledged <= len(data)
    if m.outcome is Outcome.COMPLETE:
        assert m.bytes_acknowledged == len(data)
