"""Serve an ASGI app over TLS with uvicorn, behind the edge's connection guards, with certificate hot reload.

The API server reaches the webhook only over TLS, and restarting for a renewed
certificate would drop admissions, so the certificate is reloaded in place.
Details: docs/admission.md ("The TLS server"); the guards: docs/reliability.md ("Threat model").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import ssl
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import uvicorn
from uvicorn.config import LOGGING_CONFIG

from webhook.edge.connguard import REQUEST_READ_DEADLINE, GuardedH11Protocol, guarded_protocol
from webhook.edge.gate import Networks
from webhook.edge.gatedserver import (
    MAX_CONNECTIONS,
    MAX_METRICS_CONNECTIONS,
    GatedServer,
    admission_gate_limits,
    limit_malloc_arenas,
    metrics_gate_limits,
    raise_open_file_limit,
    return_free_memory,
    settle_interpreter,
)
from webhook.edge.gatelimits import HANDSHAKE_DEADLINE, MAX_PENDING_CONNECTIONS, GateLimits

__all__ = [
    "MAX_CONNECTIONS",
    "admission_gate_limits",
    "metrics_gate_limits",
    "raise_open_file_limit",
    "MAX_METRICS_CONNECTIONS",
    "HANDSHAKE_DEADLINE",
    "MAX_PENDING_CONNECTIONS",
    "MINIMUM_TLS_VERSION",
    "REQUEST_READ_DEADLINE",
    "TLS12_CIPHERS",
    "CertReloader",
    "GatedServer",
    "GuardedH11Protocol",
    "guarded_protocol",
    "metrics_config",
    "ReloadingServer",
    "run_server",
    "serve",
    "server_config",
]

log = logging.getLogger(__name__)

MINIMUM_TLS_VERSION = ssl.TLSVersion.TLSv1_2
# OpenSSL cipher string for TLS 1.2: ECDHE key exchange with AEAD ciphers only (no CBC, no static RSA). TLS 1.3's
# suites are all AEAD, and the API server's Go client offers both kinds.
TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"
_FileState = tuple[int, int, int, int]  # (device, inode, size, mtime_ns)


def _file_state(path: Path) -> _FileState | None:
    try:
        st = os.stat(path)  # follows symlinks: kubelet swaps a `..data` symlink on Secret updates
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


class CertReloader:
    """Reload a live server SSLContext's certificate chain when its files change."""

    def __init__(
        self,
        context: ssl.SSLContext,
        cert_file: Path,
        key_file: Path,
        *,
        loaded_state: tuple[_FileState | None, _FileState | None] | None = None,
    ) -> None:
        """`loaded_state`: the files' state taken *before* `context` loaded them (default: now)."""
        self.context = context
        self.cert_file = Path(cert_file)
        self.key_file = Path(key_file)
        self.reloads = 0  # successful reloads, for tests and logs
        self._loaded_state = loaded_state or self.state()

    def state(self) -> tuple[_FileState | None, _FileState | None]:
        """(cert, key) file identity and modification state; None for a missing file."""
        return (_file_state(self.cert_file), _file_state(self.key_file))

    def check(self) -> bool:
        """Reload if the files changed and form a valid pair; True if the live context was reloaded.

        Call it from the thread that runs the event loop (``reload_loop`` does).
        """
        state = self.state()
        if state == self._loaded_state or None in state:
            return False
        try:
            cert_pem = self.cert_file.read_bytes()
            key_pem = self.key_file.read_bytes()
        except OSError as exc:
            log.warning("cannot read TLS files for reload (%s); keeping the current certificate", exc)
            return False
        with tempfile.TemporaryDirectory(prefix="ferry-tls-") as tmp:
            cert_snapshot, key_snapshot = Path(tmp) / "tls.crt", Path(tmp) / "tls.key"
            cert_snapshot.write_bytes(cert_pem)
            fd = os.open(key_snapshot, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(key_pem)
            try:
                ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert_snapshot, key_snapshot)
            except (ssl.SSLError, OSError, ValueError) as exc:
                # Probably mid-update (new cert, old key): try again on the next poll.
                log.warning("TLS files changed but do not form a valid pair yet (%s); will retry", exc)
                return False
            self.context.load_cert_chain(cert_snapshot, key_snapshot)
        self._loaded_state = state
        self.reloads += 1
        log.info("reloaded TLS certificate from %s", self.cert_file)
        return True

    async def reload_loop(self, interval: float) -> None:
        """Poll every `interval` seconds until cancelled."""
        while True:
            await asyncio.sleep(interval)
            try:
                self.check()
            except Exception:  # never let a reload bug take the server down
                log.exception("TLS certificate reload failed; keeping the current certificate")


class ReloadingServer(GatedServer):
    """uvicorn's server plus our certificate reloader, run in the server's own event loop.

    Tests and benchmarks run this same server in a thread (`tests.support.tlsserver.TLSServer`)."""

    def __init__(
        self,
        config: uvicorn.Config,
        cert_file: Path,
        key_file: Path,
        reload_interval: float,
        *,
        metrics: uvicorn.Config | None = None,
        limits: GateLimits | None = None,
        metrics_limits: GateLimits | None = None,
    ) -> None:
        """`metrics`: the config of the plain-HTTP metrics listener (`metrics_config`), run alongside."""
        super().__init__(config, limits or GateLimits(max_connections=MAX_CONNECTIONS))
        self.cert_file = cert_file
        self.key_file = key_file
        self.reload_interval = reload_interval
        self.reloader: CertReloader | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.metrics_server = (
            GatedServer(metrics, metrics_limits or metrics_gate_limits()) if metrics is not None else None
        )

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        # Taken before the context reads the files, so a change in between is not missed.
        before = (_file_state(self.cert_file), _file_state(self.key_file))
        if not self.config.loaded:
            self.config.load()  # builds the SSLContext through _tls_context_factory
        assert self.config.ssl is not None
        self.reloader = CertReloader(self.config.ssl, self.cert_file, self.key_file, loaded_state=before)
        self.loop = asyncio.get_running_loop()
        task = asyncio.create_task(self.reloader.reload_loop(self.reload_interval), name="ferry-cert-reloader")
        trimmer = asyncio.create_task(return_free_memory(), name="ferry-malloc-trim")
        metrics = self.metrics_server
        try:
            if metrics is not None:
                metrics.config.load()
                metrics.lifespan = metrics.config.lifespan_class(metrics.config)
                await metrics.startup()
            await super().serve(sockets=sockets)
        finally:
            if metrics is not None and metrics.started:
                metrics.force_exit = True  # a scrape in flight is not worth waiting for
                await metrics.shutdown()
            for background in (task, trimmer):
                background.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await background

    @property
    def metrics_port(self) -> int | None:
        """The metrics listener's bound port (after start), for callers that asked for port 0."""
        servers = getattr(self.metrics_server, "servers", None) or []
        for listener in servers:
            for sock in listener.sockets:
                return int(sock.getsockname()[1])
        return None


def _tls_context_factory(config: uvicorn.Config, default: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
    context = default()
    context.minimum_version = MINIMUM_TLS_VERSION
    context.set_ciphers(TLS12_CIPHERS)
    return context


def server_config(
    app: Any,
    *,
    host: str,
    port: int,
    cert_file: Path,
    key_file: Path,
    log_level: str,
    access_log: bool,
    log_config: dict[str, Any] | None,
    timeout_graceful_shutdown: int | None,
    read_deadline: float = REQUEST_READ_DEADLINE,
    max_connections: int = MAX_CONNECTIONS,
    keep_alive: int = 5,
) -> uvicorn.Config:
    """The admission listener's config: TLS 1.2+, h11 with the guards of `webhook.edge.connguard`."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        ssl_certfile=str(cert_file),
        ssl_keyfile=str(key_file),
        ssl_context_factory=_tls_context_factory,
        http=guarded_protocol(read_deadline),
        loop="asyncio",
        # uvicorn counts the asking connection too: one more, so that MAX_CONNECTIONS are all served and only
        # the gate's overflow gets the 503.
        limit_concurrency=max_connections + 1,
        timeout_keep_alive=keep_alive,
        log_level=log_level,
        access_log=access_log,
        log_config=log_config,
        server_header=False,
        timeout_graceful_shutdown=timeout_graceful_shutdown,
        # The TCP peer is what decides whether a review may become an owner Event (webhook.ownerevents): never
        # an X-Forwarded-For header, which uvicorn otherwise trusts from 127.0.0.1 or FORWARDED_ALLOW_IPS.
        proxy_headers=False,
    )


def metrics_config(app: Any, *, host: str, port: int, read_deadline: float = REQUEST_READ_DEADLINE) -> uvicorn.Config:
    """The plain-HTTP metrics listener's config: same guards, a few connections, no lifespan, no access log."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http=guarded_protocol(read_deadline),
        limit_concurrency=MAX_METRICS_CONNECTIONS + 1,
        lifespan="off",
        access_log=False,
        log_config=None,
        server_header=False,
        timeout_graceful_shutdown=1,
    )


def run_server(server: ReloadingServer, sockets: list[socket.socket] | None = None) -> None:
    with asyncio.Runner(loop_factory=server.config.get_loop_factory()) as runner:
        runner.run(server.serve(sockets=sockets))


def serve(
    app: Any,
    *,
    host: str,
    port: int,
    cert_file: Path,
    key_file: Path,
    reload_interval: float = 30.0,
    log_level: str = "info",
    access_log: bool = False,
    log_config: dict[str, Any] | None = LOGGING_CONFIG,
    timeout_graceful_shutdown: int | None = 20,
    metrics_app: Any = None,
    metrics_port: int = 0,
    metrics_host: str = "127.0.0.1",
    metrics_allowed: Networks = (),
    api_server_addresses: Networks = (),
) -> None:
    """Serve `app` over TLS 1.2+ until SIGTERM/SIGINT, then return (blocking; call from the main thread).

    The certificate is re-read from `cert_file`/`key_file` when they change
    (checked every `reload_interval` seconds). On SIGTERM the server stops
    accepting and waits up to `timeout_graceful_shutdown` seconds for requests
    in flight. ``log_config=None`` leaves logging as the caller configured it.
    With `metrics_app` and a `metrics_port` other than 0, that app is served
    over plain HTTP on `metrics_host`:`metrics_port` too, to `metrics_allowed` sources only when set.
    Connections from `api_server_addresses` are the last ever closed to make room (`webhook.edge.gate`).
    """
    raise_open_file_limit()
    limit_malloc_arenas()
    config = server_config(
        app,
        host=host,
        port=port,
        cert_file=Path(cert_file),
        key_file=Path(key_file),
        log_level=log_level,
        access_log=access_log,
        log_config=log_config,
        timeout_graceful_shutdown=timeout_graceful_shutdown,
    )
    metrics = (
        metrics_config(metrics_app, host=metrics_host, port=metrics_port)
        if metrics_app is not None and metrics_port
        else None
    )
    server = ReloadingServer(
        config,
        Path(cert_file),
        Path(key_file),
        reload_interval,
        metrics=metrics,
        limits=admission_gate_limits(api_server_addresses),
        metrics_limits=metrics_gate_limits(metrics_allowed),
    )
    settle_interpreter()
    with _absorb_stop_signals():
        run_server(server)


@contextlib.contextmanager
def _absorb_stop_signals() -> Iterator[None]:
    """Make `serve` return after a graceful shutdown instead of dying by the signal.

    uvicorn handles SIGTERM/SIGINT itself and, once shut down, re-raises the
    signal to the handler that was installed before it. With this no-op handler
    in place, `serve` simply returns, so the caller can stop its own threads
    and exit 0.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, lambda signum, frame: None) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
