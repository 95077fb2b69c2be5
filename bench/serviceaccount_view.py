"""What reading iam.gke.io/gcp-service-account costs the webhook: memory per ServiceAccount, and per admission.

Why it exists: issue 20 has the webhook keep a view of every ServiceAccount on a GKE install (thousands on a
500-node cluster). This script fills the view the way a list does (webhook.cluster.serviceaccounts through
the real Reflector's keep path, from PartialObjectMetadata-shaped objects carrying a kubectl
last-applied annotation, a tenth of them annotated with a handful of Google accounts) and reports the bytes
the view holds per ServiceAccount (tracemalloc), next to what keeping each object whole (without
managedFields) would hold. Then it admits the same GCP pod through `admit()` with and without the view's
lookup, alternating (ABBA) with the memo off, and reports the median time of each and their ratio.
"""

from __future__ import annotations

import statistics
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from bench import benchlib

if TYPE_CHECKING:  # for the annotation: _view imports the module itself, when first called
    from webhook.cluster.serviceaccounts import ServiceAccountView

COUNTS = (1_000, 10_000, 50_000)
ROUNDS = 20
ADMISSIONS_PER_ROUND = 100


def _objects(count: int) -> list[dict[str, Any]]:
    last_applied = '{"apiVersion":"v1","kind":"ServiceAccount","metadata":{"name":"x","namespace":"y"}}' * 3
    objects = []
    for i in range(count):
        annotations = {"kubectl.kubernetes.io/last-applied-configuration": last_applied}
        if i % 10 == 0:
            annotations["iam.gke.io/gcp-service-account"] = f"app-{i % 7}@proj-{i % 3}.iam.gserviceaccount.com"
        objects.append(
            {
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": {
                    "name": f"sa-{i}",
                    "namespace": f"team-{i % 500}",
                    "uid": f"00000000-0000-0000-0000-{i:012d}",
                    "resourceVersion": str(100_000 + i),
                    "creationTimestamp": "2026-12-06T10:00:00Z",
                    "annotations": annotations,
                },
            }
        )
    return objects


def _view() -> ServiceAccountView:
    from webhook.cluster.serviceaccounts import ServiceAccountView

    common = {"stop": threading.Event(), "backoff_initial": 1, "backoff_max": 1, "watch_timeout": 1,
              "request_timeout": 1}  # fmt: skip
    return ServiceAccountView(None, common=common)  # type: ignore[arg-type]  # no API calls: filled by hand


def _held(fill: Callable[[], object]) -> int:
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    kept = fill()
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    del kept
    return held


def memory(count: int) -> dict[str, Any]:
    import copy

    def slim() -> dict[Any, dict[str, Any]]:
        view = _view()
        items: dict[Any, dict[str, Any]] = {}
        sizes: dict[Any, int] = {}
        for obj in _objects(count):  # built and dropped one at a time, as a list page is
            view.reflector._keep(obj, items, sizes, 0)
        return items

    def whole() -> dict[tuple[str, str], dict[str, Any]]:
        return {(o["metadata"]["namespace"], o["metadata"]["name"]): copy.deepcopy(o) for o in _objects(count)}

    slim_bytes, whole_bytes = _held(slim), _held(whole)
    return {
        "serviceAccounts": count,
        "viewBytes": slim_bytes,
        "bytesPerServiceAccount": round(slim_bytes / count, 1),
        "wholeObjectBytesPerServiceAccount": round(whole_bytes / count, 1),
    }


def admission_cost() -> dict[str, Any]:
    from fetcher.contract.gcp import KsaAnnotation
    from tests.support.reviews import pod_create_review
    from webhook.policy.admission import admit
    from webhook.policy.view import StaticView
    from webhook.settings import Settings

    settings = Settings.from_env(
        {"FERRY_GCP_PROJECT": "my-project", "FERRY_GCP_LOCATION": "us-central1", "FERRY_GCP_CLUSTER": "prod"}
    )
    secrets = "- resourceName: projects/my-project/secrets/db/versions/latest\n  path: db\n"
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "app",
            "annotations": {"ferry.dev/inject": "true", "ferry.dev/provider": "gcp", "ferry.dev/objects": secrets},
        },  # fmt: skip
        "spec": {"serviceAccountName": "web", "containers": [{"name": "app", "image": "registry.example/app:1"}]},
    }
    request = pod_create_review(pod, namespace="team-b")["request"]
    namespace = {"metadata": {"name": "team-b", "resourceVersion": "1"}}

    class WithServiceAccounts(StaticView):
        def gke_service_account(self, ns: str, name: str, *, may_get: bool = True) -> KsaAnnotation:
            return KsaAnnotation(name, "web@my-project.iam.gserviceaccount.com")

    views = {"without": StaticView(namespaces=[namespace]), "with": WithServiceAccounts(namespaces=[namespace])}
    samples: dict[str, list[float]] = {name: [] for name in views}
    order = ["without", "with", "with", "without"]
    for round_index in range(ROUNDS):
        name = order[round_index % 4]
        started = time.perf_counter()
        for _ in range(ADMISSIONS_PER_ROUND):
            decision = admit(request, views[name], settings, native_sidecars=True)  # memo off: the full pipeline
        samples[name].append((time.perf_counter() - started) / ADMISSIONS_PER_ROUND * 1e6)
        assert decision.outcome == "injected", decision.message
    medians = {name: statistics.median(values) for name, values in samples.items()}
    return {
        "microsecondsPerAdmission": {name: round(value, 1) for name, value in medians.items()},
        "ratioWithOverWithout": round(benchlib.ratio(medians["with"], medians["without"]), 3),
    }


def main() -> None:
    parser = benchlib.argument_parser(__doc__)
    args = parser.parse_args()
    machine = benchlib.announce_machine()
    quiet = benchlib.wait_for_quiet(args.quiet_load, args.quiet_wait, "serviceaccount view")
    results: dict[str, Any] = {"machine": machine, "load": quiet}
    _view()  # imports the modules before any memory is counted
    results["memory"] = [memory(count) for count in COUNTS]
    results["admission"] = admission_cost()
    results["load"] = benchlib.end_load(quiet)
    rows = [
        (m["serviceAccounts"], m["viewBytes"], m["bytesPerServiceAccount"], m["wholeObjectBytesPerServiceAccount"])
        for m in results["memory"]
    ]
    print(benchlib.table(rows, ("ServiceAccounts", "view bytes", "bytes/SA", "whole object bytes/SA")))
    admission = results["admission"]
    print(f"admit() µs: {admission['microsecondsPerAdmission']}, ratio {admission['ratioWithOverWithout']}")
    print(benchlib.describe_load(results["load"]))
    path = benchlib.write_results("serviceaccount_view", results, args.out_dir)
    print(f"results: {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
