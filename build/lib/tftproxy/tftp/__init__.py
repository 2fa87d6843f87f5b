"""tftproxy's own TFTP server: RFC 1350 reads with blksize, tsize, timeout and windowsize.

Pure, no sockets: :mod:`.packets` parses and builds datagrams, :mod:`.protocol` is the
transfer as a state machine (bytes and time in, actions out). At the edge: :mod:`.sources`
(file bytes), :mod:`.counters` (shared counters), :mod:`.udp` (sockets, GSO),
:mod:`.transfers` (one transfer's socket and machine), :mod:`.server` (one worker's epoll
loop), :mod:`.workers` (worker processes). The server depends only on :mod:`.backend`'s
two calls, which the store's serving face provides.
"""
