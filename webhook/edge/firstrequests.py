"""A new connection's first request waits its turn behind requests on connections already answered once.

Why it exists: a burst of new connections (one tenant's 300 dry-run creates, each on its own connection)
makes hundreds of requests ready in one turn of the event loop, and each admission runs to its end once
started, so a request on a connection the API server already uses waited for the whole burst. First
requests go through this lane one per loop turn, in arrival order: between two of them the loop reads and
serves everything else that is ready, and the burst still moves at the speed of the core (none waits for
more than the lane ahead of it). docs/reliability.md, the budget's sixth round.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

# The key of the per-connection entry in each request's ASGI scope["state"] (set by connguard's protocol).
CONNECTION_STATE_KEY = "ferry.connection"


class FirstRequests:
    """The lane: `await lane.turn()` returns in a later turn of the loop, one waiter per turn, first come first."""

    def __init__(self) -> None:
        self._waiting: deque[asyncio.Future[None]] = deque()
        self._scheduled = False

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    async def turn(self) -> None:
        loop = asyncio.get_running_loop()
        ticket: asyncio.Future[None] = loop.create_future()
        self._waiting.append(ticket)
        self._schedule(loop)
        await ticket

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        if not self._scheduled and self._waiting:
            self._scheduled = True
            loop.call_soon(self._release, loop)

    def _release(self, loop: asyncio.AbstractEventLoop) -> None:
        self._scheduled = False
        while self._waiting:
            ticket = self._waiting.popleft()
            if not ticket.done():  # else its request was cancelled (the client went away) while it waited
                ticket.set_result(None)
                break
        self._schedule(loop)


def is_first_request(scope: Any) -> bool:
    """Whether this request is the first on its connection (False when the server does not say)."""
    state = scope.get("state") if isinstance(scope, dict) else None
    connection = state.get(CONNECTION_STATE_KEY) if isinstance(state, dict) else None
    return connection is not None and getattr(connection, "answered", 1) == 0
