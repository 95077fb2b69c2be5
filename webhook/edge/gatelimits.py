"""The bounds of one gated listener: how many connections, how long a handshake, how handshakes take turns.

The gate (webhook.edge.gate) and the servers that build it (webhook.edge.server, webhook.edge.gatedserver) share
these numbers; each is explained where it is set, and docs/reliability.md gives the figures behind them.
"""

from __future__ import annotations

from dataclasses import dataclass

from webhook.edge.networks import Networks, within

# Seconds from accept for a connection's first bytes to arrive, and again for its TLS handshake to finish.
HANDSHAKE_DEADLINE = 3.0
# Accepted connections that have sent nothing yet, held as bare sockets (no TLS state, no HTTP parser).
MAX_PENDING_CONNECTIONS = 1024
# Connections beyond a full table that are still served, only to answer 503 (uvicorn's limit_concurrency).
OVERFLOW_CONNECTIONS = 64
# A request still arriving after this many seconds may be cut off to make room (see Gate._victim); a real
# one arrives in one write, in milliseconds.
READING_EVICTABLE_AFTER = 1.0
# TLS handshakes at once (the rest wait, by address in turn, API server first), so a burst of new connections
# never holds up requests on established ones; a turn ends with its handshake, after HANDSHAKE_TURN seconds, or
# once the server's part is sent (Gate._await_client; at most HANDSHAKES_AWAITING_CLIENT wait for the client).
HANDSHAKES_AT_ONCE = 2
HANDSHAKE_TURN = 0.1
HANDSHAKES_AWAITING_CLIENT = 16
# Within an address's queue the newest connection goes first (one the API server opens during a burst is not held
# behind the burst's backlog), unless the oldest has waited this long: then the oldest, so none is passed over for long.
HANDSHAKE_PATIENCE = 1.0
HANDSHAKES_AWAITING_CLIENT_PER_ADDRESS = 4  # so one address never holds every place


@dataclass(frozen=True)
class GateLimits:
    """The bounds of one listener; see the module docstring."""

    max_connections: int
    max_pending: int = MAX_PENDING_CONNECTIONS
    handshake_deadline: float = HANDSHAKE_DEADLINE
    overflow: int = OVERFLOW_CONNECTIONS
    # Addresses whose connections are closed to make room only when no one else's can be (the API server's).
    protected: Networks = ()
    handshakes: int = HANDSHAKES_AT_ONCE
    handshake_turn: float = HANDSHAKE_TURN
    awaiting_client: int = HANDSHAKES_AWAITING_CLIENT
    awaiting_client_per_address: int = HANDSHAKES_AWAITING_CLIENT_PER_ADDRESS
    handshake_patience: float = HANDSHAKE_PATIENCE
    # When set, connections from any other address are closed at accept.
    allowed: Networks = ()

    def is_protected(self, host: str) -> bool:
        return bool(self.protected) and within(host, self.protected)

    def is_allowed(self, host: str) -> bool:
        return not self.allowed or within(host, self.allowed)
