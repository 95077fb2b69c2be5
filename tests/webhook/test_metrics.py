"""The metrics port is no namespace oracle: no label names a namespace, whatever a review claims (issue 15)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from prometheus_client import generate_latest

from tests.support.reviews import pod_create_review
from webhook.app import create_app, metrics_app
from webhook.kube import StaticView
from webhook.metrics import AdmissionMetrics
from webhook.settings import Settings

PLAIN = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": [{"name": "a"}]}}


def _series(metrics: AdmissionMetrics) -> list[str]:
    text = generate_latest(metrics.registry).decode()
    return [line for line in text.splitlines() if line.startswith("ferry_admissions_total{")]


def _post(client: Any, namespace: str, annotations: dict[str, str] | None = None) -> None:
    pod = {**PLAIN, "metadata": {"name": "p", "namespace": namespace, "annotations": annotations or {}}}
    body = pod_create_review(pod, namespace=namespace)
    assert client.post("/mutate", content=json.dumps(body)).status_code == 200


def test_forged_reviews_neither_reveal_nor_inflate_a_namespace(asgi_client: Callable[[Any], Any]) -> None:
    """A review naming an existing namespace gets it no series; a victim's denials are not told apart."""
    view = StaticView([], [{"metadata": {"name": "victim"}}, {"metadata": {"name": "team-a"}}])
    app = create_app(Settings(), view, native_sidecars=True)
    client, scrape = asgi_client(app), asgi_client(metrics_app(app.state.metrics))
    _post(client, "team-a")
    assert "team-a" not in scrape.get("/metrics").text
    for namespace in ("victim", "made-up", "x" * 63):
        _post(client, namespace)
        _post(client, namespace, {"ferry.dev/inject": "true", "ferry.dev/mount-path": "/etc"})
    after = scrape.get("/metrics").text
    for name in ("victim", "team-a", "made-up", "xxxx", "namespace="):
        assert name not in after, name
    # What the forgeries changed is the same whatever namespace they named: only global counters.
    series = {line.rsplit(" ", 1)[0] for line in after.splitlines() if line.startswith("ferry_admissions_total{")}
    assert series == {
        'ferry_admissions_total{dry_run="false",outcome="skipped"}',
        'ferry_admissions_total{dry_run="false",outcome="denied"}',
    }


def test_admission_series_are_bounded_by_outcome_and_dry_run() -> None:
    """Two dry-run values times five outcomes: ten series at most, whatever is recorded."""
    metrics = AdmissionMetrics()
    for index in range(500):
        for outcome in ("injected", "skipped", "denied", "reinvoked", "error", f"made-up-{index}"):
            metrics.record(outcome, dry_run=index % 2 == 0, reason="invalid-spec")
    assert len(_series(metrics)) == 10


def test_metrics_app_answers_only_get(asgi_client: Callable[[Any], Any]) -> None:
    metrics = AdmissionMetrics()
    assert asgi_client(metrics_app(metrics)).post("/metrics").status_code == 405
    assert asgi_client(metrics_app(metrics)).get("/other").status_code == 404
