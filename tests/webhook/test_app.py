"""POST /mutate with the AdmissionReviews a real kube-apiserver v1.28 sent, plus the HTTP edges.

Every returned patch is applied with jsonpatch and the Pod validated strictly
against the newest Kubernetes schema kubernetes-validate ships.
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Callable
from typing import Any

import jsonpatch
import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from fetcher.contract import spec_from_json
from fetcher.contract.logline import JsonFormatter
from tests.support.reviews import decode_patch
from tests.webhook.conftest import load_review
from webhook.edge.app import INTERNAL_ERROR_MESSAGE, AdmissionHandler, create_app, metrics_app
from webhook.edge.metrics import AdmissionMetrics
from webhook.policy.review import build_response
from webhook.settings import Settings

Review = Callable[[str], dict[str, Any]]
Validate = Callable[[dict[str, Any], list[dict[str, Any]]], dict[str, Any]]


@pytest.fixture
def app(cluster: Any, settings: Settings) -> Any:
    return create_app(settings, cluster, native_sidecars=True)


@pytest.fixture
def client(asgi_client: Callable[[Any], Any], app: Any) -> Any:
    return asgi_client(app)


@pytest.fixture
def scrape(asgi_client: Callable[[Any], Any], app: Any) -> Callable[[], Any]:
    """GET /metrics from the metrics app of `app` (in production: its own plain-HTTP listener)."""
    metrics_client = asgi_client(metrics_app(app.state.metrics))
    return lambda: metrics_client.get("/metrics")


def post(client: Any, body: Any, url: str = "/mutate?timeout=5s") -> dict[str, Any]:
    response = client.post(url, content=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["apiVersion"] == "admission.k8s.io/v1" and answer["kind"] == "AdmissionReview"
    assert answer["response"]["uid"] == body["request"]["uid"]
    result: dict[str, Any] = answer["response"]
    return result


def with_object(review: dict[str, Any], pod: dict[str, Any], uid: str = "resent") -> dict[str, Any]:
    body = copy.deepcopy(review)
    body["request"]["object"] = pod
    body["request"]["uid"] = uid
    return body


def test_first_call_injects(client: Any, review: Review, patched_pod: Validate) -> None:
    body = review("review-1")
    response = post(client, body)
    assert response["allowed"] is True
    pod = patched_pod(body["request"]["object"], decode_patch(response))
    spec = pod["spec"]
    assert [c["name"] for c in spec["initContainers"]] == ["ferry-init", "ferry-sidecar", "migrate"]
    assert spec["initContainers"][1]["restartPolicy"] == "Always"
    assert pod["metadata"]["annotations"]["ferry.dev/status"] == "injected"
    fetch = spec_from_json(spec["initContainers"][0]["env"][0]["value"])
    # SecretProviderClass team-a/db-credentials; the pod's 2m refresh wins over the namespace's 5m.
    assert (fetch.region, fetch.failover_region, fetch.refresh_seconds) == ("eu-west-1", "eu-central-1", 120.0)
    assert (fetch.file_uid, fetch.file_gid) == (1000, 2000)
    assert [f.name for f in fetch.output_files()] == [
        "prod_db_credentials",
        "db-user",
        "db-password",
        "_prod_app_feature-flags",
    ]
    assert "warnings" not in response


def test_first_call_without_native_sidecars(
    asgi_client: Callable[[Any], Any], cluster: Any, review: Review, patched_pod: Validate
) -> None:
    client = asgi_client(create_app(Settings(), cluster, native_sidecars=False))
    body = review("review-1")
    pod = patched_pod(body["request"]["object"], decode_patch(post(client, body)))
    assert [c["name"] for c in pod["spec"]["initContainers"]] == ["ferry-init", "migrate"]
    assert [c["name"] for c in pod["spec"]["containers"]] == ["api", "metrics", "ferry-sidecar"]


def test_resending_the_patched_pod_yields_no_patch(client: Any, review: Review, patched_pod: Validate) -> None:
    body = review("review-1")
    pod = patched_pod(body["request"]["object"], decode_patch(post(client, body)))
    again = post(client, with_object(body, pod))
    assert again["allowed"] is True and "patch" not in again


def test_reinvocation_as_recorded(client: Any, review: Review) -> None:
    """review-3 as recorded: the stand-in only marked the pod, without Ferry's containers. The mark alone
    proves nothing (anyone can write it), so the pod is decided afresh, and injected."""
    response = post(client, review("review-3"))
    assert response["allowed"] is True
    paths = [op["path"] for op in decode_patch(response)]
    assert "/spec/initContainers/0" in paths or "/spec/initContainers" in paths


def test_reinvocation_after_the_identity_webhook_updates_ferrys_containers(
    client: Any, review: Review, patched_pod: Validate
) -> None:
    """Ferry injects (review-1), the identity webhook changes what it changed in the recording
    (review-2 -> review-3), then Ferry is reinvoked: it copies the identity into its own containers only."""
    first = review("review-1")
    injected = patched_pod(first["request"]["object"], decode_patch(post(client, first)))
    identity_patch = jsonpatch.make_patch(
        review("review-2")["request"]["object"], review("review-3")["request"]["object"]
    )
    assert identity_patch.patch, "the recording shows the identity webhook's change"
    after_identity = identity_patch.apply(injected)
    response = post(client, with_object(review("review-3"), after_identity, uid=review("review-3")["request"]["uid"]))
    ops = decode_patch(response)
    assert ops and all(op["path"].startswith(("/spec/initContainers/0/", "/spec/initContainers/1/")) for op in ops)
    final = patched_pod(after_identity, ops)
    for own in final["spec"]["initContainers"][:2]:
        env = {e["name"]: e.get("value") for e in own["env"]}
        assert env["AWS_ROLE_ARN"] == "arn:aws:iam::123456789012:role/team-a-app"
        assert env["AWS_WEB_IDENTITY_TOKEN_FILE"] == "/var/run/secrets/eks.amazonaws.com/serviceaccount/token"
    # Apart from Ferry's own containers, nothing changed.
    strip = copy.deepcopy(final)
    strip["spec"]["initContainers"] = strip["spec"]["initContainers"][2:]
    expected = copy.deepcopy(after_identity)
    expected["spec"]["initContainers"] = expected["spec"]["initContainers"][2:]
    assert strip == expected
    assert "patch" not in post(client, with_object(review("review-3"), final))


def test_dry_run_behaves_the_same(
    client: Any, scrape: Callable[[], Any], review: Review, patched_pod: Validate
) -> None:
    live, dry = post(client, review("review-1")), post(client, review("review-4"))
    live_ops, dry_ops = decode_patch(live), decode_patch(dry)
    assert [(op["op"], op["path"]) for op in dry_ops] == [(op["op"], op["path"]) for op in live_ops]
    patched_pod(review("review-4")["request"]["object"], dry_ops)
    # Recorded with a stand-in that only marked the pod: without Ferry's containers the mark proves
    # nothing, so a dry run of these is injected too, like the live one.
    for name in ("review-5", "review-6"):
        assert [(op["op"], op["path"]) for op in decode_patch(post(client, review(name)))] == [
            (op["op"], op["path"]) for op in live_ops if op["path"] != "/metadata/annotations/ferry.dev~1status"
        ]
    metrics = scrape().text
    assert 'ferry_admissions_total{dry_run="true",outcome="injected"} 3.0' in metrics
    assert 'ferry_admissions_total{dry_run="false",outcome="injected"} 1.0' in metrics


def test_unannotated_pod_is_allowed_untouched(client: Any, review: Review) -> None:
    response = post(client, review("review-7"))
    assert response == {"uid": review("review-7")["request"]["uid"], "allowed": True}


def test_invalid_request_is_denied_with_what_to_fix(client: Any, review: Review) -> None:
    body = review("review-1")
    annotations = body["request"]["object"]["metadata"]["annotations"]
    del annotations["ferry.dev/secret-provider-class"]
    annotations["ferry.dev/objects"] = '- objectName: "s"\n  objectType: "nope"\n'
    response = post(client, body)
    assert response["allowed"] is False and "patch" not in response
    assert response["status"]["code"] == 403
    assert response["status"]["message"].startswith(
        "ferry.dev/objects: objects[0].objectType: 'nope' is not secretsmanager or ssmparameter"
    )


def test_missing_spc_is_denied_naming_it(client: Any, review: Review) -> None:
    body = review("review-1")
    body["request"]["object"]["metadata"]["annotations"]["ferry.dev/secret-provider-class"] = "db-creds"
    message = post(client, body)["status"]["message"]
    assert "SecretProviderClass 'db-creds' was not found in namespace team-a" in message


def test_other_resources_and_operations_pass_through(client: Any, review: Review) -> None:
    body = review("review-1")
    body["request"]["operation"] = "UPDATE"
    assert post(client, body) == {"uid": body["request"]["uid"], "allowed": True}
    body = review("review-1")
    body["request"]["kind"] = {"group": "apps", "version": "v1", "kind": "Deployment"}
    assert post(client, body) == {"uid": body["request"]["uid"], "allowed": True}


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"{}",
        b'{"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1", "request": null}',
        b"[" * 100000,
    ],
)
def test_malformed_reviews_get_400(client: Any, body: bytes) -> None:
    response = client.post("/mutate", content=body)
    assert response.status_code == 400
    assert "message" in response.json()


def test_pod_create_without_object_gets_400(client: Any, review: Review) -> None:
    body = review("review-1")
    body["request"]["object"] = None
    response = client.post("/mutate", content=json.dumps(body))
    assert response.status_code == 400 and "request.object" in response.json()["message"]


def test_oversized_bodies_get_413(asgi_client: Callable[[Any], Any], cluster: Any, review: Review) -> None:
    client = asgi_client(create_app(Settings(max_request_bytes=2048), cluster, native_sidecars=True))
    response = client.post("/mutate", content=json.dumps(review("review-1")))
    assert response.status_code == 413
    assert "FERRY_MAX_REQUEST_BYTES" in response.json()["message"]

    def chunks() -> Any:
        yield b"{" + b" " * 4096

    async def streamed() -> Any:
        for part in chunks():
            yield part

    response = client.post("/mutate", content=streamed())  # no Content-Length: counted while reading
    assert response.status_code == 413


def test_internal_errors_fail_closed_without_5xx(
    asgi_client: Callable[[Any], Any], review: Review, caplog: pytest.LogCaptureFixture
) -> None:
    class BrokenCluster(_FailingCluster):
        def namespace(self, name: str) -> Any:
            raise KeyError("secret-ish detail")

    client_app = create_app(Settings(), BrokenCluster(), native_sidecars=True)
    client = asgi_client(client_app)
    with caplog.at_level(logging.INFO, logger="ferry.webhook"):
        response = client.post("/mutate", content=json.dumps(review("review-1")))
    assert response.status_code == 200
    answer = response.json()["response"]
    assert answer["allowed"] is False and answer["status"]["code"] == 500
    assert (
        "internal error" in answer["status"]["message"]
        and review("review-1")["request"]["uid"] in answer["status"]["message"]
    )
    logged = " ".join(JsonFormatter().format(record) for record in caplog.records)
    assert '"error":"KeyError"' in logged and "secret-ish detail" not in logged
    scraped = asgi_client(metrics_app(client_app.state.metrics)).get("/metrics").text
    assert 'ferry_admissions_total{dry_run="false",outcome="error"} 1.0' in scraped


def test_one_json_log_line_per_admission(client: Any, review: Review, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="ferry.webhook"):
        post(client, review("review-1"))
        post(client, review("review-4"))
    formatter = JsonFormatter()
    lines = [json.loads(formatter.format(record)) for record in caplog.records if record.name == "ferry.webhook"]
    assert len(lines) == 2
    assert {"ts", "level", "msg", "logger"} <= lines[0].keys() and lines[0]["level"] == "info"
    for line in lines:
        del line["ts"]
    assert lines[0] == {
        "level": "info",
        "msg": "admission",
        "logger": "ferry.webhook",
        "uid": review("review-1")["request"]["uid"],
        "namespace": "team-a",
        "pod": "api",
        "outcome": "injected",
        "reason": "sidecar-native",
        "source": "SecretProviderClass team-a/db-credentials",
        "patchOps": 8,
    }
    assert lines[1]["dryRun"] is True
    assert "FERRY_SPEC" not in caplog.text and "prod/db/credentials" not in caplog.text


def test_metrics(client: Any, scrape: Callable[[], Any], review: Review) -> None:
    post(client, review("review-1"))
    post(client, review("review-7"))
    body = review("review-1")
    body["request"]["object"]["metadata"]["annotations"]["ferry.dev/mount-path"] = "/etc"
    post(client, body)
    client.post("/mutate", content=b"nope")
    assert client.get("/metrics").status_code == 404  # not on the admission port
    response = scrape()
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    text = response.text
    for line in (
        'ferry_admissions_total{dry_run="false",outcome="injected"} 1.0',
        'ferry_admissions_total{dry_run="false",outcome="skipped"} 1.0',
        'ferry_admissions_total{dry_run="false",outcome="denied"} 1.0',
        'ferry_admission_denials_total{reason="invalid-spec"} 1.0',
        "ferry_malformed_reviews_total 1.0",
        "ferry_admission_duration_seconds_count 4.0",
    ):
        assert line in text, line
    assert "ferry_cache_freshness_seconds" in text


def test_cache_freshness_is_read_at_scrape_time(asgi_client: Callable[[Any], Any], cluster: Any) -> None:
    cluster.freshness_seconds = lambda: {"namespaces": 1.5, "secretproviderclasses": float("inf")}
    app = create_app(Settings(), cluster, native_sidecars=True)
    text = asgi_client(metrics_app(app.state.metrics)).get("/metrics").text
    assert 'ferry_cache_freshness_seconds{resource="namespaces"} 1.5' in text
    assert 'ferry_cache_freshness_seconds{resource="secretproviderclasses"} +Inf' in text


def test_health_and_readiness(asgi_client: Callable[[Any], Any], cluster: Any) -> None:
    certs_loaded = {"value": False}
    client = asgi_client(
        create_app(Settings(), cluster, native_sidecars=True, ready_check=lambda: certs_loaded["value"])
    )
    assert client.get("/healthz").status_code == 200
    response = client.get("/readyz")
    assert response.status_code == 503 and response.json()["checks"] == {"cluster": True, "certificates": False}
    certs_loaded["value"] = True
    assert client.get("/readyz").status_code == 200
    cluster.ready = False
    assert client.get("/readyz").status_code == 503


def test_noop_baseline(client: Any, review: Review, asgi_client: Callable[[Any], Any], cluster: Any) -> None:
    response = client.post("/noop?timeout=5s", content=json.dumps(review("review-1")))
    assert response.json()["response"] == {"uid": review("review-1")["request"]["uid"], "allowed": True}
    assert client.post("/noop", content=b"x").status_code == 400
    without = asgi_client(create_app(Settings(), cluster, native_sidecars=True, noop_endpoint=False))
    assert without.post("/noop", content=json.dumps(review("review-1"))).status_code in (404, 405)


def test_admission_reads_only_the_in_memory_view(client: Any, cluster: Any, review: Review) -> None:
    post(client, review("review-1"))
    # The namespace, its LimitRanges and one SecretProviderClass: no I/O behind any of them.
    assert cluster.lookups == 3


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("metadata",), []),
        (("metadata", "annotations"), ["ferry.dev/inject"]),
        (("metadata", "annotations", "ferry.dev/objects"), 5),
        (("spec",), "nope"),
        (("spec", "containers"), {"name": "x"}),
        (("spec", "containers"), [None, 3, "x"]),
        (("spec", "initContainers"), [{"name": None}]),
        (("spec", "securityContext"), {"runAsUser": "root", "fsGroup": True}),
        (("spec", "volumes"), "none"),
    ],
)
def test_garbage_pods_never_get_a_5xx(client: Any, review: Review, path: tuple[str, ...], value: Any) -> None:
    body = review("review-1")
    node = body["request"]["object"]
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    response = client.post("/mutate", content=json.dumps(body))
    assert response.status_code in (200, 400)
    if response.status_code == 200:
        answer = response.json()["response"]
        if answer["allowed"] and "patch" in answer:
            jsonpatch.apply_patch(body["request"]["object"], decode_patch(answer))


class _FailingCluster:
    """A cluster view whose every read fails: each admission takes the fail-closed branch."""

    def namespace(self, name: str) -> Any:
        raise KeyError(name)

    def secret_provider_class(self, namespace: str, name: str) -> Any:
        return None

    def limit_ranges(self, namespace: str) -> Any:
        return ()

    def is_ready(self) -> bool:
        return True


_FAILING = AdmissionHandler(Settings(), _FailingCluster(), True, AdmissionMetrics())


@hypothesis_settings(max_examples=300, deadline=None)
@given(uid=st.text(min_size=1, max_size=128))
def test_the_fail_closed_answer_is_the_one_build_response_writes(uid: str) -> None:
    """Encoded once at import, with the uid spliced in: byte for byte the answer built afresh for each request."""
    body = load_review("review-1")
    body["request"]["uid"] = uid
    status, answer = _FAILING.handle(json.dumps(body).encode())
    fresh = build_response(uid, allowed=False, code=500, message=INTERNAL_ERROR_MESSAGE.format(uid=uid))
    assert status == 200 and answer == json.dumps(fresh, separators=(",", ":")).encode()
    assert json.loads(answer)["response"]["uid"] == uid
