"""The gate's table of accepted connections that have sent nothing yet: bare sockets, oldest first, by address.

A flood of silent connections is the cheapest attack on the edge, so every step the gate takes on this table (add,
drop, find the oldest, pick whom to close when full) costs the same however many are in it.
"""

from __future__ import annotations

import asyncio
import socket
from collections import OrderedDict
from collections.abc import Callable


class Pending:
    """An accepted socket, its address, whether that is an API server's, and when it was accepted."""

    __slots__ = ("sock", "fd", "host", "protected", "accepted")

    def __init__(self, sock: socket.socket, host: str, accepted: float, protected: bool = False) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.host = host
        self.protected = protected
        self.accepted = accepted


class PendingTable:
    """Pending connections in the order they were accepted, and the same per address, each watched for its first
    bytes by the loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._all: OrderedDict[int, Pending] = OrderedDict()
        self._by_host: dict[str, OrderedDict[int, Pending]] = {}

    def __len__(self) -> int:
        return len(self._all)

    def values(self) -> list[Pending]:
        return list(self._all.values())

    def add(self, pending: Pending, on_first_bytes: Callable[[Pending], None]) -> None:
        self._all[pending.fd] = pending
        self._by_host.setdefault(pending.host, OrderedDict())[pending.fd] = pending
        self._loop.add_reader(pending.fd, on_first_bytes, pending)

    def remove(self, pending: Pending) -> bool:
        """Take it out; False when it was not (or no longer) here (its descriptor may be another's by now)."""
        if self._all.get(pending.fd) is not pending:
            return False
        del self._all[pending.fd]
        of_host = self._by_host[pending.host]
        del of_host[pending.fd]
        if not of_host:
            del self._by_host[pending.host]
        self._loop.remove_reader(pending.fd)
        return True

    def drop(self, pending: Pending) -> None:
        """Take it out and close it (nothing when it was no longer here)."""
        if self.remove(pending):
            pending.sock.close()

    def oldest(self) -> Pending | None:
        return next(iter(self._all.values()), None)

    def drop_expired(self, cutoff: float, at_most: int) -> None:
        """Close up to `at_most` connections accepted before `cutoff`, oldest first."""
        for _ in range(at_most):
            oldest = self.oldest()
            if oldest is None or oldest.accepted > cutoff:
                return
            self.drop(oldest)

    def victim(self) -> Pending | None:
        """The oldest connection of the address with the most, an API server's address only when no other has any."""
        if not self._by_host:
            return None
        heaviest = max(
            self._by_host.values(), key=lambda of_host: (not next(iter(of_host.values())).protected, len(of_host))
        )
        return next(iter(heaviest.values()))
