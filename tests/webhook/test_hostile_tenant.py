"""The webhook under a hostile tenant and careless input (issue 10, items 1, 3, 4, 8 and 14b).

Each test sends what an attacker with a tenant's rights (or anyone who can reach /mutate) can send, through
the same `AdmissionHandler` the HTTP endpoint calls, and checks the answer is bounded, clear and safe.
"""

from __future__ import annotations

import json
from typing import Any

import jsonpatch
import pytest

from tests.support.pods import make_pod
from tests.support.reviews import decode_patch, pod_create_review
from webhook.edge.app import AdmissionHandler
from webhook.edge.metrics import AdmissionMetrics
from webhook.policy.memo import AdmissionMemo
from webhook.policy.view import StaticView
from webhook.settings import Settings

SETTINGS = Settings(default_region="eu-west-1")
OBJECTS = '- objectName: "prod/db"\n  objectType: secretsmanager\n'
# A denial travels in the API server's answer, an event and kubectl's output: a few KiB at most.
FEW_KIB = 8 * 1024


def handler(view: StaticView | None = None) -> AdmissionHandler:
    return AdmissionHandler(SETTINGS, view or StaticView(), True, AdmissionMetrics())


def ask(h: AdmissionHandler, body: Any, *, namespace: str | None = "team-a") -> tuple[int, Any, int]:
    """(HTTP status, decoded answer, answer size in bytes) for a pod CREATE review of `body`."""
    review = pod_create_review(body, namespace=namespace or "")
    if namespace is None:
        del review["request"]["namespace"]
    status, payload = h.handle(json.dumps(review).encode())
    return status, json.loads(payload), len(payload)


def denial(h: AdmissionHandler, body: Any) -> tuple[str, int]:
    status, answer, size = ask(h, body)
    assert status == 200
    response = answer["response"]
    assert response["allowed"] is False, response
    return response["status"]["message"], size


# --- 1. Denial amplification ---------------------------------------------------------------------------


def test_many_long_containers_and_unknown_names_get_a_small_denial() -> None:
    long_names = [f"c{i:03d}-" + "x" * 56 for i in range(250)]
    unknown = ",".join(f"nope{i}-" + "y" * 50 for i in range(2000))
    body = make_pod(
        {"ferry.dev/inject": "true", "ferry.dev/objects": OBJECTS, "ferry.dev/containers": unknown},
        [{"name": name, "image": "registry.example.com/app:1"} for name in long_names],
    )
    message, size = denial(handler(), body)
    assert size < FEW_KIB, size
    assert "ferry.dev/containers: no container named 'nope0-" in message
    assert "more names match no container" in message
    # The pod's names are listed once, the first few of them, each cut short.
    assert message.count("this pod has:") == 1
    assert long_names[0][:61] in message and long_names[-1][:61] not in message
    assert "and 230 more" in message


def test_a_huge_value_is_quoted_short() -> None:
    body = make_pod({"ferry.dev/inject": "true", "ferry.dev/objects": OBJECTS, "ferry.dev/mount-path": "x" * 200_000})
    message, size = denial(handler(), body)
    assert "ferry.dev/mount-path" in message and "absolute path" in message
    assert size < FEW_KIB


def test_a_huge_secret_provider_class_name_is_quoted_short() -> None:
    body = make_pod({"ferry.dev/inject": "true", "ferry.dev/secret-provider-class": "a" * 300_000})
    message, size = denial(handler(), body)
    assert "is not a valid SecretProviderClass name" in message
    assert size < FEW_KIB


def test_many_invalid_objects_give_a_bounded_message() -> None:
    objects = "".join(f"- objectName: 'bad name {i} ' \n  objectType: nonsense\n" for i in range(190))
    body = make_pod({"ferry.dev/inject": "true", "ferry.dev/objects": objects})
    message, size = denial(handler(), body)
    assert "objects[0]" in message
    assert "more problems" in message
    assert size < FEW_KIB


def test_denials_are_not_remembered() -> None:
    h = handler()
    unknown = ",".join(f"missing{i}" for i in range(50))
    body = make_pod({"ferry.dev/inject": "true", "ferry.dev/objects": OBJECTS, "ferry.dev/containers": unknown})
    denial(h, body)
    denial(h, body)
    assert len(h.memo) == 0
    assert h.memo.hits == 0


def test_the_memo_is_bounded_in_bytes() -> None:
    memo: AdmissionMemo[bytes] = AdmissionMemo(max_entries=1000, max_bytes=10_000, max_entry_bytes=4_000)
    for i in range(100):
        memo.remember(f"k{i}".encode(), b"x" * 3_000, None, {}, size=3_000)
    assert memo.bytes <= 10_000 and len(memo) == 3
    memo.remember(b"huge", b"x" * 5_000, None, {}, size=5_000)
    assert memo.recall(b"huge", None, lambda ns, name: None) is None
    # The newest small ones are the ones kept.
    assert memo.recall(b"k99", None, lambda ns, name: None) == b"x" * 3_000


# --- 3. CPU head-of-line blocking: bounded work per request -----------------------------------------------


def test_many_unknown_ferry_keys_are_counted_not_each_searched(monkeypatch: pytest.MonkeyPatch) -> None:
    import difflib

    calls = 0
    real = difflib.get_close_matches

    def counting(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(difflib, "get_close_matches", counting)
    annotations = {f"ferry.dev/typo-{i}": "x" for i in range(20_000)}
    annotations.update({"ferry.dev/inject": "true", "ferry.dev/objects": OBJECTS})
    message, size = denial(handler(), make_pod(annotations))
    assert "is not a Ferry annotation" in message
    assert "and 19995 more ferry.dev/ keys" in message
    assert size < FEW_KIB
    assert calls <= 5


def test_unknown_container_names_are_searched_a_bounded_number_of_times(monkeypatch: pytest.MonkeyPatch) -> None:
    import difflib

    calls = 0
    real = difflib.get_close_matches

    def counting(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(difflib, "get_close_matches", counting)
    unknown = ",".join(f"missing-{i}" for i in range(5_000))
    body = make_pod({"ferry.dev/inject": "true", "ferry.dev/objects": OBJECTS, "ferry.dev/containers": unknown})
    message, _ = denial(handler(), body)
    assert "4995 more names match no container" in message
    assert calls <= 5


def test_a_very_long_unknown_key_gets_no_fuzzy_search(monkeypatch: pytest.MonkeyPatch) -> None:
    import difflib

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("difflib ran on a key no annotation can have")

    monkeypatch.setattr(difflib, "get_close_matches", refuse)
    key = "ferry.dev/" + "z" * 100_000
    message, size = denial(handler(), make_pod({key: "x", "ferry.dev/inject": "true"}))
    assert "is not a Ferry annotation" in message and size < FEW_KIB


# --- 4. Unauthenticated /mutate: the namespace comes from the request only ----------------------------------


def test_a_pod_create_without_request_namespace_is_malformed() -> None:
    spc = {
        "apiVersion": "secrets-store.csi.x-k8s.io/v1",
        "kind": "SecretProviderClass",
        "metadata": {"name": "db", "namespace": "victim"},
        "spec": {"provider": "aws", "parameters": {"objects": OBJECTS, "region": "eu-west-1"}},
    }
    h = handler(StaticView([spc]))
    body = make_pod({"ferry.dev/inject": "true", "ferry.dev/secret-provider-class": "db"})
    body["metadata"]["namespace"] = "victim"
    status, answer, _ = ask(h, body, namespace=None)
    assert status == 400
    assert "request.namespace" in answer["message"]
    assert "patch" not in json.dumps(answer)
    # With the namespace the API server names, the pod's own metadata.namespace changes nothing.
    status, answer, _ = ask(h, body, namespace="attacker")
    assert status == 200 and answer["response"]["allowed"] is False
    assert "not found in namespace attacker" in answer["response"]["status"]["message"]


# --- 8. A container mounting Ferry's volume itself -------------------------------------------------------


@pytest.mark.parametrize(
    "containers",
    [
        # An app container that names Ferry's volume without declaring it: it would become writable.
        [{"name": "app", "image": "i", "volumeMounts": [{"name": "ferry-secrets", "mountPath": "/steal"}]}],
        # A container left out by ferry.dev/containers that mounts it anyway.
        [
            {"name": "app", "image": "i"},
            {"name": "other", "image": "i", "volumeMounts": [{"name": "ferry-secrets", "mountPath": "/x"}]},
        ],
    ],
)
def test_a_container_mounting_ferrys_volume_is_denied(containers: list[dict[str, Any]]) -> None:
    annotations = {"ferry.dev/inject": "true", "ferry.dev/objects": OBJECTS, "ferry.dev/containers": "app"}
    message, _ = denial(handler(), make_pod(annotations, containers))
    assert "mount the volume 'ferry-secrets', which is Ferry's" in message
    assert "remove" in message


def test_the_same_pod_without_that_mount_is_injected_read_only() -> None:
    containers = [{"name": "app", "image": "i"}, {"name": "other", "image": "i"}]
    annotations = {"ferry.dev/inject": "true", "ferry.dev/objects": OBJECTS, "ferry.dev/containers": "app"}
    body = make_pod(annotations, containers)
    status, answer, _ = ask(handler(), body)
    assert status == 200 and answer["response"]["allowed"] is True
    injected = jsonpatch.apply_patch(body, decode_patch(answer["response"]))
    mounts = {c["name"]: c.get("volumeMounts", []) for c in injected["spec"]["containers"]}
    assert mounts["app"] == [{"name": "ferry-secrets", "mountPath": "/mnt/secrets-store", "readOnly": True}]
    assert mounts["other"] == []


# --- 14b. A lone surrogate in an annotation --------------------------------------------------------------


def test_a_lone_surrogate_is_a_clear_400_not_an_internal_error() -> None:
    body = make_pod({"ferry.dev/inject": "true", "ferry.dev/objects": "- objectName: a\ud800"})
    status, answer, _ = ask(handler(), body)
    assert status == 400, answer
    assert "surrogate" in answer["message"]


def test_a_surrogate_pair_is_ordinary_text() -> None:
    body = make_pod({"ferry.dev/inject": "true", "ferry.dev/objects": OBJECTS, "note": "\U0001f600"})
    status, answer, _ = ask(handler(), body)
    assert status == 200 and answer["response"]["allowed"] is True


@pytest.mark.parametrize(
    "encode",
    [
        lambda review: json.dumps(review, ensure_ascii=False).encode("utf-8", "surrogatepass"),  # raw, no escape
        lambda review: json.dumps(review).encode("utf-16"),  # escaped, but not as bytes the escape search sees
    ],
    ids=["raw-utf8-surrogate", "utf16-body"],
)
def test_a_lone_surrogate_that_is_not_a_utf8_escape_is_a_clear_400(encode: Any) -> None:
    """json.loads of bytes takes UTF-16/32 and raw surrogate bytes, which the search for escapes did not see:
    the surrogate reached the log line, which failed to print (ensure_ascii off), so a forged review's
    admission went unlogged (and a logging traceback went to stderr). Failed first: 200, the pod injected."""
    pod = make_pod({"ferry.dev/inject": "true", "ferry.dev/objects": OBJECTS})
    pod["metadata"]["name"] = "evil\ud800"
    status, payload = handler().handle(encode(pod_create_review(pod, namespace="team-a")))
    assert status == 400, payload
    assert "not JSON" in json.loads(payload)["message"]


# --- Beyond the list: what a review echoes into the answer, the log and the metrics is bounded. -----------


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [("uid", "u" * 100_000, "request.uid"), ("namespace", "N" * 100_000, "request.namespace")],
)
def test_echoed_request_fields_are_bounded(field: str, value: str, expected: str) -> None:
    review = pod_create_review(make_pod({"ferry.dev/inject": "true", "ferry.dev/objects": OBJECTS}), namespace="team-a")
    review["request"][field] = value
    status, payload = handler().handle(json.dumps(review).encode())
    assert status == 400 and expected in json.loads(payload)["message"]
    assert len(payload) < FEW_KIB


def test_a_huge_pod_name_gives_a_short_log_line(caplog: pytest.LogCaptureFixture) -> None:
    body = make_pod({"ferry.dev/inject": "true", "ferry.dev/objects": OBJECTS})
    body["metadata"]["name"] = "p" * 500_000
    with caplog.at_level("INFO", logger="ferry.webhook"):
        status, _, _ = ask(handler(), body)
    assert status == 200
    assert caplog.records and all(len(record.getMessage()) < FEW_KIB for record in caplog.records)


@pytest.mark.parametrize("field", ["kind", "apiVersion", "operation"])
def test_a_malformed_envelope_is_not_echoed_whole(field: str) -> None:
    review = pod_create_review(make_pod({}), namespace="team-a")
    (review if field != "operation" else review["request"])[field] = "w" * 1_000_000
    status, payload = handler().handle(json.dumps(review).encode())
    assert status == 400 and len(payload) < FEW_KIB


def test_invalid_specs_are_not_remembered() -> None:
    from webhook.policy.memo import cache_stats

    h = handler()
    for i in range(20):
        objects = f"- objectName: 'bad name {i} '\n  objectType: nonsense\n" + "#" * 60_000
        denial(h, make_pod({"ferry.dev/inject": "true", "ferry.dev/objects": objects}))
    assert cache_stats()["specs"][2] == 0
    status, answer, _ = ask(h, make_pod({"ferry.dev/inject": "true", "ferry.dev/objects": OBJECTS}))
    assert answer["response"]["allowed"] is True and cache_stats()["specs"][2] == 1
