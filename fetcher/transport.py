"""HTTP(S) calls for the cloud sources: pooled connections, proxies, a CA bundle, bounded replies, retries.

Why it exists: the fetcher makes a handful of small JSON calls, and an SDK's
transport costs more memory and start-up time than the whole rest of the
fetcher (docs/aws-client.md). This module is the standard library's
http.client and ssl with the rules a pod needs: explicit timeouts, a bounded
reply size, CONNECT tunnelling through HTTPS_PROXY (NO_PROXY honoured), and
exponential backoff with full jitter bounded in attempts and in total time.
It knows nothing of AWS, so the Google source can use it as it is.
"""

from __future__ import annotations

import base64
import http.client
import json
import random
import select
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


class HttpClient:
    """Keep-alive connections per endpoint, shared by threads; one TLS context for the process."""

    def __init__(self, settings: HttpSettings) -> None:
        self.settings = settings
        self._idle: dict[tuple[str, str, int], list[http.client.HTTPConnection]] = {}
        self._lock = threading.Lock()
        self._tls: ssl.SSLContext | None = None

    def request(self, method: str, url: str, headers: Mapping[str, str], body: bytes = b"") -> Reply:
        """One attempt: send, read a bounded reply. Raises a TransportError when no HTTP answer came."""
        parts = urlsplit(url)
        scheme, host = parts.scheme, parts.hostname or ""
        port = parts.port or (443 if scheme == "https" else 80)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        key = (scheme, host, port)
        if scheme == "http" and self.settings.proxies.for_url(scheme, host, port):
            target = f"http://{parts.netloc}{target}"  # a plain-HTTP proxy takes the absolute form
        connection = self._take(key) or self._connect(scheme, host, port)
        try:
            connection.request(method, target, body=body, headers=dict(headers))
            response = connection.getresponse()
            reply = self._read(response)
        except TransportError:
            connection.close()
            raise
        except TimeoutError as exc:
            connection.close()
            raise ReadTimeoutError(f"read timeout on {host}:{port}") from exc
        except ssl.SSLError as exc:
            connection.close()
            raise SSLError(f"TLS failed with {host}: {exc.__class__.__name__}") from exc
        except (OSError, http.client.HTTPException) as exc:
            connection.close()
            raise ConnectionClosedError(f"connection to {host}:{port} closed: {exc.__class__.__name__}") from exc
        if response.will_close:
            connection.close()
        else:
            self._give(key, connection)
        return reply

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, {}
        for connections in idle.values():
            for connection in connections:
                connection.close()

    def _read(self, response: http.client.HTTPResponse) -> Reply:
        limit = self.settings.max_reply_bytes
        declared = response.getheader("Content-Length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise ReplyTooLargeError(f"reply of {declared} bytes exceeds {limit}")
        body = response.read(limit + 1)
        if len(body) > limit:
            raise ReplyTooLargeError(f"reply exceeds {limit} bytes")
        if not response.isclosed():
            response.read()  # a chunked reply's terminator; bounded above
        headers = {name.lower(): value for name, value in response.getheaders()}
        return Reply(response.status, headers, body)

    def _connect(self, scheme: str, host: str, port: int) -> http.client.HTTPConnection:
        settings = self.settings
        proxy_url = settings.proxies.for_url(scheme, host, port)
        connection: http.client.HTTPConnection
        if proxy_url:
            proxy = urlsplit(proxy_url if "://" in proxy_url else f"http://{proxy_url}")
            proxy_host, proxy_port = proxy.hostname or "", proxy.port or 80
            auth = {}
            if proxy.username:
                pair = f"{unquote(proxy.username)}:{unquote(proxy.password or '')}".encode()
                auth["Proxy-Authorization"] = "Basic " + base64.b64encode(pair).decode()
            if scheme == "https":
                connection = http.client.HTTPSConnection(
                    proxy_host, proxy_port, timeout=settings.connect_timeout, context=self._context()
                )
                connection.set_tunnel(host, port, headers=auth)
            else:
                connection = http.client.HTTPConnection(proxy_host, proxy_port, timeout=settings.connect_timeout)
        elif scheme == "https":
            connection = http.client.HTTPSConnection(
                host, port, timeout=settings.connect_timeout, context=self._context()
            )
        else:
            connection = http.client.HTTPConnection(host, port, timeout=settings.connect_timeout)
        try:
            connection.connect()
        except TimeoutError as exc:
            connection.close()
            raise ConnectTimeoutError(f"connect timeout to {host}:{port}") from exc
        except ssl.SSLError as exc:
            connection.close()
            raise SSLError(f"TLS failed with {host}: {exc.__class__.__name__}") from exc
        except OSError as exc:
            connection.close()
            if proxy_url:
                raise ProxyConnectionError(f"proxy tunnel to {host}:{port} failed: {exc}") from exc
            raise EndpointConnectionError(f"could not connect to {host}:{port}: {exc}") from exc
        if connection.sock is not None:
            connection.sock.settimeout(settings.read_timeout)
        return connection

    def _context(self) -> ssl.SSLContext:
        if self._tls is None:
            self._tls = ssl.create_default_context(cafile=self.settings.ca_bundle or None)
        return self._tls

    def _take(self, key: tuple[str, str, int]) -> http.client.HTTPConnection | None:
        with self._lock:
            idle = self._idle.get(key)
            while idle:
                connection = idle.pop()
                if _still_open(connection):
                    return connection
                connection.close()
        return None

    def _give(self, key: tuple[str, str, int], connection: http.client.HTTPConnection) -> None:
        with self._lock:
            idle = self._idle.setdefault(key, [])
            if len(idle) < self.settings.pool_size:
                idle.append(connection)
                return
        connection.close()


def _still_open(connection: http.client.HTTPConnection) -> bool:
    """An idle keep-alive socket that is readable has been closed by the server (or sent garbage)."""
    sock = connection.sock
    if sock is None:
        return False
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
