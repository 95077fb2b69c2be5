"""Prometheus metrics of the admission webhook, one registry per app.

Operators need to see whether pods are injected, skipped or denied, how long admission takes and whether the
cluster cache is stale. A registry per app (not the global default) keeps tests and several apps in one process
apart. No label names a namespace: docs/reliability.md ("Metrics and logs").
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

CERTIFICATE_EXPIRY_METRIC = "ferry_serving_certificate_expiry_timestamp_seconds"
# A PEM serving certificate (leaf plus chain) is a few KiB; read no more than this at a scrape.
_MAX_CERT_FILE_BYTES = 1024 * 1024

OUTCOMES = ("injected", "skipped", "denied", "reinvoked", "error")
# Admission must finish well inside the API server's timeoutSeconds (a few seconds).
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class AdmissionMetrics:
    """The counters, histogram and gauge behind GET /metrics."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        self.admissions = Counter(
            "ferry_admissions",
            "Pod admissions by outcome (injected, skipped, denied, reinvoked, error) and dry-run.",
            ("outcome", "dry_run"),
            registry=self.registry,
        )
        self.denials = Counter(
            "ferry_admission_denials",
            "Denied pods by reason (e.g. invalid-spec, missing-secret-provider-class).",
            ("reason",),
            registry=self.registry,
        )
        self.over_budget = Counter(
            "ferry_request_body_budget_exhausted",
            "Requests answered 503 because request bodies in flight held all of the shared body budget.",
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
        # The series of each (outcome, dry-run) met so far: at most len(OUTCOMES) * 2 entries.
        self._admission_counters: dict[tuple[str, bool], Counter] = {}
        self._freshness = _FreshnessCollector()
        self.registry.register(self._freshness)
        self._certificate = _CertificateExpiryCollector()
        self.registry.register(self._certificate)

    def track_cache_freshness(self, read: Callable[[], Mapping[str, float]]) -> None:
        """Read the cache's freshness (seconds per resource) at scrape time, never on the admission path."""
        self._freshness.read = read

    def track_serving_certificate(self, cert_file: Path) -> None:
        """Export the expiry of the certificate in `cert_file` (read at scrape time, so renewals show)."""
        self._certificate.cert_file = cert_file

    def record(self, outcome: str, *, dry_run: bool, reason: str | None = None) -> None:
        """Count one admission (never by namespace: see docs/reliability.md, "Metrics and logs")."""
        counter = self._admission_counters.get((outcome, dry_run))
        if counter is None:  # each pair's first admission: `labels` looks the series up (and makes it) once
            known = outcome in OUTCOMES
            counter = self.admissions.labels(outcome if known else "error", "true" if dry_run else "false")
            if known:
                self._admission_counters[(outcome, dry_run)] = counter
        counter.inc()
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


class _CertificateExpiryCollector(Collector):
    """ferry_serving_certificate_expiry_timestamp_seconds: notAfter of the served certificate, Unix time."""

    def __init__(self) -> None:
        self.cert_file: Path | None = None

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            CERTIFICATE_EXPIRY_METRIC,
            "Unix time at which the webhook's TLS serving certificate expires "
            "(absent until a certificate is served or while its file cannot be read).",
        )
        not_after = _certificate_not_after(self.cert_file) if self.cert_file is not None else None
        if not_after is not None:
            family.add_metric((), not_after)
        yield family


def _certificate_not_after(cert_file: Path) -> float | None:
    from cryptography import x509

    try:
        with cert_file.open("rb") as handle:
            pem = handle.read(_MAX_CERT_FILE_BYTES)
        return x509.load_pem_x509_certificate(pem).not_valid_after_utc.timestamp()
    except (OSError, ValueError):  # mid-rotation or unreadable: no sample rather than a failed scrape
        return None
