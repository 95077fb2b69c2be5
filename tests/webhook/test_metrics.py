"""The namespace label counts only what the API server can have sent, and stays bounded (issue 10, item 6)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from prometheus_client import generate_latest

from tests.support.reviews import pod_create_review
from webhook.edge.app import create_app, metrics_app
from webhook.edge.metrics import MAX_NAMESPACE_LABELS, AdmissionMetrics
from webhook.policy.view import StaticView
from webhook.settings import Settings


def _series(metrics: AdmissionMetrics) -> list[str]:
    text = generate_latest(metrics.registry).decode()
    return [line for line in text.splitlines() if line.startswith("ferry_admissions_total{")]


def test_forged_namespaces_count_as_unknown_and_leave_the_budget_to_real_ones() -> None:
    metrics = AdmissionMetrics()
    for index in range(MAX_NAMESPACE_LABELS * 3):
        metrics.record("skipped", f"forged-{index}", dry_run=False, known=False)
    metrics.record("injected", "team-a", dry_run=False, known=True)
    series = _series(metrics)
    assert (
        f'ferry_admissions_total{{dry_run="false",namespace="unknown",outcome="skipped"}} {MAX_NAMESPACE_LABELS * 3}.0'
        in series
    )
    assert 'ferry_admissions_total{dry_run="false",namespace="team-a",outcome="injected"} 1.0' in series
    assert len(series) == 2


def test_known_namespaces_past_the_bound_count_as_other() -> None:
    metrics = AdmissionMetrics()
    for index in range(MAX_NAMESPACE_LABELS + 5):
        metrics.record("injected", f"ns-{index}", dry_run=False, known=True)
    labels = {line.split('namespace="')[1].split('"')[0] for line in _series(metrics)}
    assert len(labels) == MAX_NAMESPACE_LABELS + 1 and "other" in labels
    metrics.record("injected", "Not_A_Name", dry_run=False, known=True)
    assert any('namespace="unknown"' in line for line in _series(metrics))


def test_the_app_asks_the_cluster_view_whether_a_namespace_exists(asgi_client: Callable[[Any], Any]) -> None:
    view = StaticView([], [{"metadata": {"name": "team-a"}}])
    app = create_app(Settings(), view, native_sidecars=True)
    client = asgi_client(app)
    plain = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": [{"name": "a"}]}}
    for namespace in ("team-a", "made-up"):
        body = pod_create_review({**plain, "metadata": {"name": "p", "namespace": namespace}}, namespace=namespace)
        assert client.post("/mutate", content=json.dumps(body)).status_code == 200
    text = asgi_client(metrics_app(app.state.metrics)).get("/metrics").text
    assert 'namespace="team-a",outcome="skipped"} 1.0' in text
    assert 'namespace="unknown",outcome="skipped"} 1.0' in text
    assert "made-up" not in text
    assert asgi_client(metrics_app(app.state.metrics)).post("/metrics").status_code == 405
