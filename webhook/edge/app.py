"""The HTTP face of the webhook: POST /mutate, health and readiness; and the metrics app.

The only module that speaks HTTP: bytes in, `admit`'s answer out, one log line and the metrics. How bodies
are bounded, why failures become `allowed: false`, why large bodies run on a thread: docs/admission.md.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from fastapi import FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import ClientDisconnect
from starlette.types import Receive, Scope, Send

from fetcher.contract import bounded
from fetcher.contract.logline import log_fields
from webhook.edge.metrics import AdmissionMetrics
from webhook.edge.networks import parse_networks, within
from webhook.ownerevents import OwnerEvents
from webhook.policy.admission import NOT_A_POD_CREATE, Decision, admit
from webhook.policy.memo import AdmissionMemo
from webhook.policy.review import MalformedReview, build_response, parse_review
from webhook.policy.view import ClusterView
from webhook.settings import Settings

log = logging.getLogger("ferry.webhook")
# A body refused as too large is still read (and dropped) up to this many more bytes, so its 413 arrives.
DRAIN_BYTES = 256 * 1024

INTERNAL_ERROR_MESSAGE = (
    "Ferry could not process this pod because of an internal error; the pod asked for secrets, so it was not "
    "admitted without them. Retry, and if it persists check the ferry-webhook logs for uid {uid}"
)
# The fail-closed answer (allowed: false, code 500), encoded once: only the uid changes, in its field and in the
# message, where it goes JSON-escaped as `json.dumps` would write it.
_INTERNAL_ERROR_ANSWER = json.dumps(
    build_response("{uid}", allowed=False, code=500, message=INTERNAL_ERROR_MESSAGE), separators=(",", ":")
).encode()


# Bytes of each body that never count against the shared budget: a real pod's review is a few to a few
# hundred KiB (docs/reliability.md measures a 256-container pod).
SMALL_BODY_BYTES = 64 * 1024
# Bytes past SMALL_BODY_BYTES that all bodies still arriving may hold together.
SHARED_BODY_BYTES = 8 * 1024 * 1024
# Longest text a client chose that goes into a log line (pod name, namespace, a denial's message).
LOG_TEXT_LIMIT = 300
# Warnings quoted in an admission's log line (each cut to LOG_TEXT_LIMIT); the count is logged in full.
LOGGED_WARNINGS = 3


class _TooLarge(Exception):
    def __init__(self, *, ended: bool) -> None:
        super().__init__()
        # Whether the body was read to its end anyway (nothing left that closing would cut off).
        self.ended = ended


class _OverBudget(Exception):
    pass


class BodyBudget:
    """Bytes held by request bodies still arriving, past each one's free SMALL_BODY_BYTES, bounded in all."""

    def __init__(self, shared_bytes: int = SHARED_BODY_BYTES, small_bytes: int = SMALL_BODY_BYTES) -> None:
        self.shared_bytes = shared_bytes
        self.small_bytes = small_bytes
        self.in_use = 0  # read by tests and the bench

    def take(self, count: int) -> bool:
        if self.in_use + count > self.shared_bytes:
            return False
        self.in_use += count
        return True

    def give_back(self, count: int) -> None:
        self.in_use -= count


def create_app(
    settings: Settings,
    cluster: ClusterView,
    *,
    native_sidecars: bool,
    ready_check: Callable[[], bool] = lambda: True,
    metrics: AdmissionMetrics | None = None,
    noop_endpoint: bool = True,
    body_budget: BodyBudget | None = None,
    owner_events: OwnerEvents | None = None,
) -> FastAPI:
    """The ASGI app. `ready_check` reports whether certificates are loaded (for /readyz)."""
    app = FastAPI(title="ferry-webhook", docs_url=None, redoc_url=None, openapi_url=None)
    stats = metrics or AdmissionMetrics()
    freshness = getattr(cluster, "freshness_seconds", None)
    if callable(freshness):
        stats.track_cache_freshness(freshness)
    handler = AdmissionHandler(settings, cluster, native_sidecars, stats, owner_events)
    app.state.metrics = stats
    app.state.settings = settings
    app.state.memo = handler.memo
    budget = body_budget or BodyBudget()
    app.state.body_budget = budget
    large_bodies = _LargeBodyWorker()

    @app.post("/mutate")
    async def mutate(request: Request) -> Response:
        started = time.perf_counter()
        try:
            body, held = await _read_body(request, settings.max_request_bytes, budget)
        except _OverBudget:
            stats.over_budget.inc()
            return _json(503, {"message": "too many large requests at once; retry"}, close=True)
        except _TooLarge as exc:
            stats.malformed.inc()
            return _json(
                413,
                {"message": f"the request body is larger than FERRY_MAX_REQUEST_BYTES ({settings.max_request_bytes})"},
                close=not (exc.ended or await _drain_refused(request, settings.max_request_bytes)),
            )
        except ClientDisconnect:
            return _json(400, {"message": "the client disconnected before sending the whole body"})
        try:
            peer = request.client.host if request.client is not None else None
            if len(body) <= budget.small_bytes:
                status, payload = handler.handle(body, peer=peer)
            else:
                # Off the event loop, one at a time, without the memo (see the module docstring); the budget
                # stays held until then, so large bodies waiting their turn stay bounded in bytes.
                status, payload = await asyncio.get_running_loop().run_in_executor(
                    large_bodies.executor(), functools.partial(handler.handle, body, memoize=False, peer=peer)
                )
        finally:
            budget.give_back(held)
        stats.latency.observe(time.perf_counter() - started)
        return Response(content=payload, status_code=status, media_type="application/json")

    if noop_endpoint:

        @app.post("/noop")
        async def noop(request: Request) -> Response:
            try:
                body, held = await _read_body(request, settings.max_request_bytes, budget)
                budget.give_back(held)
                review = json.loads(body)
                uid = str(review["request"]["uid"])
            except Exception:  # a baseline: any unreadable body is a 400
                return _json(400, {"message": "not an AdmissionReview"})
            return _json(200, build_response(uid))

    @app.get("/healthz")
    async def healthz() -> Response:
        return _json(200, {"status": "ok"})

    @app.get("/readyz")
    async def readyz() -> Response:
        checks = {"cluster": _safe(cluster.is_ready), "certificates": _safe(ready_check)}
        return _json(200 if all(checks.values()) else 503, {"ready": all(checks.values()), "checks": checks})

    return app


def metrics_app(metrics: AdmissionMetrics) -> Callable[[Scope, Receive, Send], Any]:
    """The plain-HTTP metrics listener's ASGI app: GET /metrics in Prometheus text format, 404 otherwise."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] != "/metrics":
            status, body, media = 404, b"not found: metrics are at GET /metrics\n", "text/plain"
        elif scope["method"] not in ("GET", "HEAD"):
            status, body, media = 405, b"method not allowed: use GET /metrics\n", "text/plain"
        else:
            status, body, media = 200, generate_latest(metrics.registry), CONTENT_TYPE_LATEST
        await Response(content=body, status_code=status, media_type=media)(scope, receive, send)

    return app


class AdmissionHandler:
    """Bytes in, (HTTP status, JSON bytes) out; never raises. The /mutate endpoint without the HTTP server."""

    def __init__(
        self,
        settings: Settings,
        cluster: ClusterView,
        native_sidecars: bool,
        metrics: AdmissionMetrics,
        owner_events: OwnerEvents | None = None,
    ) -> None:
        self.owner_events = owner_events
        self.settings = settings
        self.cluster = cluster
        self.native_sidecars = native_sidecars
        self.metrics = metrics
        self.memo: AdmissionMemo[Decision] = AdmissionMemo()
        # Any pod can reach /mutate and name any namespace and owner in a forged review: when the API server's
        # addresses are known, only reviews from them become owner Events (else the Event says it is unverified).
        self._event_sources = parse_networks(settings.api_server_addresses)

    def handle(self, body: bytes, *, memoize: bool = True, peer: str | None = None) -> tuple[int, bytes]:
        """`memoize=False`: neither read nor fill the memo (so another thread may run this).

        `peer`: the address the request came from (None when unknown), for owner Events only.
        """
        try:
            request = parse_review(body)
        except MalformedReview as exc:
            self.metrics.malformed.inc()
            _log({"outcome": "malformed", "reason": bounded(str(exc), LOG_TEXT_LIMIT)})
            return 400, _dumps({"message": f"not an AdmissionReview v1 request: {exc}"})
        except Exception as exc:  # e.g. RecursionError on absurdly nested JSON
            self.metrics.malformed.inc()
            _log({"outcome": "malformed", "error": type(exc).__name__})
            return 400, _dumps({"message": "the body could not be parsed as an AdmissionReview"})
        try:
            memo = self.memo if memoize else None
            decision = admit(
                request,
                self.cluster,
                self.settings,
                native_sidecars=self.native_sidecars,
                memo=memo,
                from_api_server=self._from_api_server(peer),
            )
        except MalformedReview as exc:
            self.metrics.malformed.inc()
            return 400, _dumps({"message": f"not an AdmissionReview v1 request: {exc}"})
        except Exception as exc:  # fail closed, never 5xx
            namespace = str(request.get("namespace") or "")
            self.metrics.record("error", dry_run=bool(request.get("dryRun")))
            fields = {
                "uid": bounded(str(request["uid"]), LOG_TEXT_LIMIT),
                "namespace": bounded(namespace, LOG_TEXT_LIMIT),
                "outcome": "error",
                "error": type(exc).__name__,
            }
            log.error("admission", extra={"fields": fields})
            return 200, _INTERNAL_ERROR_ANSWER.replace(b"{uid}", json.dumps(request["uid"]).encode()[1:-1])
        uid = request["uid"]
        dry_run = bool(request.get("dryRun"))
        self.metrics.record(decision.outcome, dry_run=dry_run, reason=decision.reason)
        entry: dict[str, Any] = {
            "uid": bounded(str(uid), LOG_TEXT_LIMIT),
            "namespace": bounded(str(decision.namespace), LOG_TEXT_LIMIT),
        }
        is_pod = decision.reason != NOT_A_POD_CREATE
        if is_pod:
            pod = request.get("object")
            meta = pod.get("metadata") if isinstance(pod, dict) else None  # a forged pod's may be any type
            name = (meta.get("name") or meta.get("generateName")) if isinstance(meta, dict) else None
            # A name the API server would refuse can still reach /mutate: the log line stays short.
            entry["pod"] = bounded(name, LOG_TEXT_LIMIT) if isinstance(name, str) else None
        entry.update(decision.log_fields)
        if decision.outcome == "denied" and decision.message:
            entry["message"] = bounded(decision.message, LOG_TEXT_LIMIT)
        if decision.warnings:
            entry["warningText"] = [bounded(text, LOG_TEXT_LIMIT) for text in decision.warnings[:LOGGED_WARNINGS]]
        if dry_run and is_pod:
            entry["dryRun"] = True
        _log(entry)
        if self.owner_events is not None and is_pod and (decision.warnings or decision.outcome == "denied"):
            # Queued for a background thread (webhook.ownerevents): no API call on the admission path.
            verified = bool(self._event_sources) and self._from_api_server(peer)
            if verified or not self._event_sources:
                self.owner_events.offer(
                    request, decision.outcome, decision.warnings, decision.message, verified=verified
                )
        return 200, decision.encode(uid)

    def _from_api_server(self, peer: str | None) -> bool:
        """The review came from FERRY_API_SERVER_ADDRESSES; True when those are not set (nothing to check)."""
        return not self._event_sources or (peer is not None and within(peer, self._event_sources))


class _LargeBodyWorker:
    """One thread, started on first use, that admits the large bodies one at a time."""

    def __init__(self) -> None:
        self._executor: ThreadPoolExecutor | None = None

    def executor(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ferry-large-body")
        return self._executor


async def _drain_refused(request: Request, max_request_bytes: int) -> bool:
    """Drain a body refused as too large when it is only a little too large; True when it was read to its end.

    With a Content-Length nothing was read yet: a body of at most max + DRAIN_BYTES is read whole (no more
    work than an accepted body of the largest size). Without one, the body was read past the cap and at
    most DRAIN_BYTES more are read.
    """
    declared = request.headers.get("content-length")
    if declared and declared.isdigit():
        size = int(declared)
        return size <= max_request_bytes + DRAIN_BYTES and await _discard_rest(request, size)
    return await _discard_rest(request, DRAIN_BYTES)


async def _discard_rest(request: Request, limit: int) -> bool:
    """Read and drop what is left of a refused body, up to `limit` bytes; True when it ended within that.

    Closing a connection that still has unread bytes resets it, and the client can lose the answer with
    them; a body just over the cap is read to its end so its 413 arrives. A larger one is not: the
    connection is closed instead (connguard's read deadline bounds the time either way).
    """
    seen = 0
    while seen <= limit:
        message = await request.receive()
        if message["type"] != "http.request":
            return False
        seen += len(message.get("body", b""))
        if not message.get("more_body", False):
            return True
    return False


async def _read_body(request: Request, limit: int, budget: BodyBudget) -> tuple[bytes, int]:
    """The body, and the bytes of the shared budget it holds (give them back once it is handled)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise _TooLarge(ended=False)
    chunks: list[bytes] = []
    size = 0
    taken = 0
    try:
        while True:
            message = await request.receive()
            if message["type"] != "http.request":
                raise ClientDisconnect()
            chunk = message.get("body", b"")
            more = bool(message.get("more_body", False))
            size += len(chunk)
            if size > limit:
                raise _TooLarge(ended=not more)
            over = size - budget.small_bytes - taken
            if over > 0:
                if not budget.take(over):
                    raise _OverBudget
                taken += over
            chunks.append(chunk)
            if not more:
                break
    except BaseException:
        budget.give_back(taken)
        raise
    return b"".join(chunks), taken


def _safe(check: Callable[[], bool]) -> bool:
    try:
        return bool(check())
    except Exception:  # a failing check means "not ready", not a 500
        return False


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _json(status: int, value: Any, *, close: bool = False) -> Response:
    """`close`: the body was not read to its end, so end the connection rather than read (and decrypt) the rest."""
    headers = {"connection": "close"} if close else None
    return Response(content=_dumps(value), status_code=status, media_type="application/json", headers=headers)


def _log(entry: Mapping[str, Any]) -> None:
    # log.info's line, written without the logging module's per-record work where logging is set up plainly.
    log_fields(log, logging.INFO, "admission", entry)
