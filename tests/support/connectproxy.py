"""A tiny HTTP CONNECT proxy on loopback, and a TLS stub of an AWS endpoint behind it.

Why it exists: HTTPS_PROXY support must be tested with real CONNECT tunnelling
and real TLS. The proxy plays the corporate egress proxy: it resolves the
names it is told about (say ``secretsmanager.us-east-1.amazonaws.com``) to a
loopback port and refuses everything else, so traffic never leaves the machine
while the fetcher uses AWS's standard hostnames and verifies them with TLS.
"""

from __future__ import annotations

import select
import socket
import ssl
import threading
from collections.abc import Mapping
from http.server import ThreadingHTTPServer
from pathlib import Path

from tests.support.aws import LocalHttpStub, Responder
from webhook.tls.certs import generate_bundle


class ConnectProxy:
    """CONNECT host:port -> 127.0.0.1:routes[host]; every CONNECT line is recorded in `tunnels`."""

    def __init__(self, routes: Mapping[str, int]) -> None:
        self.routes = dict(routes)
        self.tunnels: list[str] = []
        self.auth: list[str] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="connect-proxy", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._tunnel, args=(client,), daemon=True).start()

    def _tunnel(self, client: socket.socket) -> None:
        with client:
            client.settimeout(5)
            head = b""
            while b"\r\n\r\n" not in head and len(head) < 8192:
                chunk = client.recv(1024)
                if not chunk:
                    return
                head += chunk
            lines = head.decode("latin-1").split("\r\n")
            method, _, rest = lines[0].partition(" ")
            authority = rest.split(" ")[0]
            self.tunnels.append(f"{method} {authority}")
            self.auth.extend(line.split(":", 1)[1].strip() for line in lines if line.lower().startswith("proxy-auth"))
            host, _, port = authority.rpartition(":")
            if method != "CONNECT" or host not in self.routes or port != "443":
                client.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
                return
            with socket.create_connection(("127.0.0.1", self.routes[host]), timeout=5) as upstream:
                client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                _pump(client, upstream, self._stop)

    def close(self) -> None:
        self._stop.set()
        self._listener.close()
        self._thread.join(timeout=5)


def _pump(one: socket.socket, other: socket.socket, stop: threading.Event) -> None:
    peers = {one: other, other: one}
    while not stop.is_set():
        readable, _, _ = select.select(list(peers), [], [], 0.2)
        for sock in readable:
            data = sock.recv(65536)
            if not data:
                return
            peers[sock].sendall(data)


class TlsStub:
    """A LocalHttpStub served over TLS with a fresh CA; `ca_file` is what AWS_CA_BUNDLE should name."""

    def __init__(self, responder: Responder, names: list[str], directory: Path) -> None:
        bundle = generate_bundle(names, ip_addresses=["127.0.0.1"])
        self.ca_file = directory / "ca.pem"
        self.ca_file.write_bytes(bundle.ca_pem)
        cert, key = directory / "tls.crt", directory / "tls.key"
        cert.write_bytes(bundle.cert_pem)
        key.write_bytes(bundle.key_pem)
        self.stub = LocalHttpStub(responder).start()
        server = self.stub._server
        assert isinstance(server, ThreadingHTTPServer)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        server.socket = context.wrap_socket(server.socket, server_side=True)
        self.port = server.server_address[1]

    def close(self) -> None:
        self.stub.stop()
