"""In-process measurements: (c) Kubernetes API calls per admission, and where a /mutate spends its time."""

from __future__ import annotations

import json
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from bench import benchlib
from bench.webhook_requests import HASH_LABEL, HASH_PLACEHOLDER, NAMESPACE, bench_spc, instance

# --- (c) Kubernetes API calls per admission -------------------------------------------------


def kube_calls(admissions: int, warmup: int) -> dict[str, Any]:
    """The app in-process with the real WatchCache against the fake API server; count requests per admission."""
    import httpx

    from tests.support.kubeapi import FakeKubeAPI
    from tests.support.tlsserver import TLSServer
    from webhook.cluster.kube import WatchCache
    from webhook.edge.app import create_app
    from webhook.settings import Settings
    from webhook.tls.certs import generate_bundle, write_bundle

    template = (benchlib.FIXTURES / "admission" / "review-1-ferry-first-call.json").read_text()
    original_uid = json.loads(template)["request"]["uid"]
    outcomes: dict[str, int] = {}
    # Distinct variants of the recorded pod (a pod-template-hash label and an image tag each): memo misses,
    # each of which looks the SecretProviderClass up in the cache again.
    variant = json.loads(template)
    variant["request"]["object"]["metadata"].setdefault("labels", {})[HASH_LABEL] = HASH_PLACEHOLDER
    variant["request"]["object"]["spec"]["containers"][0]["image"] += f"-{HASH_PLACEHOLDER}"
    variant_text = json.dumps(variant)
    unique_bodies = [variant_text.replace(HASH_PLACEHOLDER, f"{i:010x}") for i in range(warmup + admissions)]

    with tempfile.TemporaryDirectory(prefix="ferry-bench-kube-") as tmp, FakeKubeAPI() as kube:
        cert, key, ca = write_bundle(generate_bundle(["localhost"], ip_addresses=("127.0.0.1",)), Path(tmp))
        api = kube.api_client()
        cache = WatchCache(api)
        cache.start()
        try:
            if not cache.wait_ready(30):
                raise RuntimeError("WatchCache did not sync with the fake API server")
            if not kube.wait_for_watches("namespaces") or not kube.wait_for_watches("secretproviderclasses"):
                raise RuntimeError("WatchCache did not open its watches")
            app = create_app(Settings(), cache, native_sidecars=True)
            with TLSServer(app, cert, key) as server, httpx.Client(verify=str(ca), timeout=10) as client:

                def admit(count: int, pods: list[str] | None = None) -> None:
                    for i in range(count):
                        body = (pods[i] if pods else template).replace(original_uid, str(uuid.uuid4()))
                        reply = client.post(
                            f"{server.url}/mutate?timeout=5s",
                            content=body,
                            headers={"Content-Type": "application/json"},
                        )
                        answer = reply.json()["response"]
                        outcome = (
                            "injected" if answer.get("patchType") else ("allowed" if answer["allowed"] else "denied")
                        )
                        outcomes[outcome] = outcomes.get(outcome, 0) + 1

                admit(warmup)
                outcomes.clear()
                before = kube.request_count()
                started = time.perf_counter()
                admit(admissions)
                elapsed = time.perf_counter() - started
                during = kube.request_count() - before
                counted = dict(outcomes)
                outcomes.clear()
                memo = getattr(app.state, "memo", None)
                memo_before = (memo.hits, memo.misses) if memo is not None else (0, 0)
                before_unique = kube.request_count()
                admit(admissions, unique_bodies[warmup:])
                during_unique = kube.request_count() - before_unique
                counted_unique = dict(outcomes)
                memo_unique = (
                    {"hits": memo.hits - memo_before[0], "misses": memo.misses - memo_before[1]}
                    if memo is not None
                    else None
                )
                mark = kube.request_count()
                # The watch keeps the cache current without new requests either: release the recorded events.
                versions_before = cache.resource_versions()
                events = kube.play_events("namespaces") + kube.play_events("secretproviderclasses")
                deadline = time.monotonic() + 10
                while cache.resource_versions() == versions_before and time.monotonic() < deadline:
                    time.sleep(0.05)
                admit(100)
                after_events = kube.request_count() - mark
                paths = sorted({r.path for r in kube.requests})
        finally:
            cache.stop()
            api.close()  # type: ignore[no-untyped-call]  # kubernetes' ApiClient.close() has no annotations
    return {
        "admissions": admissions,
        "warmup_admissions": warmup,
        "outcomes": counted,
        "api_requests_during_admissions": during,
        "api_requests_per_admission": during / admissions,
        "unique_pod_admissions": admissions,
        "unique_pod_outcomes": counted_unique,
        "unique_pod_memo": memo_unique,
        "api_requests_during_unique_pod_admissions": during_unique,
        "watch_events_played": len(events),
        "api_requests_after_watch_events_and_100_more_admissions": after_events,
        "paths_ever_requested": paths,
        "seconds": elapsed,
    }


# --- Where /mutate's time goes (in-process) ---------------------------------------------


def admission_breakdown(bodies: dict[str, list[bytes]], iterations: int) -> dict[str, float]:
    """Median microseconds of each step /mutate runs, called directly (no server, no TLS), warm spec cache.

    Also the whole handler (parse, memo, admit, patch, response; no log line, since logging is not configured
    in this process) for a memo hit (replicas) and a memo miss (unique pods). Diagnostic only: the budgets are
    judged on the server above. Steps that moved or changed signature are reported as missing rather than
    failing.
    """
    body = instance(bodies["replicas"][0])
    from webhook.policy.decide import decide_injection
    from webhook.policy.memo import cached_diff, cached_parts, cached_spec, clear_caches
    from webhook.policy.patch import make_pod_patch
    from webhook.policy.pipeline import Admission, admit_pod
    from webhook.policy.request import PodRequest
    from webhook.policy.review import build_response, encode_answer, parse_review
    from webhook.policy.view import StaticView
    from webhook.settings import Settings

    namespaces = json.loads((benchlib.FIXTURES / "namespaces-list.json").read_text())["items"]
    view = StaticView([bench_spc()], namespaces)
    settings = Settings()

    def admit(request: Mapping[str, Any]) -> Admission:
        pod_request = PodRequest.read(request["object"], NAMESPACE, view.namespace(NAMESPACE))
        return admit_pod(
            pod_request,
            decide_injection(pod_request, settings),
            spc_lookup=view.secret_provider_class,
            settings=settings,
            native_sidecars=True,
            spec_maker=cached_spec,
            differ=cached_diff,
            parts_maker=cached_parts,
        )

    request: Mapping[str, Any] = parse_review(body)
    admission = admit(request)
    patch = admission.patch
    response = build_response(request["uid"], patch=patch)

    def cold_admit() -> Admission:
        clear_caches()
        return admit(parse_review(body))

    handler = _handler(view, settings)
    replica = bodies["replicas"][0]
    unique = iter(bodies["unique"] * 2)

    def with_uid(template: bytes) -> bytes:
        return instance(template)

    steps: dict[str, Callable[[], Any]] = {
        "json.loads (what /noop does too)": lambda: json.loads(body),
        "parse_review": lambda: parse_review(body),
        "admit_pod (spec and parts caches warm)": lambda: admit(parse_review(body)),
        "admit_pod (spec and parts caches cold)": cold_admit,
        "make_pod_patch (the diff, for pods whose ops are not recorded)": lambda: make_pod_patch(
            request["object"], admission.pod
        ),
        "encode_answer (the patch's parts encoded once)": lambda: encode_answer(
            denied=False, message="", warnings=admission.warnings, patch=patch
        ),
        "handler, memo hit (replicas)": lambda: handler.handle(with_uid(replica)),
        "handler, memo miss (unique pod)": lambda: handler.handle(with_uid(next(unique))),
    }
    results: dict[str, float] = {}
    for name, step in steps.items():
        for _ in range(max(10, iterations // 10)):
            step()
        samples = []
        for _ in range(iterations):
            started = time.perf_counter()
            step()
            samples.append(time.perf_counter() - started)
        results[name] = benchlib.percentile(sorted(samples), 50) * 1e6
    clear_caches()
    # Subtract the parse that the admit_pod steps include, so the rows add up.
    for key in ("admit_pod (spec and parts caches warm)", "admit_pod (spec and parts caches cold)"):
        results[key] = max(0.0, results[key] - results["parse_review"])
    results["patch ops"] = float(len(patch))
    results["response bytes"] = float(len(json.dumps(response)))
    return results


def _handler(view: Any, settings: Any) -> Any:
    """The app's own admission handler (bytes in, status and bytes out), with its memo, outside any server."""
    from webhook.edge.app import AdmissionHandler
    from webhook.edge.metrics import AdmissionMetrics

    return AdmissionHandler(settings, view, True, AdmissionMetrics())


def profile_unique(bodies: dict[str, list[bytes]], admissions: int, top: int = 14) -> dict[str, Any]:
    """cProfile of the handler over `admissions` memo misses (unique pods): where a miss spends its CPU.

    Shares are of the handler's profiled total; cProfile inflates many small calls, so they are indicative.
    """
    import cProfile
    import pstats

    from webhook.policy.view import StaticView
    from webhook.settings import Settings

    namespaces = json.loads((benchlib.FIXTURES / "namespaces-list.json").read_text())["items"]
    handler = _handler(StaticView([bench_spc()], namespaces), Settings())
    pool = bodies["unique"]
    requests = [instance(pool[i % len(pool)], second=i) for i in range(admissions + 20)]
    for body in requests[:20]:  # warm the spec cache and the imports
        handler.handle(body)
    profiler = cProfile.Profile()
    profiler.enable()
    for body in requests[20:]:
        handler.handle(body)
    profiler.disable()
    stats = pstats.Stats(profiler)
    entries = stats.stats  # type: ignore[attr-defined]
    handle_key = next(k for k in entries if k[2] == "handle" and k[0].endswith("app.py"))
    total = entries[handle_key][3]
    rows: list[dict[str, Any]] = []
    for (filename, _line, function), (_cc, calls, tottime, cumtime, _callers) in entries.items():
        module = Path(filename).name if filename != "~" else "builtin"
        rows.append(
            {
                "function": f"{module}:{function}" if filename != "~" else function,
                "calls_per_admission": calls / admissions,
                "cumulative_us_per_admission": 1e6 * cumtime / admissions,
                "self_us_per_admission": 1e6 * tottime / admissions,
                "cumulative_share": cumtime / total if total else 0.0,
            }
        )
    rows.sort(key=lambda row: row["cumulative_us_per_admission"], reverse=True)
    memo = handler.memo
    return {
        "admissions": admissions,
        "memo_hits": memo.hits,
        "memo_misses": memo.misses,
        "handler_us_per_admission_profiled": 1e6 * total / admissions,
        "top_by_cumulative": rows[:top],
    }
