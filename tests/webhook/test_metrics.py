"""The metrics port is no namespace oracle: no label names a namespace, whatever a review claims (issue 15)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prometheus_client import generate_latest

from tests.support.pods import make_pod
from tests.support.reviews import pod_create_review
from webhook.edge.app import create_app, metrics_app
from webhook.edge.metrics import AdmissionMetrics
from webhook.policy.view import StaticView
from webhook.settings import Settings
from webhook.tls.certs import generate_bundle

PLAIN = make_pod(None, [{"name": "a"}], name="p")


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


def test_only_denials_count_by_reason() -> None:
    metrics = AdmissionMetrics()
    metrics.record("injected", dry_run=False, reason="sidecar-native")
    metrics.record("denied", dry_run=False, reason="invalid-spec")
    text = generate_latest(metrics.registry).decode()
    assert 'ferry_admission_denials_total{reason="invalid-spec"} 1.0' in text
    assert "sidecar-native" not in text


def test_a_cache_that_never_heard_from_the_api_server_reads_as_infinitely_stale() -> None:
    metrics = AdmissionMetrics()
    metrics.track_cache_freshness(lambda: {"namespaces": float("nan"), "secretproviderclasses": 2.0})
    text = generate_latest(metrics.registry).decode()
    assert 'ferry_cache_freshness_seconds{resource="namespaces"} +Inf' in text
    assert 'ferry_cache_freshness_seconds{resource="secretproviderclasses"} 2.0' in text


def test_the_certificate_file_is_read_only_up_to_1_mib(tmp_path: Path) -> None:
    """A certificate past 1 MiB of leading junk is not looked for: the scrape reads a bounded prefix."""
    bundle = generate_bundle(["localhost"])
    good, padded = tmp_path / "good.crt", tmp_path / "padded.crt"
    good.write_bytes(bundle.cert_pem)
    padded.write_bytes(b"#" * (1024 * 1024 + 1) + b"\n" + bundle.cert_pem)
    for path, present in ((good, True), (padded, False)):
        metrics = AdmissionMetrics()
        metrics.track_serving_certificate(path)
        samples = [
            line
            for line in generate_latest(metrics.registry).decode().splitlines()
            if line.startswith("ferry_serving_certificate_expiry_timestamp_seconds ")
        ]
        assert bool(samples) == present, path.name
