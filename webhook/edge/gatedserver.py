"""uvicorn's server with its listening sockets served by `webhook.edge.gate`, and the bounds of both listeners.

`webhook.edge.server` builds the admission and metrics listeners; the part that swaps asyncio's own server for the
gate, and the numbers each listener runs with, live here so that module stays about TLS and reloading.
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
import logging
import os
import resource
import socket
import sys
from collections.abc import Callable

import uvicorn

from webhook.edge.gate import Gate, Networks
from webhook.edge.gatelimits import MAX_PENDING_CONNECTIONS, GateLimits

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
# The interpreter lock's switch interval while serving (Python's default is 5 ms): the event loop gives up the
# lock on every socket call, and must not wait 5 ms to get it back while a large body is admitted on its thread.
SWITCH_INTERVAL = 0.001
# Objects allocated before the collector's youngest generation is examined (Python's default is 700).
GC_GEN0_THRESHOLD = 10_000


def limit_malloc_arenas(arenas: int = 1) -> bool:
    """Cap glibc's malloc arenas (the worker thread that admits large bodies gets its own otherwise, which keeps
    tens of MB of freed memory; one is enough, the interpreter lock serializes the threads anyway); as
    MALLOC_ARENA_MAX does. False where that is not glibc, or already set."""
    if "MALLOC_ARENA_MAX" in os.environ:
        return False
    try:
        libc = ctypes.CDLL(None)
        return bool(libc.mallopt(_M_ARENA_MAX, arenas))
    except (OSError, AttributeError):
        return False


def settle_interpreter() -> None:
    """Once start-up is done: freeze what exists so far out of the collector, collect less often, switch often.

    Everything imported and built at start-up lives as long as the process; frozen, no collection walks it
    again, so an old-generation collection stays short. A larger youngest generation means fewer collections."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_GEN0_THRESHOLD, older, oldest)
    sys.setswitchinterval(SWITCH_INTERVAL)


# Seconds between two returns of the allocator's free pages to the system (see `return_free_memory`).
TRIM_INTERVAL = 1.0


def _malloc_trim() -> Callable[[], object] | None:
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    return lambda: trim(0)


async def return_free_memory(interval: float = TRIM_INTERVAL) -> None:
    """Every `interval` seconds, hand the pages glibc holds free back to the system (malloc_trim), until cancelled.

    Large bodies leave freed holes inside the heap that glibc keeps for reuse, and only a hole at the heap's top
    is ever returned on its own: the budget run found 18 MB of the 146 MB peak free this way. A trim took 0.7 ms
    (median) there, on a thread of its own. Returns at once where that is not glibc."""
    trim = _malloc_trim()
    if trim is None:
        return
    while True:
        await asyncio.sleep(interval)
        await asyncio.to_thread(trim)  # the lock is released around the C call: the loop goes on meanwhile
