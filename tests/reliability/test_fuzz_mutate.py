"""Property-based fuzzing of POST /mutate over real TLS: never a 5xx, never a hang, the uid always echoed.

Why it exists: the webhook sits on the path of every pod creation with
``failurePolicy: Fail``, and anything in the cluster that can reach its
Service can send it bytes. A crash, a 5xx or a hang blocks pod creation
cluster-wide; an answer with the wrong uid is rejected by the API server. The
properties, checked against the real uvicorn + TLS stack:

- well-formed AdmissionReviews with random pods and random Ferry annotations
  get HTTP 200 with the same uid, and a patch that applies to the pod;
- mutated reviews (keys deleted, values of the wrong type, huge arrays, deep
  nesting) get 200 (same uid) or 400, and 400 whenever the envelope is broken;
- bytes that are not JSON, not UTF-8 or not a JSON object, with any content
  type, get 400; bodies over the limit get 413, with or without a Content-Length;
- a client that stalls mid-body does not stop other admissions.

Default example counts keep the default run fast (see `EXAMPLES`); ``-m slow``
runs ten times more.
"""

from __future__ import annotations

import copy
import json
import socket
import ssl
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.leakscan import SecretLedger
from tests.support.pods import make_pod
from tests.support.webhook_server import MUTATE_PATH, NAMESPACE, WebhookUnderTest, apply_patch, review

from .conftest import record_result
from .corpus import GOOD

EXAMPLES = 150
# timeoutSeconds of the MutatingWebhookConfiguration: the API server's deadline for an answer.
ADMISSION_TIMEOUT_SECONDS = 5
SLOW_EXAMPLES = 1500
_STATS: dict[str, dict[int, int]] = {}


def _count(strategy: str, status: int) -> None:
    per_status = _STATS.setdefault(strategy, {})
    per_status[status] = per_status.get(status, 0) + 1


@pytest.fixture(scope="module")
def webhook(tmp_path_factory: pytest.TempPathFactory, ledger: SecretLedger) -> Iterator[WebhookUnderTest]:
    server = WebhookUnderTest(tmp_path_factory.mktemp("fuzz-tls")).start()
    yield server
    assert server.client is not None
    ledger.expose("metrics:fuzz", server.metrics_text())
    for strategy, statuses in _STATS.items():
        record_result("fuzz", strategy, {str(k): v for k, v in sorted(statuses.items())})
    server.stop()


FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
)

# --- Strategies. -------------------------------------------------------------------

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40),
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=12), children, max_size=5),
    max_leaves=25,
)
FERRY_KEYS = [
    "ferry.dev/inject",
    "ferry.dev/objects",
    "ferry.dev/secret-provider-class",
    "ferry.dev/region",
    "ferry.dev/failover-region",
    "ferry.dev/path-translation",
    "ferry.dev/mount-path",
    "ferry.dev/containers",
    "ferry.dev/refresh-interval",
    "ferry.dev/notify-url",
    "ferry.dev/notify-signal",
    "ferry.dev/status",
    "ferry.dev/unknown",
]
annotation_values = st.one_of(
    st.sampled_from(["true", "false", "", "0", "10s", "5m", "us-east-1", "eu-west-1", "_", "False", "app", GOOD]),
    st.text(max_size=60),
    st.builds(
        lambda items: "\n".join(f"- objectName: {x}\n  objectType: secretsmanager" for x in items),
        st.lists(st.text(min_size=1, max_size=20), max_size=4),
    ),
)
annotations = st.dictionaries(st.sampled_from(FERRY_KEYS), annotation_values, max_size=6).map(
    lambda found: {"ferry.dev/inject": "true", **found}
)
container_names = st.from_regex(r"[a-z][a-z0-9-]{0,10}", fullmatch=True)
containers = st.lists(
    st.builds(
        lambda name, extra: {"name": name, "image": "registry.example.com/x:1", **extra},
        container_names,
        st.dictionaries(
            st.sampled_from(["env", "volumeMounts", "securityContext", "ports", "args"]),
            json_values,
            max_size=2,
        ),
    ),
    min_size=1,
    max_size=4,
    unique_by=lambda c: c["name"],
)
pod_security = st.dictionaries(
    st.sampled_from(["runAsUser", "runAsGroup", "fsGroup", "runAsNonRoot", "seccompProfile"]),
    st.one_of(st.integers(min_value=0, max_value=70000), st.booleans(), json_values),
    max_size=3,
)


@st.composite
def random_pods(draw: st.DrawFn) -> dict[str, Any]:
    spec: dict[str, Any] = {}
    if draw(st.booleans()):
        spec["securityContext"] = draw(pod_security)
    if draw(st.booleans()):
        spec["restartPolicy"] = draw(st.sampled_from(["Always", "Never", "OnFailure"]))
    if draw(st.booleans()):
        spec["initContainers"] = draw(containers)
    result = make_pod(draw(annotations), draw(containers), namespace=NAMESPACE, **spec)
    if draw(st.booleans()):
        result["metadata"]["labels"] = draw(st.dictionaries(st.text(max_size=10), st.text(max_size=10), max_size=3))
    return result


# --- Helpers. ------------------------------------------------------------------------


def _check_answer(sent_uid: Any, response: httpx.Response) -> dict[str, Any] | None:
    """The invariants every answer keeps; returns the AdmissionResponse of a 200."""
    assert response.status_code < 500, f"HTTP {response.status_code}: {response.text[:300]}"
    body = response.json()  # every answer, 400 included, is JSON
    if response.status_code != 200:
        assert response.status_code in (400, 413), response.status_code
        assert isinstance(body.get("message"), str) and body["message"], body
        return None
    assert body["apiVersion"] == "admission.k8s.io/v1" and body["kind"] == "AdmissionReview", body
    answer = body["response"]
    assert answer["uid"] == sent_uid
    assert isinstance(answer["allowed"], bool)
    if not answer["allowed"]:
        assert isinstance(answer["status"]["message"], str) and answer["status"]["message"]
    return dict(answer)


def _envelope_is_broken(sent: Any) -> bool:
    """An oracle independent of the webhook's parser: the minimum the API server always sends."""
    if not isinstance(sent, dict) or sent.get("apiVersion") != "admission.k8s.io/v1":
        return True
    if sent.get("kind") != "AdmissionReview" or not isinstance(sent.get("request"), dict):
        return True
    request = sent["request"]
    uid = request.get("uid")
    return not (isinstance(uid, str) and uid) or request.get("operation") not in (
        "CREATE",
        "UPDATE",
        "DELETE",
        "CONNECT",
    )


# --- Properties. -----------------------------------------------------------------------

# The API server names the namespace of every pod CREATE; a review without one is malformed (a 400), never
# answered from the pod's own metadata.namespace (tests/webhook/test_hostile_tenant.py).
NAMESPACES = st.sampled_from([NAMESPACE, "plain"])


def _wellformed(webhook: WebhookUnderTest, obj: dict[str, Any], uid: str, namespace: str) -> None:
    sent = review(obj, uid=uid, namespace=namespace)
    answer = _check_answer(uid, webhook.post(json.dumps(sent).encode()))
    _count("well-formed review, random pod", 200 if answer is not None else 400)
    assert answer is not None, "a well-formed review must get HTTP 200"
    if answer["allowed"] and "patch" in answer:
        patched = apply_patch(obj, answer)
        assert patched["metadata"]["annotations"]["ferry.dev/status"] == "injected"


@FUZZ
@given(obj=random_pods(), uid=st.text(min_size=1, max_size=64), namespace=NAMESPACES)
def test_wellformed_reviews_get_200_with_their_uid(
    webhook: WebhookUnderTest, obj: dict[str, Any], uid: str, namespace: str
) -> None:
    _wellformed(webhook, obj, uid, namespace)


@pytest.mark.slow
@settings(parent=FUZZ, max_examples=SLOW_EXAMPLES)
@given(obj=random_pods(), uid=st.text(min_size=1, max_size=64), namespace=NAMESPACES)
def test_wellformed_reviews_slow(webhook: WebhookUnderTest, obj: dict[str, Any], uid: str, namespace: str) -> None:
    _wellformed(webhook, obj, uid, namespace)


BASE = review(
    make_pod(
        {"ferry.dev/inject": "true", "ferry.dev/objects": GOOD, "ferry.dev/refresh-interval": "30s"},
        namespace=NAMESPACE,
    )
)


def _slots(document: Any) -> list[tuple[Any, Any]]:
    """Every (container, key or index) in a JSON document, iteratively (documents can be deep)."""
    found: list[tuple[Any, Any]] = []
    pending = [document]
    while pending:
        node = pending.pop()
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for key, value in items:
            found.append((node, key))
            pending.append(value)
    return found


@st.composite
def mutated_reviews(draw: st.DrawFn) -> Any:
    """The base review with 1-3 mutations at random paths: delete, retype, huge array, deep nesting."""
    document = copy.deepcopy(BASE)
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        parents = _slots(document)
        if not parents:
            break
        parent, key = draw(st.sampled_from(parents))
        action = draw(st.sampled_from(["delete", "retype", "huge-array", "deep", "wide-string"]))
        if action == "delete":
            if isinstance(parent, dict):
                del parent[key]
            else:
                parent.pop(key)
        elif action == "retype":
            parent[key] = draw(json_values)
        elif action == "huge-array":
            parent[key] = [draw(json_scalars)] * draw(st.integers(min_value=1000, max_value=20_000))
        elif action == "deep":
            depth = draw(st.sampled_from([10, 200, 990, 1100, 20_000]))
            value: Any = draw(json_scalars)
            for _ in range(depth):
                value = [value] if draw(st.booleans()) else {"a": value}
            parent[key] = value
        else:
            parent[key] = draw(st.sampled_from(["x", "\u2215", "\x00", "\ud800"])) * 100_000
    return document


def _encode(document: Any) -> bytes:
    # Lone surrogates cannot be UTF-8: send them as JSON escapes, which JSON allows.
    return json.dumps(document, ensure_ascii=True).encode()


def _mutated(webhook: WebhookUnderTest, document: Any) -> None:
    try:
        body = _encode(document)
    except RecursionError:
        return  # too deep for our own encoder; the raw-bytes property covers depth
    request = document.get("request") if isinstance(document, dict) else None
    uid = request.get("uid") if isinstance(request, dict) else None
    answer = webhook.post(body)
    _count("mutated review", answer.status_code)
    parsed = _check_answer(uid, answer)
    if _envelope_is_broken(document):
        assert parsed is None and answer.status_code == 400, "a broken envelope must get HTTP 400"


@FUZZ
@given(document=mutated_reviews())
def test_mutated_reviews_get_200_or_400_never_5xx(webhook: WebhookUnderTest, document: Any) -> None:
    _mutated(webhook, document)


@pytest.mark.slow
@settings(parent=FUZZ, max_examples=SLOW_EXAMPLES)
@given(document=mutated_reviews())
def test_mutated_reviews_slow(webhook: WebhookUnderTest, document: Any) -> None:
    _mutated(webhook, document)


raw_bodies = st.one_of(
    st.binary(max_size=2000),
    st.binary(min_size=1, max_size=200).map(lambda b: b"\xff\xfe" + b),  # never UTF-8
    json_scalars.map(lambda v: json.dumps(v).encode()),
    st.lists(json_values, max_size=5).map(lambda v: json.dumps(v).encode()),
    st.integers(min_value=1, max_value=len(_encode(BASE)) - 1).map(lambda n: _encode(BASE)[:n]),  # truncated
    st.sampled_from([b"", b"null", b"{}", b"[]", b'{"request": null}', b"\xef\xbb\xbf{}", b"NaN", b"[" * 100_000]),
)
content_types = st.sampled_from(
    [
        None,
        "application/json",
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/json; charset=utf-16",
        "application/cbor",
    ]
)


@FUZZ
@given(body=raw_bodies, content_type=content_types)
def test_bytes_that_are_not_a_review_get_400(webhook: WebhookUnderTest, body: bytes, content_type: str | None) -> None:
    answer = webhook.post(body, content_type=content_type)
    _count("raw bytes, any content type", answer.status_code)
    _check_answer(None, answer)
    assert answer.status_code == 400


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/xml", "application/json; charset=latin-1"])
def test_a_valid_review_with_an_odd_content_type_never_gets_5xx(
    webhook: WebhookUnderTest, content_type: str | None
) -> None:
    sent = review(make_pod({"ferry.dev/inject": "true", "ferry.dev/objects": GOOD}, namespace=NAMESPACE))
    answer = webhook.post(_encode(sent), content_type=content_type)
    _check_answer(sent["request"]["uid"], answer)


# --- Size, depth and liveness. ----------------------------------------------------------


def test_oversized_bodies_get_413_with_or_without_content_length(webhook: WebhookUnderTest) -> None:
    limit = webhook.settings.max_request_bytes
    over = b'{"pad":"' + b"x" * limit + b'"}'
    assert webhook.post(over).status_code == 413

    def chunks() -> Iterator[bytes]:
        for _ in range(limit // 65536 + 2):
            yield b" " * 65536

    assert webhook.client is not None
    streamed = webhook.client.post(MUTATE_PATH, content=chunks(), headers={"Content-Type": "application/json"})
    assert streamed.status_code == 413  # chunked: no Content-Length to reject up front
    # Just under the limit: parsed, and answered 400 (not a review), not 413.
    padded = webhook.post(b'{"pad":"' + b"x" * (limit - 20) + b'"}')
    assert padded.status_code == 400
    record_result("fuzz", "oversized bodies (413 with and without Content-Length)", {"413": 2})


@pytest.mark.parametrize("depth", [999, 1000, 5_000, 100_000])
def test_deep_nesting_is_a_400_or_an_answer(webhook: WebhookUnderTest, depth: int) -> None:
    raw = b'{"a":' * depth + b"1" + b"}" * depth
    assert webhook.post(raw).status_code == 400
    inner = "[" * depth + "]" * depth
    sent = _encode(review({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}, "spec": {}}))
    deep_pod = sent.replace(b'"spec": {}', b'"spec": {"deep": ' + inner.encode() + b"}")
    answer = webhook.post(deep_pod)
    _check_answer(json.loads(sent)["request"]["uid"], answer)


def test_huge_pod_is_answered_in_bounded_time(webhook: WebhookUnderTest) -> None:
    """A pod with 20,000 containers (660 KB, well inside the API server's request limit) that opted in.

    Admission runs on the event loop, so while this one is processed no other
    pod is admitted. The bound is the webhook's own `timeoutSeconds: 5` in
    manifests/mutatingwebhookconfiguration.yaml: past it the API server gives
    up and, with failurePolicy Fail, every opted-in pod creation fails.
    """
    many = [{"name": f"c{i}", "image": "x"} for i in range(20_000)]
    obj = make_pod({"ferry.dev/inject": "true", "ferry.dev/objects": GOOD}, many, namespace=NAMESPACE)
    began = time.monotonic()
    sent = review(obj)
    answer = webhook.post(_encode(sent), timeout=120)
    elapsed = time.monotonic() - began
    _check_answer(sent["request"]["uid"], answer)
    record_result("fuzz", "20,000-container pod: seconds to answer", {"seconds": round(elapsed, 1)})
    assert elapsed < ADMISSION_TIMEOUT_SECONDS, f"{elapsed:.1f}s to answer; the API server gives up after 5 s"


def test_a_stalled_client_does_not_block_admissions(webhook: WebhookUnderTest) -> None:
    """Slowloris: a connection that sent half a body and stopped must not hold up anyone else."""
    context = webhook.client_context()
    host, port = "127.0.0.1", webhook.server.port
    stalled = []
    try:
        for _ in range(20):
            raw = socket.create_connection((host, port), timeout=5)
            conn = context.wrap_socket(raw, server_hostname="localhost")
            conn.sendall(
                b"POST /mutate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                b"Content-Length: 100000\r\n\r\n" + b'{"kind": "AdmissionReview", '
            )
            stalled.append(conn)
        began = time.monotonic()
        for _ in range(5):
            sent = review(make_pod({"ferry.dev/inject": "true", "ferry.dev/objects": GOOD}, namespace=NAMESPACE))
            assert _check_answer(sent["request"]["uid"], webhook.post(_encode(sent))) is not None
        assert time.monotonic() - began < 10
    finally:
        for conn in stalled:
            conn.close()


def test_wrong_methods_and_paths_are_4xx(webhook: WebhookUnderTest) -> None:
    assert webhook.client is not None
    assert webhook.client.get("/mutate").status_code == 405
    assert webhook.client.put("/mutate", content=b"{}").status_code == 405
    assert webhook.client.post("/mutate/../healthz", content=b"{}").status_code in (400, 404, 405)
    assert webhook.client.get("/healthz").status_code == 200  # and it is still alive after all of the above


# --- What a hostile client can make the webhook remember. -----------------------------------


def test_request_fields_cannot_grow_metrics_without_bound(webhook: WebhookUnderTest) -> None:
    """Anyone who can reach the Service can post reviews; the label set must not grow with what they send.

    200 reviews, each naming a different valid 63-character namespace (a
    longer one is refused as malformed before any metric is recorded), must
    not add a series each to /metrics (which are never freed): one label per
    namespace would add about 50 KB.
    """
    assert webhook.client is not None
    warm = review(make_pod({}, namespace=NAMESPACE), namespace="warm-up")
    _check_answer(warm["request"]["uid"], webhook.post(_encode(warm)))
    before = len(webhook.metrics_text().encode())
    for index in range(200):
        sent = review(make_pod({}, namespace=NAMESPACE), namespace=f"ns{index:03d}-" + "n" * 57)
        answer = webhook.post(_encode(sent))
        assert answer.status_code == 200, "the input must reach the metrics, not be refused before them"
        _check_answer(sent["request"]["uid"], answer)
    grown = len(webhook.metrics_text().encode()) - before
    record_result("fuzz", "metrics growth after 200 hostile namespaces (bytes)", {"grown": grown})
    assert grown < 2_000, f"/metrics grew by {grown} bytes from 200 requests"


def test_tls_is_required(webhook: WebhookUnderTest) -> None:
    """Plain HTTP to the TLS port gets no admission answer."""
    with socket.create_connection(("127.0.0.1", webhook.server.port), timeout=5) as raw:
        raw.sendall(b"POST /mutate HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
        try:
            reply = raw.recv(4096)
        except (ConnectionResetError, TimeoutError, ssl.SSLError):
            reply = b""
    assert b"AdmissionReview" not in reply and not reply.startswith(b"HTTP/1.1 200")
