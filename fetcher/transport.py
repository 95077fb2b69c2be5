"""HTTP(S) calls for the cloud sources: pooled keep-alive connections, proxies, TLS, a CA bundle.

An SDK's transport costs more memory and start-up than the rest of the fetcher; this is the standard
library's sockets and ssl with the rules a pod needs, and knows nothing of AWS. Details: docs/aws-client.md.
"""

from __future__ import annotations

import base64
import os
import select
import socket
import ssl
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

from fetcher.httpwire import DEFAULT_MAX_REPLY_BYTES, MAX_LINE_BYTES, read_reply
from fetcher.httpwire import ConnectionClosedError as ConnectionClosedError
from fetcher.httpwire import ConnectTimeoutError as ConnectTimeoutError
from fetcher.httpwire import EndpointConnectionError as EndpointConnectionError
from fetcher.httpwire import InvalidHeaderError as InvalidHeaderError
from fetcher.httpwire import ProxyConnectionError as ProxyConnectionError
from fetcher.httpwire import ReadTimeoutError as ReadTimeoutError
from fetcher.httpwire import Reply as Reply
from fetcher.httpwire import SSLError as SSLError
from fetcher.httpwire import TransportError as TransportError
from fetcher.retry import Backoff as Backoff
from fetcher.retry import with_retries as with_retries

# --- Proxies. ------------------------------------------------------------------------


@dataclass(frozen=True)
class Proxies:
    """HTTPS_PROXY / HTTP_PROXY / NO_PROXY (either case), as curl and the AWS SDKs read them."""

    https: str | None = None
    http: str | None = None
    no_proxy: tuple[str, ...] = ()

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Proxies:
        def get(name: str) -> str | None:
            return environ.get(name.lower()) or environ.get(name.upper()) or None

        entries = (get("NO_PROXY") or "").replace(" ", "").split(",")
        return cls(https=get("HTTPS_PROXY"), http=get("HTTP_PROXY"), no_proxy=tuple(e for e in entries if e))

    def for_url(self, scheme: str, host: str, port: int) -> str | None:
        proxy = self.https if scheme == "https" else self.http
        if not proxy or self._bypassed(host.lower(), port):
            return None
        return proxy

    def _bypassed(self, host: str, port: int) -> bool:
        for entry in self.no_proxy:
            entry = entry.lower()
            if entry == "*":
                return True
            name, _, entry_port = entry.rpartition(":") if entry.count(":") == 1 else (entry, "", "")
            if entry_port and entry_port != str(port):
                continue
            name = name.lstrip(".")
            if host == name or host.endswith("." + name):
                return True
            if "/" in name and _in_network(host, name):
                return True
        return False


def _in_network(host: str, cidr: str) -> bool:
    import ipaddress  # only for a NO_PROXY that lists a network

    try:
        return ipaddress.ip_address(host.strip("[]")) in ipaddress.ip_network(cidr, strict=False)
    except ValueError:
        return False


# --- Connections. ----------------------------------------------------------------------


@dataclass(frozen=True)
class HttpSettings:
    connect_timeout: float = 2.0
    read_timeout: float = 5.0
    max_reply_bytes: int = DEFAULT_MAX_REPLY_BYTES
    # Idle connections kept per endpoint; the fetch pool's width.
    pool_size: int = 10
    ca_bundle: str | None = None
    proxies: Proxies = field(default_factory=Proxies)


class _Connection:
    """One socket (TLS or plain) and its buffered reader."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.reader = sock.makefile("rb")

    def close(self) -> None:
        self.reader.close()
        self.sock.close()


class HttpClient:
    """HTTP/1.1 with keep-alive connections per endpoint, shared by threads; one TLS context for the process.

    The request is written and the reply read here rather than by http.client: its header parsing
    (the email package) was a third of the CPU of a refresh, and every bound is explicit this way.
    """

    def __init__(self, settings: HttpSettings) -> None:
        self.settings = settings
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self._lock = threading.Lock()
        self._tls: ssl.SSLContext | None = None

    def request(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes = b"", deadline: float | None = None
    ) -> Reply:
        """One attempt: send, read a bounded reply. Raises a TransportError when no HTTP answer came.

        `deadline`: seconds for the whole exchange once connected; a reply that trickles in never trips the
        read timeout, so past the deadline the socket is shut down and the read fails (the Google client's).
        """
        parts = urlsplit(url)
        scheme, host = parts.scheme, parts.hostname or ""
        port = parts.port or (443 if scheme == "https" else 80)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        if scheme == "http" and self.settings.proxies.for_url(scheme, host, port):
            target = f"http://{parts.netloc}{target}"  # a plain-HTTP proxy takes the absolute form
        lines = [f"{method} {target} HTTP/1.1"]
        names = {name.lower() for name in headers}
        if "host" not in names:
            lines.append(f"Host: {parts.netloc.rpartition('@')[2]}")
        for name, value in headers.items():
            line = f"{name}: {value}"
            if "\r" in line or "\n" in line or "\0" in line:
                raise InvalidHeaderError(f"header {name!r} holds a line break")
            lines.append(line)
        if body or method == "POST":
            lines.append(f"Content-Length: {len(body)}")
        wire = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace") + body
        key = (scheme, host, port)
        connection = self._take(key) or self._connect(scheme, host, port)
        cutoff = _Cutoff(connection.sock, deadline) if deadline else None
        try:
            connection.sock.sendall(wire)
            reply, keep = read_reply(connection.reader, self.settings.max_reply_bytes)
        except TransportError:
            connection.close()
            raise
        except TimeoutError as exc:
            connection.close()
            raise ReadTimeoutError(f"read timeout on {host}:{port}") from exc
        except (OSError, ValueError) as exc:  # resets, TLS alerts mid-stream, a malformed reply
            connection.close()
            raise ConnectionClosedError(f"connection to {host}:{port} closed: {exc.__class__.__name__}") from exc
        spent = cutoff is not None and cutoff.cancel()
        if keep and not spent and _drained(connection):
            self._give(key, connection)
        else:
            connection.close()
        return reply

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, {}
        for connections in idle.values():
            for connection in connections:
                connection.close()

    def _connect(self, scheme: str, host: str, port: int) -> _Connection:
        settings = self.settings
        proxy_url = settings.proxies.for_url(scheme, host, port)
        sock: socket.socket | None = None
        try:
            if proxy_url:
                sock = self._through_proxy(proxy_url, scheme, host, port)
            else:
                sock = socket.create_connection((host, port), timeout=settings.connect_timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if scheme == "https":
                sock = self._context().wrap_socket(sock, server_hostname=host)
        except BaseException as exc:
            if sock is not None:
                sock.close()
            if isinstance(exc, TransportError) or not isinstance(exc, OSError):
                raise
            if isinstance(exc, TimeoutError):
                raise ConnectTimeoutError(f"connect timeout to {host}:{port}") from exc
            if isinstance(exc, ssl.SSLError):
                reason = getattr(exc, "reason", "") or ""
                raise SSLError(f"TLS failed with {host}: {exc.__class__.__name__} {reason}".strip()) from exc
            error = ProxyConnectionError if proxy_url else EndpointConnectionError
            raise error(f"could not connect to {host}:{port}: {exc.strerror or type(exc).__name__}") from exc
        sock.settimeout(settings.read_timeout)
        return _Connection(sock)

    def _through_proxy(self, proxy_url: str, scheme: str, host: str, port: int) -> socket.socket:
        proxy = urlsplit(proxy_url if "://" in proxy_url else f"http://{proxy_url}")
        sock = socket.create_connection((proxy.hostname or "", proxy.port or 80), timeout=self.settings.connect_timeout)
        if scheme != "https":
            return sock  # plain HTTP goes to the proxy with the absolute URL
        lines = [f"CONNECT {host}:{port} HTTP/1.1", f"Host: {host}:{port}"]
        if proxy.username:
            pair = f"{unquote(proxy.username)}:{unquote(proxy.password or '')}".encode()
            lines.append("Proxy-Authorization: Basic " + base64.b64encode(pair).decode())
        try:
            sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
            answer = b""
            # The whole answer within the connect timeout: one byte at a time never trips a per-read timeout.
            until = time.monotonic() + self.settings.connect_timeout
            while b"\r\n\r\n" not in answer:  # the proxy sends nothing after its answer until TLS starts
                left = until - time.monotonic()
                if left <= 0:
                    raise ProxyConnectionError(f"the proxy did not answer the CONNECT to {host}:{port} in time")
                sock.settimeout(left)
                chunk = sock.recv(4096)
                if not chunk or len(answer) > MAX_LINE_BYTES:
                    raise ProxyConnectionError(f"the proxy closed the CONNECT tunnel to {host}:{port}")
                answer += chunk
            sock.settimeout(self.settings.connect_timeout)
        except BaseException:
            sock.close()
            raise
        status = answer.split(b" ", 2)[1:2]
        if status != [b"200"]:
            sock.close()
            shown = status[0].decode("latin-1", "replace")[:3] if status else "?"
            raise ProxyConnectionError(f"the proxy refused the CONNECT tunnel to {host}:{port} (HTTP {shown})")
        return sock

    def _context(self) -> ssl.SSLContext:
        if self._tls is None:
            self._tls = tls_context(self.settings.ca_bundle)
        return self._tls

    def _take(self, key: tuple[str, str, int]) -> _Connection | None:
        with self._lock:
            idle = self._idle.get(key)
            while idle:
                connection = idle.pop()
                if _still_open(connection.sock):
                    return connection
                connection.close()
        return None

    def _give(self, key: tuple[str, str, int], connection: _Connection) -> None:
        with self._lock:
            idle = self._idle.setdefault(key, [])
            if len(idle) < self.settings.pool_size:
                idle.append(connection)
                return
        connection.close()


def tls_context(ca_bundle: str | None) -> ssl.SSLContext:
    """Verifying TLS 1.2+; the system's CAs looked up on demand where the store is a hashed directory.

    Loading the whole bundle file (what create_default_context does) keeps ~150 parsed CA
    certificates in memory, about 2.4 MB of a 25 MB sidecar; a hashed directory (c_rehash, as
    Debian's ca-certificates ships it) lets OpenSSL read only the CA a server's chain names.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # checks the certificate and the hostname
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if ca_bundle:
        context.load_verify_locations(cafile=ca_bundle)
        return context
    capath = ssl.get_default_verify_paths().capath
    if capath and _hashed_directory(capath):
        context.load_verify_locations(capath=capath)
    else:
        context.load_default_certs()
    return context


def _hashed_directory(path: str) -> bool:
    try:
        with os.scandir(path) as entries:
            return any(len(entry.name) == 10 and entry.name.endswith(".0") for entry in entries)
    except OSError:
        return False


class _Cutoff:
    """Shuts a socket down once `seconds` pass, so a read blocked on a trickling reply ends."""

    def __init__(self, sock: socket.socket, seconds: float) -> None:
        self.fired = False
        self._cancelled = False
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._shut, (sock,))
        self._timer.daemon = True
        self._timer.start()

    def _shut(self, sock: socket.socket) -> None:
        with self._lock:  # the timer can pass its own check just before cancel(): decide under the lock
            if self._cancelled:
                return
            self.fired = True
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:  # closed already, after a failed read
            pass

    def cancel(self) -> bool:
        """Stop the timer; True when it had fired (the connection is spent, never to be pooled)."""
        self._timer.cancel()
        with self._lock:
            self._cancelled = True
            return self.fired


def _drained(connection: _Connection) -> bool:
    """Nothing is left after the reply: bytes past its end must never be read as the next call's answer."""
    sock = connection.sock
    timeout = sock.gettimeout()
    try:
        sock.settimeout(0.0)
        return not connection.reader.peek(1)
    except (ssl.SSLWantReadError, BlockingIOError):
        return True
    except (OSError, ValueError):
        return False
    finally:
        sock.settimeout(timeout)


def _still_open(sock: socket.socket) -> bool:
    """An idle keep-alive socket that is readable has been closed by the server (or sent garbage)."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return False
    return not readable
