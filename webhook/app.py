"""The HTTP face of the webhook: POST /mutate, health, readiness and metrics.

Why it exists: this is the only module that speaks HTTP. It turns bytes into an
AdmissionRequest (review.py), asks `webhook.admission.admit` for the finished
answer, writes it back, and records metrics and one log line. It never answers 5xx: a body that is
not an AdmissionReview gets 400 (413 when too large); any other failure becomes
`allowed: false` with a generic message, because a pod that reached Ferry asked
for secrets (the webhook is scoped by matchConditions) and must not start
without them. Pods that did not ask are kept safe by that scoping, not here.

Admission is synchronous CPU work of about a millisecond, so it runs on the
event loop; there is no I/O on the request path (namespaces and
SecretProviderClasses come from an in-memory view). Identical pods (a
Deployment's replicas) are answered from the app's `AdmissionMemo` after the first.

`POST /noop` parses the JSON body and allows it with no other work: the
benchmark's baseline for the cost of the server itself. It is harmless in
production (nothing points a webhook at it); `create_app(..., noop_endpoint=False)`
removes it.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from fastapi import FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import ClientDisconnect

from webhook.admission import NOT_A_POD_CREATE, Decision, admit
from webhook.memo import AdmissionMemo
from webhook.metrics import AdmissionMetrics
from webhook.review import AdmissionRequest, MalformedReview, build_response, parse_review
from webhook.settings import Settings
from webhook.view import ClusterView

log = logging.getLogger("ferry.webhook")

INTERNAL_ERROR_MESSAGE = (
    "Ferry could not process this pod because of an internal error; the pod asked for secrets, so it was not "
    "admitted without them. Retry, and if it persists check the ferry-webhook logs for uid {uid}"
)


class _TooLarge(Exception):
    pass


def create_app(
    settings: Settings,
    cluster: ClusterView,
    *,
    native_sidecars: bool,
    ready_check: Callable[[], bool] = lambda: True,
    metrics: AdmissionMetrics | None = None,
    noop_endpoint: bool = True,
) -> FastAPI:
    """The ASGI app. `ready_check` reports whether certificates are loaded (for /readyz)."""
    app = FastAPI(title="ferry-webhook", docs_url=None, redoc_url=None, openapi_url=None)
    stats = metrics or AdmissionMetrics()
    freshness = getattr(cluster, "freshness_seconds", None)
    if callable(freshness):
        stats.track_cache_freshness(freshness)
    handler = AdmissionHandler(settings, cluster, native_sidecars, stats)
    app.state.metrics = stats
    app.state.settings = settings
    app.state.memo = handler.memo

    @app.post("/mutate")
    async def mutate(request: Request) -> Response:
        started = time.perf_counter()
        try:
            body = await _read_body(request, settings.max_request_bytes)
        except _TooLarge:
            stats.malformed.inc()
            return _json(
                413,
                {"message": f"the request body is larger than FERRY_MAX_REQUEST_BYTES ({settings.max_request_bytes})"},
            )
        except ClientDisconnect:
            return _json(400, {"message": "the client disconnected before sending the whole body"})
        status, payload = handler.handle(body)
        stats.latency.observe(time.perf_counter() - started)
        return Response(content=payload, status_code=status, media_type="application/json")

    if noop_endpoint:

        @app.post("/noop")
        async def noop(request: Request) -> Response:
            try:
                review = json.loads(await _read_body(request, settings.max_request_bytes))
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

    @app.get("/metrics")
    async def metrics_endpoint() -> Response:
        return Response(content=generate_latest(stats.registry), media_type=CONTENT_TYPE_LATEST)

    return app


class AdmissionHandler:
    """Bytes in, (HTTP status, JSON bytes) out; never raises. The /mutate endpoint without the HTTP server."""

    def __init__(
        self, settings: Settings, cluster: ClusterView, native_sidecars: bool, metrics: AdmissionMetrics
    ) -> None:
        self.settings = settings
        self.cluster = cluster
        self.native_sidecars = native_sidecars
        self.metrics = metrics
        self.memo: AdmissionMemo[Decision] = AdmissionMemo()

    def handle(self, body: bytes) -> tuple[int, bytes]:
        try:
            request = parse_review(body)
        except MalformedReview as exc:
            self.metrics.malformed.inc()
            _log({"outcome": "malformed", "reason": str(exc)[:200]})
            return 400, _dumps({"message": f"not an AdmissionReview v1 request: {exc}"})
        except Exception as exc:  # e.g. RecursionError on absurdly nested JSON
            self.metrics.malformed.inc()
            _log({"outcome": "malformed", "error": type(exc).__name__})
            return 400, _dumps({"message": "the body could not be parsed as an AdmissionReview"})
        try:
            return 200, self.answer(request)
        except MalformedReview as exc:
            self.metrics.malformed.inc()
            return 400, _dumps({"message": f"not an AdmissionReview v1 request: {exc}"})
        except Exception as exc:  # fail closed, never 5xx
            namespace = request.get("namespace") or ""
            self.metrics.record("error", namespace, dry_run=bool(request.get("dryRun")))
            log.error(
                "%s",
                json.dumps(
                    {"uid": request["uid"], "namespace": namespace, "outcome": "error", "error": type(exc).__name__}
                ),
            )
            response = build_response(
                request["uid"], allowed=False, code=500, message=INTERNAL_ERROR_MESSAGE.format(uid=request["uid"])
            )
            return 200, _dumps(response)

    def answer(self, request: AdmissionRequest) -> bytes:
        """The encoded AdmissionReview answer to a parsed request; metrics and the log line recorded."""
        decision = admit(request, self.cluster, self.settings, native_sidecars=self.native_sidecars, memo=self.memo)
        uid = request["uid"]
        dry_run = bool(request.get("dryRun"))
        self.metrics.record(decision.outcome, decision.namespace, dry_run=dry_run, reason=decision.reason)
        entry: dict[str, Any] = {"uid": uid, "namespace": decision.namespace}
        is_pod = decision.reason != NOT_A_POD_CREATE
        if is_pod:
            meta = (request.get("object") or {}).get("metadata") or {}
            name = meta.get("name") or meta.get("generateName")
            # A name the API server would refuse can still reach /mutate: the log line stays short.
            entry["pod"] = name[:253] if isinstance(name, str) else None
        entry.update(decision.log_fields)
        if dry_run and is_pod:
            entry["dryRun"] = True
        _log(entry)
        return decision.encode(uid)


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise _TooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def _safe(check: Callable[[], bool]) -> bool:
    try:
        return bool(check())
    except Exception:  # a failing check means "not ready", not a 500
        return False


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _json(status: int, value: Any) -> Response:
    return Response(content=_dumps(value), status_code=status, media_type="application/json")


def _log(entry: Mapping[str, Any]) -> None:
    if log.isEnabledFor(logging.INFO):
        # What log.info does, less its walk up the stack for the caller's file and line, which this one
        # JSON line per admission never prints: that walk was a third of the cost of logging.
        line = json.dumps(entry, separators=(",", ":"))
        log.handle(log.makeRecord(log.name, logging.INFO, __file__, 0, line, (), None))
