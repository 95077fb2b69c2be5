"""uvicorn's server with its listening sockets served by `webhook.edge.gate`, and the bounds of both listeners.

Why it exists: `webhook.edge.server` builds the admission and metrics listeners;
the part that swaps asyncio's own server for the gate, and the numbers each
listener runs with, live here so that module stays about TLS and reloading.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import resource
import socket
import sys

import uvicorn

from webhook.edge.gate import MAX_PENDING_CONNECTIONS, Gate, GateLimits, Networks

log = logging.getLogger("webhook.edge.server")

# Connections served in all (uvicorn's limit_concurrency counts the asking one too); see webhook.edge.server.
MAX_CONNECTIONS = 512
# The metrics listener serves one scraper or two.
MAX_METRICS_CONNECTIONS = 16
MAX_METRICS_PENDING = 64
# The soft limit on open files is raised to the hard limit, up to this.
OPEN_FILES_WANTED = 65536


class GatedServer(uvicorn.Server):
    """uvicorn's server, its listening sockets served by `webhook.edge.gate.Gate` instead of asyncio's server."""

    def __init__(self, config: uvicorn.Config, limits: GateLimits) -> None:
        super().__init__(config)
        self.limits = limits
        self.gates: list[Gate] = []

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await self.lifespan.startup()
        if self.lifespan.should_exit:
            sys.exit(3)  # uvicorn's STARTUP_FAILURE
        config = self.config

        def create_protocol() -> asyncio.Protocol:
            return config.http_protocol_class(  # type: ignore[call-arg]
                config=config, server_state=self.server_state, app_state=self.lifespan.state
            )

        if sockets is None:
            host = config.host or "0.0.0.0"
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            try:
                sockets = [socket.create_server((host, config.port), family=family, backlog=config.backlog)]
            except OSError as exc:
                log.error("cannot listen on %s:%d: %s", host, config.port, exc)
                await self.lifespan.shutdown()
                sys.exit(3)
        self.gates = [Gate(sock, create_protocol, self.limits, config.ssl, config.backlog) for sock in sockets]
        self.servers = self.gates  # type: ignore[assignment]  # close() and wait_closed(), as uvicorn needs
        name = sockets[0].getsockname()
        log.info("listening on %s:%d (%s)", name[0], name[1], "TLS" if config.ssl else "plain HTTP")
        self.started = True


def admission_gate_limits(api_server_addresses: Networks = ()) -> GateLimits:
    """The admission listener's gate: MAX_CONNECTIONS served, the API server's addresses protected."""
    return GateLimits(max_connections=MAX_CONNECTIONS, protected=api_server_addresses)


def metrics_gate_limits(allowed: Networks = ()) -> GateLimits:
    """The metrics listener's gate: a few connections, a few pending, only `allowed` sources when set."""
    return GateLimits(
        max_connections=MAX_METRICS_CONNECTIONS, max_pending=MAX_METRICS_PENDING, overflow=4, allowed=allowed
    )


def raise_open_file_limit(wanted: int = OPEN_FILES_WANTED) -> int:
    """Raise the soft RLIMIT_NOFILE toward the hard limit (at most `wanted`); the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open-files limit from %d to %d: %s", soft, target, exc)
    if soft != resource.RLIM_INFINITY and soft < MAX_CONNECTIONS + MAX_PENDING_CONNECTIONS + 256:
        log.warning("only %d open files allowed; a connection flood may stop accept() before the caps do", soft)
    return int(soft)


# glibc's mallopt parameter for the number of malloc arenas.
_M_ARENA_MAX = -8


def limit_malloc_arenas(arenas: int = 2) -> bool:
    """Cap glibc's malloc arenas (the worker thread that admits large bodies gets its own otherwise, which keeps
    tens of MB of freed memory); as MALLOC_ARENA_MAX does. False where that is not glibc, or already set."""
    if "MALLOC_ARENA_MAX" in os.environ:
        return False
    try:
        libc = ctypes.CDLL(None)
        return bool(libc.mallopt(_M_ARENA_MAX, arenas))
    except (OSError, AttributeError):
        return False
