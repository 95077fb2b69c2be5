"""Alerts and dashboard panels name metrics and labels that really exist.

Why it exists: a PromQL expression with a misspelt metric or label is not an
error in Prometheus or Grafana, it is an alert that never fires and a panel
that stays empty, found out during the incident it was meant to catch. So the
series Ferry exports are taken from a real scrape of the webhook's metrics
registry (with every metric exercised), the few series from other exporters
the rules rely on are listed explicitly below, and every selector, label
matcher and grouping label in the rules and the dashboard is checked against
them. The serving-certificate expiry metric, added for the alert, is tested
against a certificate made by Ferry's own cert code.
"""

from __future__ import annotations

import json
import re
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tests.chart.rendering import CHART
from webhook.edge.metrics import CERTIFICATE_EXPIRY_METRIC, AdmissionMetrics
from webhook.tls import certs

RULES = CHART / "files" / "prometheus-rules.yaml"
DASHBOARD = CHART / "files" / "ferry-dashboard.json"

# Series from other exporters that the rules and the dashboard may use, with their labels.
EXTERNAL_SERIES: dict[str, set[str]] = {
    # kube-state-metrics
    "kube_deployment_status_replicas_available": {"namespace", "deployment"},
    # kube-apiserver's own metrics about the webhooks it calls
    "apiserver_admission_webhook_rejection_count": {"name", "type", "operation", "error_type", "rejection_code"},
    "apiserver_admission_webhook_request_total": {"name", "type", "operation", "code", "rejected"},
}
# Labels Prometheus adds to every scraped series (target labels of a ServiceMonitor).
TARGET_LABELS = {"job", "instance", "namespace", "service", "pod", "container", "endpoint"}

_FUNCTIONS = {
    "abs", "absent", "avg_over_time", "ceil", "changes", "clamp_max", "clamp_min", "delta", "deriv", "floor",
    "histogram_quantile", "idelta", "increase", "irate", "label_replace", "max_over_time", "min_over_time",
    "predict_linear", "rate", "resets", "round", "scalar", "sort", "sort_desc", "sum_over_time", "time",
    "timestamp", "vector", "sum", "min", "max", "avg", "count", "stddev", "topk", "bottomk", "quantile",
    "count_values", "group",
}  # fmt: skip
_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "offset", "and", "or", "unless", "bool"}
_IDENT = r"[a-zA-Z_:][a-zA-Z0-9_:]*"


def exported_series() -> dict[str, set[str]]:
    """Every series name Ferry's registry exposes, with its labels, from a real scrape."""
    metrics = AdmissionMetrics()
    for outcome in ("injected", "skipped", "denied", "reinvoked", "error"):
        metrics.record(outcome, dry_run=False, reason="invalid-spec")
    metrics.malformed.inc()
    metrics.latency.observe(0.003)
    metrics.track_cache_freshness(lambda: {"namespaces": 1.0, "secretproviderclasses": 2.0})
    series: dict[str, set[str]] = {}
    with tempfile.TemporaryDirectory(prefix="ferry-metrics-") as cert_dir:
        cert_file, _, _ = certs.write_bundle(certs.generate_bundle(["ferry-webhook.ferry-system.svc"]), Path(cert_dir))
        metrics.track_serving_certificate(Path(cert_file))
        exposition = generate_latest(metrics.registry).decode()
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            series.setdefault(sample.name, set()).update(sample.labels)
    assert CERTIFICATE_EXPIRY_METRIC in series
    return series


KNOWN = {**exported_series(), **EXTERNAL_SERIES}


class Selector:
    def __init__(self, metric: str, labels: set[str]) -> None:
        self.metric, self.labels = metric, labels


def parse(expression: str) -> tuple[list[Selector], set[str]]:
    """The vector selectors of a PromQL expression (metric + matcher labels) and its grouping labels."""
    text = expression.replace("$__rate_interval", "5m").replace("$__range", "1h")
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', text)  # label values cannot be mistaken for names
    text = re.sub(r"\[[^\]]*\]", "", text)  # range and subquery durations
    grouping: set[str] = set()
    for match in re.finditer(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)", text):
        grouping.update(label.strip() for label in match.group(2).split(",") if label.strip())
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    selectors: list[Selector] = []
    for match in re.finditer(rf"({_IDENT})?\s*(\{{[^}}]*\}})?", text):
        name, matchers = match.group(1), match.group(2)
        if not name and not matchers:
            continue
        if name in _KEYWORDS or (name in _FUNCTIONS and not matchers and text[match.end() :].lstrip().startswith("(")):
            continue
        if name and re.fullmatch(r"[0-9eE.]+", name):
            continue
        labels = set(re.findall(rf"({_IDENT})\s*(?:=~|!~|!=|=)", matchers or ""))
        assert name, f"a selector without a metric name in {expression!r}"
        selectors.append(Selector(name, labels))
    return selectors, grouping


def problems(expression: str) -> list[str]:
    found: list[str] = []
    selectors, grouping = parse(expression)
    if not selectors:
        found.append("names no metric")
    available: set[str] = set()
    for selector in selectors:
        if selector.metric not in KNOWN:
            found.append(f"unknown metric {selector.metric}")
            continue
        labels = KNOWN[selector.metric] | (TARGET_LABELS if selector.metric not in EXTERNAL_SERIES else set())
        available |= labels
        found += [f"{selector.metric} has no label {label}" for label in sorted(selector.labels - labels)]
    found += [f"grouping by {label}, which no metric here has" for label in sorted(grouping - available)]
    return found


def rule_expressions() -> list[tuple[str, str]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [(f"{rule['alert']}#{i}", rule["expr"]) for group in groups for i, rule in enumerate(group["rules"])]


def dashboard_expressions() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [(f"{p['title']}/{t['refId']}", t["expr"]) for p in dashboard["panels"] for t in p["targets"]]


@pytest.mark.parametrize(("where", "expression"), rule_expressions() + dashboard_expressions())
def test_expression_names_real_metrics_and_labels(where: str, expression: str) -> None:
    assert problems(expression) == [], where


def test_the_check_bites() -> None:
    assert problems('sum(rate(ferry_admissions_total{outcom="error"}[5m]))') == [
        "ferry_admissions_total has no label outcom"
    ]
    assert problems("rate(ferry_admission_total[5m])") == ["unknown metric ferry_admission_total"]
    assert problems("sum by (reasons) (rate(ferry_admission_denials_total[5m]))") == [
        "grouping by reasons, which no metric here has"
    ]
    assert problems('kube_deployment_status_replicas_available{deploy="x"}') == [
        "kube_deployment_status_replicas_available has no label deploy"
    ]
    assert problems("1 + 1") == ["names no metric"]


def test_alerts_the_issue_asks_for() -> None:
    """Errors or timeouts, denial jumps, certificate expiry, stale cache, no ready replicas: each has an alert."""
    rules = {name.split("#")[0]: expression for name, expression in rule_expressions()}
    needs = {
        "ferry_admissions_total": "FerryWebhookErrors",
        "apiserver_admission_webhook_rejection_count": "FerryWebhookCallsFailing",
        "ferry_admission_duration_seconds_bucket": "FerryAdmissionSlow",
        "ferry_admission_denials_total": "FerryDenialRateJump",
        CERTIFICATE_EXPIRY_METRIC: "FerryServingCertificateExpiresSoon",
        "ferry_cache_freshness_seconds": "FerryWatchCacheStale",
        "kube_deployment_status_replicas_available": "FerryNoReadyReplicas",
    }
    for metric, alert in needs.items():
        assert alert in rules and metric in rules[alert], alert
    groups = yaml.safe_load(RULES.read_text())["groups"]
    for rule in (rule for group in groups for rule in group["rules"]):
        assert rule["labels"]["severity"] in {"warning", "critical"}
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]


def test_dashboard_shape() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "ferry-webhook"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert panel["targets"] and panel["description"], panel["title"]
        assert panel["datasource"]["uid"] == "${datasource}"


# --- the certificate expiry metric ------------------------------------------------------------------


def scrape(metrics: AdmissionMetrics) -> dict[str, Any]:
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(generate_latest(metrics.registry).decode())
        for sample in family.samples
    }


def _not_after(cert_pem: bytes) -> datetime:
    return x509.load_pem_x509_certificate(cert_pem).not_valid_after_utc


def test_certificate_expiry_metric_follows_the_file(tmp_path: Path) -> None:
    metrics = AdmissionMetrics()
    assert CERTIFICATE_EXPIRY_METRIC not in scrape(metrics), "no sample before a certificate is served"
    first = certs.generate_bundle(["ferry-webhook.ferry-system.svc"])
    cert_file, _, _ = certs.write_bundle(first, tmp_path)
    metrics.track_serving_certificate(Path(cert_file))
    expected = _not_after(first.cert_pem).timestamp()
    assert scrape(metrics)[CERTIFICATE_EXPIRY_METRIC] == expected
    assert expected > datetime.now(UTC).timestamp()

    renewed = certs.generate_bundle(["ferry-webhook.ferry-system.svc"], now=datetime(2031, 1, 1, tzinfo=UTC))
    certs.write_bundle(renewed, tmp_path)
    assert scrape(metrics)[CERTIFICATE_EXPIRY_METRIC] == _not_after(renewed.cert_pem).timestamp()

    Path(cert_file).write_text("not a certificate")
    assert CERTIFICATE_EXPIRY_METRIC not in scrape(metrics), "an unreadable file gives no sample, not a failed scrape"
    Path(cert_file).unlink()
    assert CERTIFICATE_EXPIRY_METRIC not in scrape(metrics)
