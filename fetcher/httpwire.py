"""HTTP/1.1 on the wire: what a reply may look like, every part bounded, and the errors of a call that got none.

A broken or hostile endpoint must cost a bounded error, never memory or a hang. The bounds: docs/aws-client.md.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# A secret is at most 64 KiB; a batch of 20 with metadata stays far below this.
DEFAULT_MAX_REPLY_BYTES = 4 * 1024 * 1024


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


MAX_LINE_BYTES = 16 * 1024
MAX_HEADERS = 100
# Interim (1xx) replies before the real one: a server that sends them without end never trips a read timeout.
MAX_INTERIM_REPLIES = 10


class InvalidHeaderError(TransportError):
    """A header to send holds a line break: never sent, never retried."""

    retryable = False


def read_reply(reader: Any, limit: int) -> tuple[Reply, bool]:
    """Status line, headers and body of one reply, each bounded; and whether the connection stays open."""
    for _ in range(MAX_INTERIM_REPLIES + 1):
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
            name, value = name.strip().lower(), value.strip()
            if name == "content-length" and headers.get(name, value) != value:
                raise ConnectionClosedError("the reply has conflicting Content-Length headers")
            headers[name] = value
        else:
            raise ConnectionClosedError(f"the reply has more than {MAX_HEADERS} headers")
        status = int(code)
        if status >= 200 or status == 101:
            break  # 1xx (100 Continue) precede the real reply
    else:
        raise ConnectionClosedError(f"the reply has more than {MAX_INTERIM_REPLIES} interim (1xx) replies")
    connection = headers.get("connection", "").lower()
    keep = version == b"HTTP/1.1" and "close" not in connection or "keep-alive" in connection
    if status in (204, 304):
        return Reply(status, headers, b""), keep
    if "chunked" in headers.get("transfer-encoding", "").lower():
        # With Content-Length as well, the reply's end is ambiguous: never reuse the connection.
        return Reply(status, headers, _chunked(reader, limit)), keep and "content-length" not in headers
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
            for _ in range(MAX_HEADERS + 1):  # trailers, bounded like the headers
                if _line(reader) in (b"\r\n", b"\n", b""):
                    return bytes(body)
            raise ConnectionClosedError(f"the reply has more than {MAX_HEADERS} trailers")
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
