"""The webhook's own TLS server (`webhook.edge.server.ReloadingServer`) in a background thread.

Why it exists: tests and benchmarks need the real server (uvicorn, TLS 1.2+,
certificate hot reload) on a free loopback port, started and stopped around a
block; production only ever runs `webhook.edge.server.serve` in the main thread, so
this lives with the test support, not in the webhook package.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from webhook.edge.gate import Gate
from webhook.edge.gatelimits import GateLimits
from webhook.edge.server import ReloadingServer, metrics_config, run_server, server_config


class TLSServer:
    """The webhook's TLS server in a background thread, as a context manager (tests and benchmarks).

    ``with TLSServer(app, cert, key) as server:`` returns once the server
    accepts connections; ``server.url`` is ``https://127.0.0.1:PORT``. Port 0
    picks a free port. Leaving the block shuts the server down gracefully and
    joins its thread.
    """

    def __init__(
        self,
        app: Any,
        cert_file: Path,
        key_file: Path,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        reload_interval: float = 30.0,
        log_level: str = "warning",
        access_log: bool = False,
        startup_timeout: float = 10.0,
        metrics_app: Any = None,
        read_deadline: float | None = None,
        limits: GateLimits | None = None,
        metrics_limits: GateLimits | None = None,
        keep_alive: int | None = None,
    ) -> None:
        """`metrics_app`: also serve it over plain HTTP on a free port (`metrics_url`).

        `read_deadline`, `limits`, `metrics_limits` and `keep_alive` (seconds an idle connection is kept)
        override the server's guards (defaults: production's).
        """
        self.host = host
        self.cert_file = Path(cert_file)
        self.key_file = Path(key_file)
        self.startup_timeout = startup_timeout
        self._requested_port = port
        guards: dict[str, Any] = {}
        if read_deadline is not None:
            guards["read_deadline"] = read_deadline
        if keep_alive is not None:
            guards["keep_alive"] = keep_alive
        self._config = server_config(
            app,
            host=host,
            port=port,
            cert_file=self.cert_file,
            key_file=self.key_file,
            log_level=log_level,
            access_log=access_log,
            log_config=None,  # a library must not reconfigure the host process's logging
            timeout_graceful_shutdown=5,
            **guards,
        )
        metrics = metrics_config(metrics_app, host=host, port=0) if metrics_app is not None else None
        self._server = ReloadingServer(
            self._config,
            self.cert_file,
            self.key_file,
            reload_interval,
            metrics=metrics,
            limits=limits,
            metrics_limits=metrics_limits,
        )
        self._socket: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    @property
    def port(self) -> int:
        if self._socket is None:
            raise RuntimeError("TLSServer is not running")
        return int(self._socket.getsockname()[1])

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"https://{host}:{self.port}"

    @property
    def metrics_url(self) -> str:
        """``http://127.0.0.1:PORT/metrics`` of the plain-HTTP metrics listener (after start)."""
        port = self._server.metrics_port
        if port is None:
            raise RuntimeError("TLSServer runs no metrics listener")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{port}/metrics"

    @property
    def ssl_context(self) -> ssl.SSLContext:
        """The live server-side context (after start)."""
        assert self._config.ssl is not None
        return self._config.ssl

    @property
    def gate(self) -> Gate:
        """The admission listener's gate (after start): its counts, for tests."""
        return self._server.gates[0]

    @property
    def metrics_gate(self) -> Gate:
        """The metrics listener's gate (after start)."""
        assert self._server.metrics_server is not None
        return self._server.metrics_server.gates[0]

    @property
    def reloads(self) -> int:
        """How many times the certificate was reloaded from changed files."""
        return self._server.reloader.reloads if self._server.reloader else 0

    def reload_now(self, timeout: float = 10.0) -> bool:
        """Check the certificate files now, in the server's loop; True if the certificate was reloaded."""
        reloader, loop = self._server.reloader, self._server.loop
        if reloader is None or loop is None:
            raise RuntimeError("TLSServer is not running")

        async def check() -> bool:
            return reloader.check()

        return asyncio.run_coroutine_threadsafe(check(), loop).result(timeout)

    def start(self) -> TLSServer:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self._requested_port))
        except OSError:
            sock.close()
            raise
        sock.set_inheritable(True)
        self._socket = sock
        self._thread = threading.Thread(target=self._thread_main, name=f"ferry-tls-server-{self.port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + self.startup_timeout
        while not self._server.started:
            if self._error is not None or not self._thread.is_alive():
                self.stop()
                raise RuntimeError(f"TLS server failed to start: {self._error!r}") from self._error
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"TLS server did not start within {self.startup_timeout}s")
            time.sleep(0.01)
        return self

    def _thread_main(self) -> None:
        try:
            run_server(self._server, sockets=[self._socket] if self._socket else None)
        except BaseException as exc:  # reported by start()/stop(), not lost in a thread
            self._error = exc

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    def __enter__(self) -> TLSServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
