"""A fault-injecting HTTP reverse proxy to put between boto3 and moto (tests only).

Why it exists: the fetcher's promises are about what happens when AWS
misbehaves (non-zero exit with a precise message, stale-but-intact files,
bounded jittered back-off). moto answers every request perfectly, and patching
botocore would skip the very code under test (retry config, timeouts, error
translation). So the fetcher runs unmodified with ``AWS_ENDPOINT_URL`` pointed
at this proxy, which forwards to moto except when a fault plan says otherwise:

- ``Fault.error(500|503, code)``: an AWS JSON error body (``__type`` +
  ``x-amzn-ErrorType``), as Secrets Manager and SSM send for the awsJson1.1
  protocol;
- ``Fault.throttle(code)``: HTTP 400 with ``ThrottlingException`` or
  ``TooManyRequestsException``, which botocore classifies as throttling;
- ``Fault.latency(seconds)``: forward, but only after a delay;
- ``Fault.reset()``: read the request, then close the socket with SO_LINGER 0,
  so the client sees a TCP RST instead of a response;
- ``Fault.timeout(hold)``: read the request and answer nothing for ``hold``
  seconds (longer than the client's read timeout), then reset.

A fault can be limited to one ``X-Amz-Target`` (``secretsmanager.GetSecretValue``),
to the first N matching requests (``times``), after some pass (``skip``), to a
time window (``start``/``end`` on ``time.monotonic()``) and to a probability.
Every request is recorded with its arrival time, target and outcome, which is
how tests measure retry counts and back-off intervals without trusting the
client's own account.
"""

from __future__ import annotations

import http.client
import json
import random
import socket
import struct
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Literal
from urllib.parse import urlsplit

FaultKind = Literal["error", "latency", "reset", "timeout"]
_HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade", "content-length"}
)


@dataclass
class Fault:
    """One fault plan. Build it with the class methods; `hits` counts how often it fired."""

    kind: FaultKind
    status: int = 500
    code: str = "InternalServiceError"
    message: str = "injected by faultproxy"
    delay: float = 0.0
    target: str | None = None
    times: int | None = None
    skip: int = 0
    start: float | None = None
    end: float | None = None
    probability: float = 1.0
    hits: int = 0
    seen: int = 0

    @classmethod
    def error(cls, status: int = 500, code: str | None = None, **options: object) -> Fault:
        default = {500: "InternalServiceError", 503: "ServiceUnavailable"}.get(status, "InternalFailure")
        return cls(kind="error", status=status, code=code or default, **options)  # type: ignore[arg-type]

    @classmethod
    def throttle(cls, code: str = "ThrottlingException", **options: object) -> Fault:
        return cls(kind="error", status=400, code=code, message="Rate exceeded", **options)  # type: ignore[arg-type]

    @classmethod
    def latency(cls, seconds: float, **options: object) -> Fault:
        return cls(kind="latency", delay=seconds, **options)  # type: ignore[arg-type]

    @classmethod
    def reset(cls, **options: object) -> Fault:
        return cls(kind="reset", **options)  # type: ignore[arg-type]

    @classmethod
    def timeout(cls, hold: float = 30.0, **options: object) -> Fault:
        return cls(kind="timeout", delay=hold, **options)  # type: ignore[arg-type]

    def label(self) -> str:
        if self.kind == "error":
            return f"error:{self.status}:{self.code}"
        return self.kind

    def _matches(self, target: str, now: float, rng: random.Random) -> bool:
        """Called under the proxy's lock; consumes `skip` and `times` budget."""
        if self.target is not None and target != self.target:
            return False
        if self.start is not None and now < self.start:
            return False
        if self.end is not None and now >= self.end:
            return False
        self.seen += 1
        if self.seen <= self.skip:
            return False
        if self.times is not None and self.hits >= self.times:
            return False
        if self.probability < 1.0 and rng.random() >= self.probability:
            return False
        self.hits += 1
        return True


@dataclass
class Record:
    """One request as the proxy saw it."""

    at: float  # time.monotonic() on arrival
    target: str
    outcome: str  # "forwarded:<status>" or the fault's label
    # time.monotonic() once the answer (or the reset) went out; the gap from here to the client's
    # next request is the client's own wait, without the round trip.
    finished: float | None = None


@dataclass
class FaultProxy:
    """Threaded reverse proxy: ``with FaultProxy(moto_url) as proxy: ... proxy.url``."""

    upstream: str
    seed: int = 0
    faults: list[Fault] = field(default_factory=list)
    records: list[Record] = field(default_factory=list)

    def __post_init__(self) -> None:
        parts = urlsplit(self.upstream)
        self._upstream_host = parts.hostname or "127.0.0.1"
        self._upstream_port = parts.port or 80
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._rng = random.Random(self.seed)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.url = ""

    # --- lifecycle ---
    def start(self) -> FaultProxy:
        proxy = self

        class Handler(_ProxyHandler):
            owner = proxy

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        self._server = server
        self.url = f"http://127.0.0.1:{server.server_address[1]}"
        self._thread = threading.Thread(target=server.serve_forever, args=(0.05,), name="faultproxy", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- fault plans ---
    def add(self, fault: Fault) -> Fault:
        with self._lock:
            self.faults.append(fault)
        return fault

    def add_window(self, fault: Fault, duration: float, begin_in: float = 0.0) -> Fault:
        """Make `fault` active from now + begin_in for `duration` seconds."""
        now = time.monotonic()
        fault.start = now + begin_in
        fault.end = now + begin_in + duration
        return self.add(fault)

    def clear(self) -> None:
        with self._lock:
            self.faults.clear()

    def reset_records(self) -> None:
        with self._lock:
            self.records.clear()

    # --- observations ---
    def snapshot(self) -> list[Record]:
        with self._lock:
            return list(self.records)

    def count(self, target: str | None = None, outcome_prefix: str | None = None) -> int:
        return len(self.select(target, outcome_prefix))

    def select(self, target: str | None = None, outcome_prefix: str | None = None) -> list[Record]:
        return [
            record
            for record in self.snapshot()
            if (target is None or record.target == target)
            and (outcome_prefix is None or record.outcome.startswith(outcome_prefix))
        ]

    def counts_by_target(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for record in self.snapshot():
            counts[record.target] = counts.get(record.target, 0) + 1
        return counts

    def wait_for(self, predicate: Callable[[FaultProxy], bool], timeout: float, interval: float = 0.02) -> bool:
        """Poll `predicate(self)` until true or `timeout` seconds pass (a liveness wait, not a timing claim)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self):
                return True
            time.sleep(interval)
        return predicate(self)

    # --- used by the handler ---
    def _plan(self, target: str) -> tuple[Fault | None, float]:
        now = time.monotonic()
        with self._lock:
            chosen = next((fault for fault in self.faults if fault._matches(target, now, self._rng)), None)
        return chosen, now

    def _record(self, at: float, target: str, outcome: str) -> Record:
        record = Record(at, target, outcome)
        with self._lock:
            self.records.append(record)
        return record


class _ProxyHandler(BaseHTTPRequestHandler):
    owner: FaultProxy
    protocol_version = "HTTP/1.1"  # keep-alive, as botocore's pooled connections expect
    _upstream: http.client.HTTPConnection | None = None

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        pass  # the records are the log; stderr noise would land in captured test output

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        target = self.headers.get("X-Amz-Target") or f"{self.command} {self.path.split('?')[0]}"
        fault, at = self.owner._plan(target)
        # Each record is made before answering, so a client that got its answer always finds it.
        if fault is None or fault.kind == "latency":
            if fault is not None and self.owner._stopping.wait(fault.delay):
                return self._reset(self.owner._record(at, target, "stopped"))
            status, headers, payload = self._forward(body)
            record = self.owner._record(at, target, f"{fault.label() + '+' if fault else ''}forwarded:{status}")
            self._reply(status, headers, payload)
        elif fault.kind == "error":
            record = self.owner._record(at, target, fault.label())
            self._send_error_body(fault)
        elif fault.kind == "timeout":
            record = self.owner._record(at, target, fault.label())
            self.owner._stopping.wait(fault.delay)
            return self._reset(record)
        else:
            return self._reset(self.owner._record(at, target, fault.label()))
        self.wfile.flush()
        record.finished = time.monotonic()
        return None

    do_POST = do_GET = do_PUT = do_DELETE = do_HEAD = _handle  # noqa: N815 - http.server's naming

    def _forward(self, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
        headers["Content-Length"] = str(len(body))
        for attempt in (1, 2):
            if self._upstream is None:
                self._upstream = http.client.HTTPConnection(
                    self.owner._upstream_host, self.owner._upstream_port, timeout=60
                )
            try:
                self._upstream.request(self.command, self.path, body=body, headers=headers)
                response = self._upstream.getresponse()
                payload = response.read()
                break
            except (ConnectionError, http.client.HTTPException):
                # A kept-alive upstream connection that moto closed: reconnect once.
                self._upstream.close()
                self._upstream = None
                if attempt == 2:
                    raise
        kept = [(k, v) for k, v in response.getheaders() if k.lower() not in _HOP_BY_HOP | {"server", "date"}]
        return response.status, kept, payload

    def _reply(self, status: int, headers: list[tuple[str, str]], payload: bytes) -> None:
        self.send_response(status)
        for key, value in headers:
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def _send_error_body(self, fault: Fault) -> None:
        payload = json.dumps({"__type": fault.code, "message": fault.message}).encode()
        self.send_response(fault.status)
        self.send_header("Content-Type", "application/x-amz-json-1.1")
        self.send_header("x-amzn-ErrorType", fault.code)
        self.send_header("x-amzn-RequestId", str(uuid.uuid4()))
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _reset(self, record: Record) -> None:
        """Abort the TCP connection: SO_LINGER with a zero timeout makes close() send RST, not FIN."""
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
        except OSError:
            pass
        record.finished = time.monotonic()

    def finish(self) -> None:
        try:
            super().finish()
        except OSError:
            pass
        if self._upstream is not None:
            self._upstream.close()
