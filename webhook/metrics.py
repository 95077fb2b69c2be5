"""Prometheus metrics of the admission webhook, one registry per app.

Why it exists: operators need to see at a glance whether pods are being
injected, skipped or denied (and why), how long admission takes against the
API server's timeout, and whether the Kubernetes cache is stale. A registry per
app (not the global default) keeps tests and several apps in one process apart.
Labels are bounded: outcomes and reasons are fixed strings, namespaces are the
cluster's own; no pod names and never a secret's name or value.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

OUTCOMES = ("injected", "skipped", "denied", "reinvoked", "error")
# Admission must finish well inside the API server's timeoutSeconds (a few seconds).
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class AdmissionMetrics:
    """The counters, histogram and gauge behind GET /metrics."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        self.admissions = Counter(
            "ferry_admissions",
            "Pod admissions by outcome (injected, skipped, denied, reinvoked, error), namespace and dry-run.",
            ("outcome", "namespace", "dry_run"),
            registry=self.registry,
        )
        self.denials = Counter(
            "ferry_admission_denials",
            "Denied pods by reason (e.g. invalid-spec, missing-secret-provider-class).",
            ("reason",),
            registry=self.registry,
        )
        self.malformed = Counter(
            "ferry_malformed_reviews",
            "Request bodies that were not an AdmissionReview (answered with HTTP 400 or 413).",
            registry=self.registry,
        )
        self.latency = Histogram(
            "ferry_admission_duration_seconds",
            "Time to answer POST /mutate, from body read to response built.",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._freshness = _FreshnessCollector()
        self.registry.register(self._freshness)

    def track_cache_freshness(self, read: Callable[[], Mapping[str, float]]) -> None:
        """Read the cache's freshness (seconds per resource) at scrape time, never on the admission path."""
        self._freshness.read = read

    def record(self, outcome: str, namespace: str, *, dry_run: bool, reason: str | None = None) -> None:
        self.admissions.labels(outcome, namespace or "", "true" if dry_run else "false").inc()
        if outcome == "denied" and reason:
            self.denials.labels(reason).inc()


class _FreshnessCollector(Collector):
    """ferry_cache_freshness_seconds{resource}: age of the watch cache's last news from the API server."""

    def __init__(self) -> None:
        self.read: Callable[[], Mapping[str, float]] | None = None

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "ferry_cache_freshness_seconds",
            "Seconds since the Kubernetes watch cache last heard from the API server, per resource "
            "(+Inf before the first list; absent without a cluster).",
            labels=("resource",),
        )
        if self.read is not None:
            try:
                values = dict(self.read())
            except Exception:  # a scrape must not fail because the cache is shutting down
                values = {}
            for resource, seconds in sorted(values.items()):
                family.add_metric((resource,), seconds if not math.isnan(seconds) else math.inf)
        yield family
