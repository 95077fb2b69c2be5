"""A loopback HTTP/1.1 proxy that keeps connections alive in front of moto, which closes every one.

Why it exists: moto answers ``Connection: close``, so against it each call of
a refresh pays a TCP connect; AWS keeps connections open. Measured through
this proxy, the fetcher's CPU per refresh is what keep-alive endpoints cost
it. Each request is forwarded to moto on a fresh connection (the proxy's CPU,
not the fetcher's) and answered with a Content-Length and no Connection header.
"""

from __future__ import annotations

import http.client
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

LOOPBACK = "127.0.0.1"
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "date", "server"}


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client resetting its idle keep-alive connection (a sidecar stopped) is no error to print."""
        import sys

        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class KeepAliveProxy:
    """Listens on an ephemeral loopback port; forwards every request to `upstream_port`."""

    def __init__(self, upstream_port: int) -> None:
        upstream = upstream_port

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive: the connection stays open after each reply

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                headers = {name: value for name, value in self.headers.items() if name.lower() not in HOP_BY_HOP}
                connection = http.client.HTTPConnection(LOOPBACK, upstream, timeout=30)
                try:
                    sent = body if body or self.command == "POST" else None
                    connection.request(self.command, self.path, sent, headers)
                    reply = connection.getresponse()
                    data = reply.read()
                finally:
                    connection.close()
                # One write, no Nagle: a reply split in two would wait for the client's delayed ACK.
                lines = [f"HTTP/1.1 {reply.status} {reply.reason}"]
                lines += [f"{name}: {value}" for name, value in reply.getheaders() if name.lower() not in HOP_BY_HOP]
                lines.append(f"Content-Length: {len(data)}")
                self.wfile.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + data)

            def setup(self) -> None:
                super().setup()
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            do_GET = do_POST = _forward

        self._server = _QuietServer((LOOPBACK, 0), Handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, name="keepalive-proxy", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def __enter__(self) -> KeepAliveProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)
