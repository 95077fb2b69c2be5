"""uvicorn's h11 protocol with a whole-request read deadline, telling its gate whether the connection is idle.

uvicorn alone has only a keep-alive timeout, so a stalled header or body from anyone who reaches the Service
would hold its connection and buffers forever. Details: docs/reliability.md ("Slow clients, connection limits
and the body cap").
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from webhook.edge.gate import BUSY, IDLE, READING, Slot

log = logging.getLogger(__name__)

# Seconds for a whole request (headers and body) to arrive.
REQUEST_READ_DEADLINE = 3.0

_FINISHED = (h11.DONE, h11.MUST_CLOSE, h11.CLOSED, h11.ERROR)


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol plus a whole-request read deadline; reports its state to the gate's slot.

    `server_config` binds the deadline with `guarded_protocol`; the class itself keeps the default.
    """

    read_deadline: float = REQUEST_READ_DEADLINE

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None
        self.gate_slot: Slot | None = None  # set by webhook.edge.gate before the connection is made

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._mark(READING)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self.gate_slot is not None:
            self.gate_slot.release()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.conn.their_state is h11.IDLE:
            self._mark(READING)
            if self._deadline is None:
                self._arm()  # the first bytes of a request after keep-alive
        super().data_received(data)
        if self.conn.their_state in _FINISHED:
            self._disarm()  # the whole request is in (or the connection is done for)
            self._mark(BUSY)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.conn.our_state is h11.IDLE and self.conn.their_state is h11.IDLE:
            self._mark(IDLE)

    def _mark(self, state: str) -> None:
        if self.gate_slot is not None:
            self.gate_slot.mark(state)

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


def guarded_protocol(read_deadline: float) -> type[GuardedH11Protocol]:
    """A GuardedH11Protocol class with this read deadline (one per server)."""
    return type("GuardedH11Protocol", (GuardedH11Protocol,), {"read_deadline": read_deadline})
