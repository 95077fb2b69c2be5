"""AdmissionReview wire format: parsing (400 on anything malformed) and responses."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from tests.support.reviews import decode_patch
from webhook.policy.review import MAX_WARNING_CHARS, MalformedReview, build_response, parse_review


def test_parses_every_recorded_review(review: Callable[[str], dict[str, Any]]) -> None:
    for name in ("review-1", "review-3", "review-4", "review-7"):
        body = json.dumps(review(name)).encode()
        request = parse_review(body)
        assert request["uid"] == review(name)["request"]["uid"]
        assert request["operation"] == "CREATE"
        assert isinstance(request.get("object"), dict)


def test_dry_run_flag_is_kept(review: Callable[[str], dict[str, Any]]) -> None:
    assert parse_review(review("review-4"))["dryRun"] is True
    assert parse_review(review("review-1"))["dryRun"] is False


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b"", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b"[1, 2]", "JSON object"),
        (b'{"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1beta1", "request": {}}', "v1beta1"),
        (b'{"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1"}', "request is missing"),
        (b'{"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1", "request": {"uid": 5}}', "uid"),
    ],
)
def test_malformed_bodies_raise(body: bytes, needle: str) -> None:
    with pytest.raises(MalformedReview, match=needle):
        parse_review(body)


def test_field_types_are_checked(review: Callable[[str], dict[str, Any]]) -> None:
    for key, value in (("object", "a pod"), ("operation", "PATCH"), ("dryRun", "yes"), ("kind", None)):
        body = review("review-1")
        body["request"][key] = value
        with pytest.raises(MalformedReview, match=key if key != "operation" else "operation"):
            parse_review(body)


def test_allow_response_carries_a_base64_json_patch() -> None:
    ops = [{"op": "add", "path": "/metadata/annotations/ferry.dev~1status", "value": "injected"}]
    answer = build_response("uid-1", patch=ops, warnings=["careful"])
    assert answer["apiVersion"] == "admission.k8s.io/v1" and answer["kind"] == "AdmissionReview"
    response = answer["response"]
    assert response["uid"] == "uid-1" and response["allowed"] is True
    assert response["patchType"] == "JSONPatch"
    assert decode_patch(response) == ops
    assert response["warnings"] == ["careful"]
    assert "status" not in response


def test_allow_without_patch_has_no_patch_fields() -> None:
    response = build_response("uid-2")["response"]
    assert response == {"uid": "uid-2", "allowed": True}


def test_denial_has_status_message_and_never_a_patch() -> None:
    response = build_response(
        "uid-3", allowed=False, message="ferry.dev/objects: fix it", code=403, patch=[{"op": "remove", "path": "/x"}]
    )["response"]
    assert response["allowed"] is False
    assert response["status"] == {"code": 403, "message": "ferry.dev/objects: fix it"}
    assert "patch" not in response


def test_warnings_are_trimmed_for_http_headers() -> None:
    response = build_response("u", warnings=["x" * 1000] * 20)["response"]
    assert len(response["warnings"]) == 10
    assert all(len(w) <= MAX_WARNING_CHARS and w.isascii() for w in response["warnings"])


@pytest.mark.parametrize("warnings", [(), ("a warning",)])
def test_an_encoded_answer_is_build_response_s_bytes(warnings: tuple[str, ...]) -> None:
    """The answers' envelope is made once; with the uid put in, it is byte for byte `build_response`'s JSON."""
    from webhook.policy.review import encode_answer

    patch = [{"op": "add", "path": "/metadata/annotations", "value": {"k": 'v\u00e9\u2028"'}}]
    uid = "705ab4f5-6393-11e8-b7cc-42010a800002"
    head, tail = encode_answer(denied=False, message="", warnings=warnings, patch=patch)
    expected = build_response(uid, patch=patch, warnings=warnings)
    assert head + json.dumps(uid).encode() + tail == json.dumps(expected, separators=(",", ":")).encode()
