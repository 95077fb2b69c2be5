"""Slow and greedy clients, bounded per connection before the app runs.

Why it exists: anyone who can reach the webhook's Service can open a
connection, and uvicorn alone has only a keep-alive timeout: a stalled header
or body would hold its connection and buffers forever. This protocol class,
uvicorn's h11 protocol plus two guards, is what `webhook.edge.server` serves with:

- a read deadline (`REQUEST_READ_DEADLINE`, 3 s): from the connection's start,
  or a later request's first byte, the whole request (headers and body) must
  have arrived, else the connection is dropped. The API server writes its
  request at once and gives up itself after the webhook's timeoutSeconds, so a
  slower request can never be a real one;
- at most `MAX_CONNECTIONS_PER_CLIENT` (128) open connections per client
  address; more are dropped at once, so a tenant flooding the port from its
  pod's address exhausts only its own share, never the API server's.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger(__name__)

# Seconds for a whole request (headers and body) to arrive.
REQUEST_READ_DEADLINE = 3.0
# Open connections per client address.
MAX_CONNECTIONS_PER_CLIENT = 128


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol plus a whole-request read deadline and a per-client connection cap.

    `server_config` binds the limits with `guarded_protocol`; the class itself keeps the defaults.
    """

    read_deadline: float = REQUEST_READ_DEADLINE
    max_per_client: int = MAX_CONNECTIONS_PER_CLIENT
    # Open connections per client host, shared by every connection of one server (set by guarded_protocol).
    per_client: dict[str, int] = {}  # noqa: RUF012 - replaced per server by guarded_protocol

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None
        self._client_host: str | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        host = self.client[0] if self.client else ""
        if self.per_client.get(host, 0) >= self.max_per_client:
            log.warning("dropped a connection: client already has %d open", self.max_per_client)
            transport.abort()
            return
        self._client_host = host
        self.per_client[host] = self.per_client.get(host, 0) + 1
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        host, self._client_host = self._client_host, None
        if host is not None:
            left = self.per_client.get(host, 1) - 1
            if left > 0:
                self.per_client[host] = left
            else:
                self.per_client.pop(host, None)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._deadline is None and self.conn.their_state is h11.IDLE:
            self._arm()  # the first bytes of a request after keep-alive
        super().data_received(data)
        if self.conn.their_state in (h11.DONE, h11.MUST_CLOSE, h11.CLOSED, h11.ERROR):
            self._disarm()  # the whole request is in (or the connection is done for)

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(self.read_deadline, self._read_deadline_passed)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _read_deadline_passed(self) -> None:
        self._deadline = None
        if self.transport is not None and not self.transport.is_closing():
            log.warning("dropped a connection: no whole request within %.1f s", self.read_deadline)
            self.transport.abort()


def guarded_protocol(read_deadline: float, max_per_client: int) -> type[GuardedH11Protocol]:
    """A GuardedH11Protocol class with these limits and its own per-client table (one per server)."""
    return type(
        "GuardedH11Protocol",
        (GuardedH11Protocol,),
        {"read_deadline": read_deadline, "max_per_client": max_per_client, "per_client": {}},
    )
