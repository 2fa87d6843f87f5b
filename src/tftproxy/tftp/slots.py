"""Who holds a worker's transfer slots, and whose slot a newcomer may take.

A forged request's source address never answers, so a flood of forged requests fills the
slots with transfers whose client never acknowledges anything. Two rules keep a flood, or one
greedy host, from starving everyone else:

* each client host may hold at most ``max_per_client`` transfers and held requests;
* when every slot is taken, a new request evicts the oldest *unverified* transfer (no ACK
  yet). A real client acknowledges within a round trip and is then never evicted, so
  transfers in progress are never cut short for a newcomer.
"""

from __future__ import annotations

from tftproxy.tftp.transfers import Transfer
from tftproxy.tftp.udp import Address


class Slots:
    """Per-host counts and the unverified transfers, oldest first."""

    def __init__(self, max_per_client: int) -> None:
        self.max_per_client = max_per_client
        self._per_host: dict[str, int] = {}
        # Insertion-ordered: the oldest first. A transfer stays listed after its first ACK
        # until it ends or an eviction passes it over; either way the dict stays bounded.
        self._unverified: dict[int, Transfer] = {}

    def host_full(self, client: Address) -> bool:
        return self._per_host.get(client[0], 0) >= self.max_per_client

    def take(self, client: Address, transfer: Transfer | None = None) -> None:
        self._per_host[client[0]] = self._per_host.get(client[0], 0) + 1
        if transfer is not None:
            self._unverified[transfer.fd] = transfer

    def free(self, client: Address, transfer: Transfer | None = None) -> None:
        left = self._per_host.get(client[0], 0) - 1
        if left > 0:
            self._per_host[client[0]] = left
        else:
            self._per_host.pop(client[0], None)
        if transfer is not None and self._unverified.get(transfer.fd) is transfer:
            del self._unverified[transfer.fd]

    def evictable(self, live: dict[int, Transfer]) -> Transfer | None:
        """The oldest transfer still waiting for its client's first ACK, if any."""
        while self._unverified:
            fd = next(iter(self._unverified))
            t = self._unverified.pop(fd)
            if not t.machine.progressed and live.get(fd) is t:
                return t
        return None

    def clear(self) -> None:
        self._per_host.clear()
        self._unverified.clear()
