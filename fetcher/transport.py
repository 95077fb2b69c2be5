"""HTTP(S) calls for the cloud sources: pooled connections, proxies, a CA bundle, bounded replies, retries.

Why it exists: the fetcher makes a handful of small JSON calls, and an SDK's
transport costs more memory and start-up time than the whole rest of the
fetcher (docs/aws-client.md). This module is the standard library's
sockets and ssl with the rules a pod needs: explicit timeouts, a bounded
reply size, CONNECT tunnelling through HTTPS_PROXY (NO_PROXY honoured), and
exponential backoff with full jitter bounded in attempts and in total time.
It knows nothing of AWS, so the Google source can use it as it is.
"""

from __future__ import annotations

import base64
import json
import os
import random
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

T = TypeVar("T")

# A secret is at most 64 KiB; a batch of 20 with metadata stays far below this.
DEFAULT_MAX_REPLY_BYTES = 4 * 1024 * 1024


# --- Errors: named as botocore names them, so termination messages read as before. ---------


class TransportError(Exception):
    """The request got no HTTP answer. `retryable`: another attempt may succeed."""

    retryable = True

    @property
    def code(self) -> str:
        return type(self).__name__


class EndpointConnectionError(TransportError):
    """Nothing answered: connection refused, no route, or the name does not resolve."""


class ConnectTimeoutError(TransportError):
    """The TCP connection or TLS handshake did not finish within the connect timeout."""


class ReadTimeoutError(TransportError):
    """The endpoint accepted the request but sent no reply within the read timeout."""


class ConnectionClosedError(TransportError):
    """The connection was reset or closed before a whole reply arrived."""


class ProxyConnectionError(TransportError):
    """The proxy refused the CONNECT tunnel or could not be reached."""


class SSLError(TransportError):
    """TLS failed: most often a certificate the CA bundle does not trust (AWS_CA_BUNDLE)."""

    retryable = False


class ReplyTooLargeError(TransportError):
    """The reply exceeded the size bound: a broken or hostile endpoint, not a secret."""

    retryable = False


@dataclass(frozen=True)
class Reply:
    status: int
    headers: Mapping[str, str]  # names lower-cased
    body: bytes

    def __repr__(self) -> str:  # the body may be a secret: never shown, even in a traceback
        return f"Reply(status={self.status}, <{len(self.body)} bytes>)"

    def json(self) -> Any:
        """The body as JSON, or {} when it is empty or not JSON (errors still carry their status)."""
        try:
            return json.loads(self.body) if self.body else {}
        except ValueError:
            return {}


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


MAX_LINE_BYTES = 16 * 1024
MAX_HEADERS = 100


class InvalidHeaderError(TransportError):
    """A header to send holds a line break: never sent, never retried."""

    retryable = False


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

    def request(self, method: str, url: str, headers: Mapping[str, str], body: bytes = b"") -> Reply:
        """One attempt: send, read a bounded reply. Raises a TransportError when no HTTP answer came."""
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
            if any(char in f"{name}{value}" for char in "\r\n\0"):
                raise InvalidHeaderError(f"header {name!r} holds a line break")
            lines.append(f"{name}: {value}")
        if body or method == "POST":
            lines.append(f"Content-Length: {len(body)}")
        wire = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace") + body
        key = (scheme, host, port)
        connection = self._take(key) or self._connect(scheme, host, port)
        try:
            connection.sock.sendall(wire)
            reply, keep = _read_reply(connection.reader, self.settings.max_reply_bytes)
        except TransportError:
            connection.close()
            raise
        except TimeoutError as exc:
            connection.close()
            raise ReadTimeoutError(f"read timeout on {host}:{port}") from exc
        except (OSError, ValueError) as exc:  # resets, TLS alerts mid-stream, a malformed reply
            connection.close()
            raise ConnectionClosedError(f"connection to {host}:{port} closed: {exc.__class__.__name__}") from exc
        if keep:
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
            while b"\r\n\r\n" not in answer:  # the proxy sends nothing after its answer until TLS starts
                chunk = sock.recv(4096)
                if not chunk or len(answer) > MAX_LINE_BYTES:
                    raise ProxyConnectionError(f"the proxy closed the CONNECT tunnel to {host}:{port}")
                answer += chunk
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


def _read_reply(reader: Any, limit: int) -> tuple[Reply, bool]:
    """Status line, headers and body of one reply, each bounded; and whether the connection stays open."""
    while True:
        status_line = _line(reader)
        if not status_line:
            raise ConnectionClosedError("the connection closed before a reply")
        version, _, rest = status_line.partition(b" ")
        code = rest[:3]
        if not version.startswith(b"HTTP/1.") or not code.isdigit():
            raise ConnectionClosedError("the reply is not HTTP/1.x")
        headers: dict[str, str] = {}
        for _ in range(MAX_HEADERS + 1):
            line = _line(reader)
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        else:
            raise ConnectionClosedError(f"the reply has more than {MAX_HEADERS} headers")
        status = int(code)
        if status >= 200 or status == 101:
            break  # 1xx (100 Continue) precede the real reply
    connection = headers.get("connection", "").lower()
    keep = version == b"HTTP/1.1" and "close" not in connection or "keep-alive" in connection
    if status in (204, 304):
        return Reply(status, headers, b""), keep
    if "chunked" in headers.get("transfer-encoding", "").lower():
        return Reply(status, headers, _chunked(reader, limit)), keep
    length = headers.get("content-length")
    if length is not None:
        if not length.isdigit():
            raise ConnectionClosedError("the reply's Content-Length is not a number")
        if int(length) > limit:
            raise ReplyTooLargeError(f"reply of {length} bytes exceeds {limit}")
        body = reader.read(int(length))
        if len(body) < int(length):
            raise ConnectionClosedError(f"the reply ended after {len(body)} of {length} bytes")
        return Reply(status, headers, body), keep
    body = reader.read(limit + 1)  # no length: the body ends when the connection closes
    if len(body) > limit:
        raise ReplyTooLargeError(f"reply exceeds {limit} bytes")
    return Reply(status, headers, body), False


def _chunked(reader: Any, limit: int) -> bytes:
    body = bytearray()
    while True:
        size_line = _line(reader).split(b";", 1)[0].strip()
        try:
            size = int(size_line, 16)
        except ValueError:
            raise ConnectionClosedError("a malformed chunk in the reply") from None
        if size == 0:
            while _line(reader) not in (b"\r\n", b"\n", b""):
                pass  # trailers
            return bytes(body)
        if len(body) + size > limit:
            raise ReplyTooLargeError(f"reply exceeds {limit} bytes")
        chunk = reader.read(size + 2)
        if len(chunk) < size + 2:
            raise ConnectionClosedError("the reply ended inside a chunk")
        body += chunk[:size]


def _line(reader: Any) -> bytes:
    line: bytes = reader.readline(MAX_LINE_BYTES + 1)
    if len(line) > MAX_LINE_BYTES:
        raise ConnectionClosedError(f"a reply line is longer than {MAX_LINE_BYTES} bytes")
    return line


def _still_open(sock: socket.socket) -> bool:
    """An idle keep-alive socket that is readable has been closed by the server (or sent garbage)."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return False
    return not readable


# --- Retries. ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with full jitter, bounded in attempts and in total time."""

    max_attempts: int = 5
    base: float = 0.25
    cap: float = 8.0
    # No retry starts once the call has taken this long, sleeps included.
    budget: float = 30.0

    def delay(self, retry: int, rng: Callable[[], float] = random.random) -> float:
        return float(rng() * min(self.cap, self.base * 2.0**retry))


def with_retries(
    attempt: Callable[[], T],
    retryable: Callable[[BaseException], bool],
    backoff: Backoff,
    *,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    rng: Callable[[], float] = random.random,
) -> T:
    """Call `attempt` until it returns, its error is not retryable, or the attempts or the budget run out."""
    started = clock()
    number = 1
    while True:
        try:
            return attempt()
        except Exception as exc:
            if number >= backoff.max_attempts or not retryable(exc):
                raise
            delay = backoff.delay(number - 1, rng)
            if clock() - started + delay > backoff.budget:
                raise
            sleep(delay)
            number += 1
