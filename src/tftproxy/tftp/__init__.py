"""tftproxy's own TFTP server: RFC 1350 reads with blksize, tsize, timeout and windowsize.

:mod:`.packets` parses and builds datagrams, :mod:`.protocol` is the transfer as a pure state
machine, :mod:`.server` puts sockets, files and worker processes around it.
"""
