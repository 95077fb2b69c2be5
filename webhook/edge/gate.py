"""Accept connections ourselves, count and cap them before TLS, and start TLS only once bytes arrive.

asyncio's own TLS server gives every accepted connection a 256 KiB read buffer and a 60 s handshake before
anything counts it. Policy and figures: docs/reliability.md ("The admission edge against any pod").
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import ssl
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any

from webhook.edge.gatelimits import READING_EVICTABLE_AFTER, GateLimits
from webhook.edge.gatepending import Pending, PendingTable
from webhook.edge.gatetls import TLS_READ_BUFFER, SharedBufferSSLProtocol
from webhook.edge.networks import Networks, parse_networks

log = logging.getLogger(__name__)

_ACCEPTS_PER_WAKEUP = 64
# Pending connections past their deadline closed per turn of the event loop: a flood accepted at once expires
# at once, and closing a thousand sockets in one turn held up every request for tens of milliseconds.
_EXPIRIES_PER_TURN = 64

IDLE, BUSY, READING = "idle", "busy", "reading"

__all__ = ["Gate", "Networks", "Slot", "parse_networks"]


class Slot:
    """One connection past its first bytes: its address, state and how to close it."""

    __slots__ = ("gate", "host", "protected", "state", "since", "transport", "released", "waiting", "turn", "awaiting")

    def __init__(self, gate: Gate, host: str, protected: bool = False) -> None:
        self.gate = gate
        self.host = host
        self.protected = protected  # an API-server address (GateLimits.protected), decided once at accept
        self.state = BUSY  # until the gate marks it READING: its handshake and first request are arriving
        self.since = time.monotonic()
        self.transport: asyncio.Transport | None = None
        self.released = False
        self.waiting: Pending | None = None  # its bare socket, while it waits for a handshake turn
        self.turn: asyncio.TimerHandle | None = None  # while it holds a handshake turn
        self.awaiting = False  # its handshake gave up its turn to wait for the client's answer

    def mark(self, state: str) -> None:
        """IDLE between requests, READING while a request arrives, BUSY while it is answered."""
        if not self.released and state != self.state:
            self.gate._move(self, state)

    def release(self) -> None:
        """The connection is gone (idempotent)."""
        if not self.released:
            self.released = True
            self.gate._forget(self)

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()
        if self.waiting is not None:
            self.waiting.sock.close()
            self.waiting = None
        self.release()


class Gate:
    """A listening socket served by hand: see the module docstring. Quacks like asyncio.Server for uvicorn."""

    def __init__(
        self,
        sock: socket.socket,
        protocol_factory: Callable[[], asyncio.Protocol],
        limits: GateLimits,
        ssl_context: ssl.SSLContext | None = None,
        backlog: int = 2048,
    ) -> None:
        self.sockets = [sock]
        self._sock = sock
        self._factory = protocol_factory
        self.limits = limits
        self._ssl = ssl_context
        self._loop = asyncio.get_running_loop()
        self._pending = PendingTable(self._loop)
        self._sweeper: asyncio.TimerHandle | None = None  # closes pending connections past their deadline
        self._slots: set[Slot] = set()
        # Idle connections and requests still arriving, oldest first.
        self._idle: OrderedDict[Slot, None] = OrderedDict()
        self._reading: OrderedDict[Slot, None] = OrderedDict()
        self._per_host: dict[str, int] = {}
        # Connections waiting for a handshake turn, by address (served in turn, API-server addresses first).
        self._turn_queue: OrderedDict[str, deque[Slot]] = OrderedDict()
        self._protected_queues: set[str] = set()  # the hosts in _turn_queue that are API-server addresses
        self._turns = 0
        self._awaiting = 0
        self._awaiting_by_host: dict[str, int] = {}
        self._making_room = False  # while a victim is closed for a newcomer: its turn waits for the newcomer
        self._read_buffer = memoryview(bytearray(TLS_READ_BUFFER)) if ssl_context is not None else memoryview(b"")
        self._closed = False
        self.evicted = 0  # connections closed to make room, for tests and logs
        self.refused = 0  # connections closed because even the overflow was full
        sock.setblocking(False)
        sock.listen(backlog)
        self._loop.add_reader(sock.fileno(), self._accept)

    # -- what uvicorn calls on its servers ---------------------------------------------------------

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._loop.remove_reader(self._sock.fileno())
        self._sock.close()
        for pending in self._pending.values():
            self._pending.drop(pending)
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        # Sockets still waiting for a handshake turn are Ferry's to close too (a stop must not leak them).
        for queue in list(self._turn_queue.values()):
            for slot in list(queue):
                slot.abort()
        self._turn_queue.clear()
        self._protected_queues.clear()

    async def wait_closed(self) -> None:
        return None

    @property
    def pending(self) -> int:
        return len(self._pending)

    @property
    def connections(self) -> int:
        return len(self._slots)

    @property
    def handshaking(self) -> int:
        """Handshakes holding a turn now."""
        return self._turns

    @property
    def awaiting_client(self) -> int:
        """Handshakes (not the API server's) that gave up their turn to wait for the client's answer."""
        return self._awaiting

    @property
    def waiting(self) -> int:
        """Connections waiting for a handshake turn."""
        return sum(len(queue) for queue in self._turn_queue.values())

    # -- accept and first bytes --------------------------------------------------------------------

    def _accept(self) -> None:
        for _ in range(_ACCEPTS_PER_WAKEUP):
            try:
                conn, address = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    log.warning("accept failed (%s); closing the oldest pending connection", exc.strerror)
                    self._evict_pending()
                return  # ECONNABORTED and the like: the next wakeup tries again
            conn.setblocking(False)
            if conn.family in (socket.AF_INET, socket.AF_INET6):
                # asyncio sets this only on sockets whose proto is TCP (ours is 0): without it an answer
                # written in two parts waits ~40 ms for the peer's delayed ACK.
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            host = str(address[0]) if isinstance(address, tuple) else ""
            if not self.limits.is_allowed(host):
                self.refused += 1
                conn.close()
                continue
            if len(self._pending) >= self.limits.max_pending:
                self._evict_pending()
            pending = Pending(conn, host, time.monotonic(), self.limits.is_protected(host))
            self._pending.add(pending, self._first_bytes)
            if self._sweeper is None:
                self._sweeper = self._loop.call_later(self.limits.handshake_deadline, self._sweep)

    def _sweep(self) -> None:
        """Close the pending connections past their deadline, oldest first, a batch per turn of the loop."""
        self._sweeper = None
        deadline = self.limits.handshake_deadline
        self._pending.drop_expired(time.monotonic() - deadline, _EXPIRIES_PER_TURN)
        oldest = self._pending.oldest()
        if oldest is not None and not self._closed:
            delay = max(0.0, oldest.accepted + deadline - time.monotonic())
            self._sweeper = self._loop.call_later(delay, self._sweep)

    def _evict_pending(self) -> None:
        """Close the oldest pending connection of the address with the most pending ones (API servers' last)."""
        victim = self._pending.victim()
        if victim is not None:
            self.evicted += 1
            self._pending.drop(victim)

    def _first_bytes(self, pending: Pending) -> None:
        if not self._pending.remove(pending):
            return  # dropped in this same turn of the loop
        if self._closed or not self._make_room(pending.host, pending.protected):
            self.refused += 1
            log.warning("refused a connection: %d connections open and none idle", len(self._slots))
            pending.sock.close()
            return
        slot = Slot(self, pending.host, pending.protected)
        # A handshake in progress is a request still arriving: it may be cut off for a fair share (Gate._victim).
        slot.mark(READING)
        self._slots.add(slot)
        self._per_host[slot.host] = self._per_host.get(slot.host, 0) + 1
        if self._ssl is None or (self._turns < self.limits.handshakes and not self._turn_queue):
            self._start(slot, pending)
            return
        slot.waiting = pending
        self._turn_queue.setdefault(slot.host, deque()).append(slot)
        if slot.protected:
            self._protected_queues.add(slot.host)
        self._next_turns()  # a turn freed making room for it goes by the queue's order, the newcomer included

    def _next_turns(self) -> None:
        while self._turns < self.limits.handshakes and not self._closed and not self._making_room:
            if not self._turn_queue:
                return
            protected = (host for host in self._turn_queue if host in self._protected_queues)
            host = next(protected, None) or next(iter(self._turn_queue))
            queue = self._turn_queue.pop(host)
            oldest = queue[0].waiting
            if oldest is None or time.monotonic() - oldest.accepted >= self.limits.handshake_patience:
                slot = queue.popleft()
            else:
                slot = queue.pop()
            if queue:
                self._turn_queue[host] = queue  # to the back: one address's queue never holds up another's
            else:
                self._protected_queues.discard(host)
            pending, slot.waiting = slot.waiting, None
            if pending is not None and not slot.released:  # else closed while it waited
                self._start(slot, pending)

    def _end_turn(self, slot: Slot) -> None:
        """The handshake is done (or the connection gone): its turn, or its place among those awaiting, is free."""
        if slot.awaiting:
            slot.awaiting = False
            self._awaiting -= 1
            left = self._awaiting_by_host[slot.host] - 1
            if left:
                self._awaiting_by_host[slot.host] = left
            else:
                del self._awaiting_by_host[slot.host]
        if slot.turn is not None:
            slot.turn.cancel()
            slot.turn = None
            self._turns -= 1
            self._next_turns()

    def _await_client(self, slot: Slot) -> None:
        """The server's part of the handshake is sent: the turn (a bound on the loop's work, and a round trip to
        the client is none) goes on while the client answers, within a bound in all and one per address. The API
        server's handshakes count against no bound."""
        if slot.turn is None:
            return
        if not slot.protected:
            held = self._awaiting_by_host.get(slot.host, 0)
            if self._awaiting >= self.limits.awaiting_client or held >= self.limits.awaiting_client_per_address:
                return
            slot.awaiting = True
            self._awaiting += 1
            self._awaiting_by_host[slot.host] = held + 1
        slot.turn.cancel()
        slot.turn = None
        self._turns -= 1
        self._next_turns()

    def _start(self, slot: Slot, pending: Pending) -> None:
        """Give the connection its protocol (and TLS, with a handshake turn)."""
        app = self._factory()
        app.gate_slot = slot  # type: ignore[attr-defined]  # read by connguard's protocol
        protocol: asyncio.BaseProtocol = app
        if self._ssl is not None:
            self._turns += 1
            slot.turn = self._loop.call_later(self.limits.handshake_turn, self._end_turn, slot)
            remaining = max(0.5, self.limits.handshake_deadline - (time.monotonic() - pending.accepted))
            protocol = SharedBufferSSLProtocol(
                slot,
                self._read_buffer,
                self._loop,
                app,
                self._ssl,
                None,
                server_side=True,
                ssl_handshake_timeout=remaining,
                # A peer that never answers close_notify must not hold its slot for asyncio's default 30 s.
                ssl_shutdown_timeout=self.limits.handshake_deadline,
            )
        task = self._loop.create_task(self._loop.connect_accepted_socket(lambda: protocol, pending.sock))
        task.add_done_callback(lambda done: self._started(done, slot, pending.sock))

    def _started(self, done: asyncio.Future[Any], slot: Slot, sock: socket.socket) -> None:
        if done.cancelled() or done.exception() is not None:
            self._end_turn(slot)
            slot.release()
            sock.close()
            return
        if slot.transport is None:
            slot.transport = done.result()[0]
        if slot.released and not slot.transport.is_closing():
            slot.transport.abort()  # evicted before its transport existed

    # -- the table of connections ------------------------------------------------------------------

    def _make_room(self, newcomer: str, newcomer_protected: bool) -> bool:
        """True when the newcomer may have a slot: below the cap, after an eviction, or in the overflow."""
        if len(self._slots) < self.limits.max_connections:
            return True
        victim = self._victim(newcomer, newcomer_protected)
        if victim is not None:
            self.evicted += 1
            # A turn the victim frees is handed out once the newcomer is queued (Gate._first_bytes), not before.
            self._making_room = True
            try:
                victim.abort()
            finally:
                self._making_room = False
            return True
        return len(self._slots) < self.limits.max_connections + self.limits.overflow

    def _victim(self, newcomer: str, newcomer_protected: bool) -> Slot | None:
        # 1. The oldest idle connection (API-server addresses only when no one else has one).
        idle = next((slot for slot in self._idle if not slot.protected), None)
        if idle is not None or self._idle:
            return idle or next(iter(self._idle))
        # 2. For an API-server address: the oldest handshake or request still arriving from anyone else.
        if newcomer_protected:
            return next((slot for slot in self._reading if not slot.protected), None)
        # 3. A handshake or request arriving for a long while, from an address over its fair share, when the
        # newcomer is under.
        hosts = len(self._per_host) + (newcomer not in self._per_host)
        share = self.limits.max_connections // max(1, hosts)
        if self._per_host.get(newcomer, 0) >= share:
            return None
        cutoff = time.monotonic() - READING_EVICTABLE_AFTER
        for slot in self._reading:
            if slot.since > cutoff:
                break
            if not slot.protected and self._per_host.get(slot.host, 0) > share:
                return slot
        return None

    def _move(self, slot: Slot, state: str) -> None:
        self._unlist(slot)
        slot.state = state
        slot.since = time.monotonic()
        if state == IDLE:
            self._idle[slot] = None
        elif state == READING:
            self._reading[slot] = None

    def _unlist(self, slot: Slot) -> None:
        self._idle.pop(slot, None)
        self._reading.pop(slot, None)

    def _forget(self, slot: Slot) -> None:
        self._end_turn(slot)
        if slot not in self._slots:
            return
        self._unlist(slot)
        self._slots.discard(slot)
        left = self._per_host.get(slot.host, 1) - 1
        if left > 0:
            self._per_host[slot.host] = left
        else:
            self._per_host.pop(slot.host, None)
