"""AdmissionReview v1 on the wire: the types, the parser, the response builder and the patch's encoding.

TypedDicts describe the API server's small, stable format without the kubernetes client's generated models (slow
to import, lossy for unknown fields), and keep the one place that trusts or distrusts the request body here. Two
error channels, as in kopf: a body that is not an AdmissionReview raises `MalformedReview` (HTTP 400); a
well-formed request for an invalid injection becomes `allowed: false` via `build_response`.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Sequence
from typing import Any, Literal, NotRequired, TypedDict

from fetcher.contract import bounded, quote

API_VERSION = "admission.k8s.io/v1"
KIND = "AdmissionReview"

Operation = Literal["CREATE", "UPDATE", "DELETE", "CONNECT"]
_OPERATIONS = ("CREATE", "UPDATE", "DELETE", "CONNECT")
# The API server truncates warnings over 256 characters; they travel as HTTP Warning headers.
MAX_WARNING_CHARS = 256
MAX_WARNINGS = 10
# The API server's request uid is a UUID (36 characters).
MAX_UID_CHARS = 128
_DNS_LABEL_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


class GroupVersionKind(TypedDict):
    group: str
    version: str
    kind: str


class GroupVersionResource(TypedDict):
    group: str
    version: str
    resource: str


class UserInfo(TypedDict, total=False):
    username: str
    uid: str
    groups: list[str]
    extra: dict[str, list[str]]


class AdmissionRequest(TypedDict):
    uid: str
    kind: GroupVersionKind
    resource: GroupVersionResource
    operation: Operation
    namespace: NotRequired[str]
    name: NotRequired[str]
    subResource: NotRequired[str]
    requestKind: NotRequired[GroupVersionKind]
    requestResource: NotRequired[GroupVersionResource]
    userInfo: NotRequired[UserInfo]
    object: NotRequired[dict[str, Any] | None]
    oldObject: NotRequired[dict[str, Any] | None]
    dryRun: NotRequired[bool]
    options: NotRequired[dict[str, Any] | None]


class Status(TypedDict, total=False):
    code: int
    message: str
    reason: str


class AdmissionResponse(TypedDict):
    uid: str
    allowed: bool
    status: NotRequired[Status]
    patch: NotRequired[str]
    patchType: NotRequired[Literal["JSONPatch"]]
    warnings: NotRequired[list[str]]


class AdmissionReviewResponse(TypedDict):
    apiVersion: str
    kind: str
    response: AdmissionResponse


class MalformedReview(ValueError):
    """The body is not an AdmissionReview v1 request; answered with HTTP 400."""


def parse_review(body: bytes | str | Any) -> AdmissionRequest:
    """Check the envelope and return its `request`.

    Accepts raw bytes/str (decoded as JSON) or an already decoded value. Only
    what Ferry relies on is checked; unknown fields are kept, as the API server
    adds fields over time.
    """
    if isinstance(body, bytes | str):
        try:
            # UTF-8, strictly: json.loads of bytes would also take UTF-16/32 and raw (unescaped) surrogates, which
            # the API server never sends and `_refuse_lone_surrogates` (a search for escapes) does not see.
            review = json.loads(body.decode("utf-8") if isinstance(body, bytes) else body)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise MalformedReview(f"the body is not JSON: {str(exc)[:200]}") from None
        _refuse_lone_surrogates(body, review)
    else:
        review = body
    if not isinstance(review, dict):
        raise MalformedReview("the body must be a JSON object (an AdmissionReview)")
    if review.get("kind") != KIND or review.get("apiVersion") != API_VERSION:
        raise MalformedReview(
            f"expected kind {KIND} in apiVersion {API_VERSION}, got kind {quote(review.get('kind'))} "
            f"in {quote(review.get('apiVersion'))}; list only v1 in the webhook's admissionReviewVersions"
        )
    request = review.get("request")
    if not isinstance(request, dict):
        raise MalformedReview("request is missing or not an object")
    uid = request.get("uid")
    if not isinstance(uid, str) or not uid:
        raise MalformedReview("request.uid is missing or not a string")
    if len(uid) > MAX_UID_CHARS:
        # The uid is echoed in the answer and the log line: a long one would amplify both.
        raise MalformedReview(f"request.uid is {len(uid)} characters; the API server sends a UUID")
    for key in ("kind", "resource"):
        value = request.get(key)
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise MalformedReview(f"request.{key} is missing or not a group/version object")
    if request.get("operation") not in _OPERATIONS:
        raise MalformedReview(
            f"request.operation {quote(request.get('operation'))} is not one of {', '.join(_OPERATIONS)}"
        )
    for key in ("object", "oldObject", "options"):
        if request.get(key) is not None and not isinstance(request.get(key), dict):
            raise MalformedReview(f"request.{key} must be an object or null")
    for key in ("namespace", "name", "subResource"):
        if request.get(key) is not None and not isinstance(request.get(key), str):
            raise MalformedReview(f"request.{key} must be a string")
    namespace = request.get("namespace")
    if namespace and not _DNS_LABEL_RE.match(namespace):
        # Logged and counted per namespace: only a real namespace name goes that far.
        raise MalformedReview(f"request.namespace {quote(namespace)} is not a namespace name")
    if request.get("dryRun") is not None and not isinstance(request.get("dryRun"), bool):
        raise MalformedReview("request.dryRun must be a boolean")
    return request  # type: ignore[return-value]  # checked above


# A JSON escape of a UTF-16 surrogate (\\ud800-\\udfff); a pair of them is one character, a lone one is none.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE_ESCAPE_BYTES = re.compile(rb"\\u[dD][89a-fA-F]")


def _refuse_lone_surrogates(body: bytes | str, review: Any) -> None:
    """Refuse a body whose strings hold a lone surrogate: JSON can escape one, but it is not text.

    Python keeps it in the decoded str and fails later, wherever the text is first encoded (a spec, a
    log line, the answer). The API server never sends one (Go writes U+FFFD instead), so it is a
    malformed review. The search runs over the raw body and is a no-op without any surrogate escape.
    """
    if isinstance(body, bytes):
        # A body without a backslash has no escape at all: a one-byte search, at memchr's speed. Else the
        # expression (3 us on a 6 KB pod with escaped quotes, where a search for the two bytes `\u` took 7).
        found = b"\\" in body and _SURROGATE_ESCAPE_BYTES.search(body) is not None
    else:
        found = _SURROGATE_ESCAPE.search(body) is not None
    if not found:
        return
    try:
        json.dumps(review, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise MalformedReview(
            "a string in the body holds a lone UTF-16 surrogate escape (\\ud800 to \\udfff), which is not "
            "valid Unicode; send the text as UTF-8"
        ) from None


def build_response(
    uid: str,
    *,
    patch: Sequence[dict[str, Any]] | None = None,
    allowed: bool = True,
    message: str | None = None,
    code: int | None = None,
    reason: str | None = None,
    warnings: Sequence[str] = (),
) -> AdmissionReviewResponse:
    """An AdmissionReview answer; a non-empty `patch` is a JSONPatch op list."""
    response: AdmissionResponse = {"uid": uid, "allowed": allowed}
    if not allowed:
        status: Status = {"code": code or 403, "message": bounded(message or "denied by Ferry")}
        if reason:
            status["reason"] = reason
        response["status"] = status
    elif message:
        response["status"] = {"code": code or 200, "message": bounded(message)}
    if patch and allowed:
        response["patchType"] = "JSONPatch"
        response["patch"] = base64.b64encode(json.dumps(list(patch), separators=(",", ":")).encode()).decode()
    if warnings:
        response["warnings"] = [_trim(text) for text in list(warnings)[:MAX_WARNINGS]]
    return {"apiVersion": API_VERSION, "kind": KIND, "response": response}


def _trim(text: str) -> str:
    return text if len(text) <= MAX_WARNING_CHARS else text[: MAX_WARNING_CHARS - 3] + "..."


def encode_answer(
    *, denied: bool, message: str, warnings: Sequence[str], patch: Sequence[dict[str, Any]]
) -> tuple[bytes, bytes]:
    """The AdmissionReview answer as JSON bytes, split where the uid goes; the patch is encoded once."""
    if not denied and not warnings and patch:  # most answers: `build_response`'s bytes but for the patch
        return _INJECTED_HEAD, _INJECTED_PATCH + base64.b64encode(encode_patch(patch).encode()) + _INJECTED_END
    if denied:
        response = build_response("", allowed=False, code=403, reason="Forbidden", message=message)
    else:
        response = build_response("", warnings=warnings)
    encoded = json.dumps(response, separators=(",", ":")).encode()
    # "uid" is the first key of "response", and any other `"uid":""` in a message would be escaped.
    split = encoded.index(_EMPTY_UID) + len(_EMPTY_UID) - 2
    if not denied and patch:
        # Its base64 needs no JSON escaping, so it goes in as bytes, after "allowed".
        patch_b64 = base64.b64encode(encode_patch(patch).encode())
        allowed = encoded.index(_ALLOWED, split) + len(_ALLOWED)
        encoded = encoded[:allowed] + b',"patchType":"JSONPatch","patch":"' + patch_b64 + b'"' + encoded[allowed:]
    return encoded[:split], encoded[split + 2 :]


_EMPTY_UID = b'"uid":""'
_ALLOWED = b'"allowed":true'
# An allowed answer with a patch and no warnings: before the uid; between the uid and the patch; after the patch.
_INJECTED_HEAD = f'{{"apiVersion":"{API_VERSION}","kind":"{KIND}","response":{{"uid":'.encode()
_INJECTED_PATCH = b',"allowed":true,"patchType":"JSONPatch","patch":"'
_INJECTED_END = b'"}}'


def encode_json(value: Any) -> str:
    """`value` as compact JSON, exactly as the answer's patch writes it."""
    return _ENCODE(value)


_ENCODE = json.JSONEncoder(separators=(",", ":")).encode


class EncodedOps(list[dict[str, Any]]):
    """JSONPatch ops, each with its value's JSON text when the stage that recorded it had that text already.

    Ferry's containers and volumes are encoded once per set of parts (`memo.cached_parts`), so the patch
    of a pod is their texts joined with the few small ops around them. The texts hold for the ops as
    recorded: the list is never changed after the mutate stage returns it.
    """

    def __init__(self) -> None:
        super().__init__()
        self.texts: list[str | None] = []

    def record(self, op: str, path: str, value: Any, text: str | None = None) -> None:
        self.append({"op": op, "path": path, "value": value})
        self.texts.append(text)


def encode_patch(patch: Sequence[dict[str, Any]]) -> str:
    """The JSONPatch as compact JSON: the same text as `encode_json(list(patch))`, reusing the texts known."""
    if not isinstance(patch, EncodedOps) or len(patch.texts) != len(patch):
        return encode_json(list(patch))
    quoted = _QUOTE
    return (
        "["
        + ",".join(
            f'{{"op":{quoted(op["op"])},"path":{quoted(op["path"])},"value":'
            f"{encode_json(op['value']) if text is None else text}}}"
            for op, text in zip(patch, patch.texts, strict=True)
        )
        + "]"
    )


# A str as a JSON string, as json.dumps writes it (ASCII, escaped).
_QUOTE = json.encoder.encode_basestring_ascii
