"""Ferry's cost as the API server sees it: webhook admission time and pod-create latency, with and without Ferry.

Why it exists: bench/webhook_latency.py times `/mutate` from a client next to
the webhook. A user pays what the API server pays: the call through its
webhook client (TLS, the egress dialer, JSON (de)serialization, the patch
applied and re-validated, reinvocation). This script starts the same real
control plane as the API-server suite (tests/e2e), installs Ferry from its
manifests, and measures

- `apiserver_admission_webhook_admission_duration_seconds` for Ferry's webhook
  (`pods.ferry.dev`), read from the API server's own /metrics as admin, as a
  delta over the run (count, sum, and percentiles from its buckets);
- the client-side latency of a pod create (the kubernetes client, one
  connection) for a pod that asks for secrets (sent to Ferry) and for the same
  pod without the annotation (never sent to Ferry), alternating one by one in
  the same run, so both see the same machine load.

Needs KUBEBUILDER_ASSETS (the folder of etcd, kube-apiserver and
kube-controller-manager) and root is not required. Usage:

    .venv/bin/python -m bench.apiserver_admission [--pods 300]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import time
from typing import Any, TypedDict

from bench.benchlib import describe_machine, machine_info, summarize, table, write_results
from devcluster.controlplane import start_control_plane
from tests.support.ferrylib import Ferry, new_workdir, opted_pod, pod

METRIC = "apiserver_admission_webhook_admission_duration_seconds"
_LINE = re.compile(r"^(?P<name>[a-z_]+)\{(?P<labels>[^}]*)\} (?P<value>\S+)$")


class Histogram(TypedDict):
    """One Prometheus histogram: cumulative count per upper bound (le), and the sum and count of observations."""

    buckets: dict[float, float]
    sum: float
    count: float


def scrape(text: str, webhook: str) -> Histogram:
    """Bucket counts, sum and count of METRIC for `webhook` (type admit), summed over its other labels."""
    buckets: dict[float, float] = {}
    total = {"sum": 0.0, "count": 0.0}
    for line in text.splitlines():
        match = _LINE.match(line)
        if not match or not match["name"].startswith(METRIC):
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', match["labels"]))
        if labels.get("name") != webhook or labels.get("type") != "admit":
            continue
        suffix = match["name"][len(METRIC) :]
        if suffix == "_bucket":
            bound = float("inf") if labels["le"] == "+Inf" else float(labels["le"])
            buckets[bound] = buckets.get(bound, 0.0) + float(match["value"])
        elif suffix in ("_sum", "_count"):
            total[suffix[1:]] += float(match["value"])
    return {"buckets": buckets, "sum": total["sum"], "count": total["count"]}


def delta(after: Histogram, before: Histogram) -> Histogram:
    buckets = {b: after["buckets"][b] - before["buckets"].get(b, 0.0) for b in after["buckets"]}
    return {"buckets": buckets, "sum": after["sum"] - before["sum"], "count": after["count"] - before["count"]}


def bucket_quantile(histogram: Histogram, q: float) -> float:
    """Prometheus' histogram_quantile: linear interpolation inside the bucket holding rank q."""
    bounds = sorted(histogram["buckets"])
    count = histogram["count"]
    if not count:
        return float("nan")
    rank = q * count
    previous_bound, previous_count = 0.0, 0.0
    for bound in bounds:
        cumulative = histogram["buckets"][bound]
        if cumulative >= rank:
            if bound == float("inf"):
                return previous_bound
            inside = cumulative - previous_count
            return previous_bound + (bound - previous_bound) * ((rank - previous_count) / inside if inside else 0.0)
        previous_bound, previous_count = bound, cumulative
    return previous_bound


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=300, help="pods of each kind (default 300)")
    parser.add_argument("--warmup", type=int, default=20, help="pods of each kind before measuring")
    args = parser.parse_args()
    assets = os.environ.get("KUBEBUILDER_ASSETS")
    if not assets:
        print("set KUBEBUILDER_ASSETS to the folder of etcd, kube-apiserver, kube-controller-manager", file=sys.stderr)
        return 2
    import kubernetes.client

    info = machine_info()
    plane = start_control_plane(assets)
    ferry = Ferry(plane, new_workdir())
    try:
        ferry.install()
        ferry.start_replica()
        with_ns = ferry.create_namespace("bench-ferry")
        without_ns = ferry.create_namespace("bench-plain")
        with plane.api_client() as api:
            core = kubernetes.client.CoreV1Api(api)

            def create(namespace: str, manifest: dict[str, Any]) -> float:
                started = time.perf_counter()
                # The client's validate_call (pydantic) turns the dict into a V1Pod; the annotation names only that.
                core.create_namespaced_pod(namespace, manifest, _preload_content=False)  # type: ignore[arg-type]
                return time.perf_counter() - started

            asks = opted_pod("x", "db", "api-key", "flags")
            plain = pod("x")
            for index in range(args.warmup):
                create(with_ns, {**asks, "metadata": {**asks["metadata"], "name": f"warm-{index}"}})
                create(without_ns, {**plain, "metadata": {**plain["metadata"], "name": f"warm-{index}"}})
            before = scrape(plane.metrics(), "pods.ferry.dev")
            with_ferry: list[float] = []
            without_ferry: list[float] = []
            for index in range(args.pods):
                name = f"p-{index}"
                with_ferry.append(create(with_ns, {**asks, "metadata": {**asks["metadata"], "name": name}}))
                without_ferry.append(create(without_ns, {**plain, "metadata": {**plain["metadata"], "name": name}}))
            after = scrape(plane.metrics(), "pods.ferry.dev")
            assert plane.proxy is not None
            tunnels = len(plane.proxy.connects)
        histogram = delta(after, before)
        webhook = {
            "calls": histogram["count"],
            "calls_per_pod": histogram["count"] / args.pods,
            "egress_tunnels_opened_in_the_whole_run": tunnels,
            "mean_ms": 1000 * histogram["sum"] / histogram["count"] if histogram["count"] else None,
            "p50_ms": 1000 * bucket_quantile(histogram, 0.50),
            "p99_ms": 1000 * bucket_quantile(histogram, 0.99),
            "buckets": {str(b): c for b, c in sorted(histogram["buckets"].items())},
        }
        results = {
            "machine": info,
            "command": f"python -m bench.apiserver_admission --pods {args.pods}",
            "kube_apiserver": json.loads(plane.kubectl("version", "-o", "json").stdout)["serverVersion"]["gitVersion"],
            "pods_each": args.pods,
            "webhook_admission_duration": webhook,
            "pod_create_ms": {
                "with_ferry": summarize(with_ferry, 1000),
                "without_ferry": summarize(without_ferry, 1000),
            },
        }
        path = write_results("apiserver_admission", results)
    finally:
        ferry.stop_all()
        plane.stop()
        shutil.rmtree(plane.workdir, ignore_errors=True)
        shutil.rmtree(ferry.workdir, ignore_errors=True)
    print(describe_machine(info))
    print(
        f"{METRIC}{{name=pods.ferry.dev,type=admit}}: {webhook['calls']:.0f} calls for {args.pods} pods "
        f"({webhook['calls_per_pod']:.2f} per pod), mean {webhook['mean_ms']:.2f} ms, "
        f"p50 ~{webhook['p50_ms']:.2f} ms, p99 ~{webhook['p99_ms']:.2f} ms (from buckets)"
    )
    rows = [
        [kind, s["p50"], s["p90"], s["p99"], s["mean"]]
        for kind, s in (
            ("with Ferry", results["pod_create_ms"]["with_ferry"]),
            ("without Ferry", results["pod_create_ms"]["without_ferry"]),
        )
    ]
    print(table([[r[0], *(f"{v:.2f}" for v in r[1:])] for r in rows], ["pod create (ms)", "p50", "p90", "p99", "mean"]))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
