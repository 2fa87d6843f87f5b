"""A tiny packet recorder for the e2e tests: TFTP and HTTP traffic on one interface, as JSON lines.

Run inside the test's network namespace (``ip netns exec NS python tftpcap.py br0 OUT``); it
records what the firmware really asked for and what the server really answered, so the tests can
assert on the wire (options, the size probe, windows, which version was sent when) instead of on
any server's log. It reads a raw AF_PACKET socket and stops on SIGTERM or after --max-seconds.

One line per event, ``t`` is ``time.time()`` of the capture:
  {"t", "src", "dst", "op": "RRQ"|"WRQ", "file", "mode", "opts": {...}}
  {"t", "src", "dst", "op": "OACK", "opts": {...}}
  {"t", "src", "dst", "op": "ERROR", "code", "msg"}
  {"t", "src", "dst", "op": "DATA", "block", "len"}   (ACKs are not recorded)
  {"t", "src", "dst", "op": "TCP-SYN"}                 (connection attempts, e.g. HTTP boot)
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import struct
import sys
import time

ETH_P_ALL = 0x0003
OPS = {1: "RRQ", 2: "WRQ", 3: "DATA", 4: "ACK", 5: "ERROR", 6: "OACK"}


def _strings(payload: bytes) -> list[str]:
    parts = payload.split(b"\0")
    if parts and parts[-1] == b"":
        parts.pop()
    return [p.decode("ascii", "replace") for p in parts]


def decode(frame: bytes, tftp_ports: set[tuple[str, int]]) -> dict[str, object] | None:
    """One Ethernet frame -> an event, or None for anything uninteresting."""
    if len(frame) < 34 or frame[12:14] != b"\x08\x00":
        return None
    ihl = (frame[14] & 0x0F) * 4
    proto = frame[23]
    src_ip = socket.inet_ntoa(frame[26:30])
    dst_ip = socket.inet_ntoa(frame[30:34])
    l4 = frame[14 + ihl:]
    if proto == 6 and len(l4) >= 14:
        sport, dport = struct.unpack("!HH", l4[:4])
        flags = l4[13]
        if flags & 0x02 and not flags & 0x10:  # SYN without ACK
            return {"src": f"{src_ip}:{sport}", "dst": f"{dst_ip}:{dport}", "op": "TCP-SYN"}
        return None
    if proto != 17 or len(l4) < 10:
        return None
    sport, dport = struct.unpack("!HH", l4[:4])
    payload = l4[8:]
    if sport in (67, 68) or dport in (67, 68, 53, 546, 547):
        return None
    op = struct.unpack("!H", payload[:2])[0]
    src, dst = f"{src_ip}:{sport}", f"{dst_ip}:{dport}"
    event: dict[str, object] = {"src": src, "dst": dst}
    if op in (1, 2) and dport == 69:
        fields = _strings(payload[2:])
        if len(fields) < 2:
            return None
        opts = {fields[i].lower(): fields[i + 1] for i in range(2, len(fields) - 1, 2)}
        event.update(op=OPS[op], file=fields[0], mode=fields[1], opts=opts)
        # Remember the client's port: everything to or from it is that transfer.
        tftp_ports.add((src_ip, sport))
        return event
    if (dst_ip, dport) not in tftp_ports and (src_ip, sport) not in tftp_ports:
        return None
    if op == 3 and len(payload) >= 4:
        event.update(op="DATA", block=struct.unpack("!H", payload[2:4])[0], len=len(payload) - 4)
    elif op == 6:
        fields = _strings(payload[2:])
        event.update(op="OACK", opts={fields[i].lower(): fields[i + 1]
                                      for i in range(0, len(fields) - 1, 2)})
    elif op == 5 and len(payload) >= 4:
        msg = payload[4:].split(b"\0", 1)[0].decode("ascii", "replace")
        event.update(op="ERROR", code=struct.unpack("!H", payload[2:4])[0], msg=msg)
    else:
        return None
    return event


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("interface")
    parser.add_argument("output")
    parser.add_argument("--max-seconds", type=float, default=3600.0)
    args = parser.parse_args()

    stop = False

    def on_term(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 * 1024 * 1024)
    sock.bind((args.interface, 0))
    sock.settimeout(0.2)
    deadline = time.monotonic() + args.max_seconds
    tftp_ports: set[tuple[str, int]] = set()
    with open(args.output, "a", buffering=1) as out:
        out.write(json.dumps({"t": time.time(), "op": "START"}) + "\n")
        while not stop and time.monotonic() < deadline:
            try:
                frame = sock.recv(65535)
            except (TimeoutError, InterruptedError):
                continue
            # On the bridge device each frame is seen once: received from a guest or sent to one.
            event = decode(frame, tftp_ports)
            if event is None:
                continue
            event["t"] = time.time()
            out.write(json.dumps(event, separators=(",", ":")) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
