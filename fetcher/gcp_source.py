"""Google Cloud Secret Manager (and Parameter Manager) behind the same `Source` protocol as the AWS sources.

The only module that knows Secret Manager's REST replies. Why a refresh checks with the free `versions.get`:
docs/gcp-api-economics.md; what it reads and its errors: docs/gke.md ("What the fetcher does").
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import partial
from typing import Any

from fetcher.contract import FetchSpec, ObjectSpec
from fetcher.contract.gcp import is_pinned, parse_resource_name
from fetcher.errors import FetchError
from fetcher.fanout import run_units
from fetcher.gcp import GcpClients, Reply, TransportError
from fetcher.gcp_extract import extracted
from fetcher.logs import log
from fetcher.values import FetchedValue, FetchResult, IndexedObject, VersionProbe

DEFAULT_MAX_WORKERS = 10
MAX_GOOGLE_MESSAGE_CHARS = 300
_HINTS = {
    "PERMISSION_DENIED": (
        "the pod's identity may not read it, or it does not exist (Google answers 403 for both): check the name, "
        "and grant roles/secretmanager.secretAccessor on it to the pod's Workload Identity principal or to the "
        "Google service account it impersonates"
    ),
    "NOT_FOUND": "no such secret, version or alias: check the resourceName",
    "FAILED_PRECONDITION": (
        "the version is disabled or destroyed (for latest: the newest version is); enable it, add a new "
        "version, or pin an enabled version number"
    ),
    "UNAUTHENTICATED": "the access token was refused; check the cluster's Workload Identity setup (docs/gke.md)",
    "INVALID_ARGUMENT": "the API refused the name; check the project, location and version in resourceName",
    "RESOURCE_EXHAUSTED": (
        "the project's Secret Manager quota is exhausted; refresh less often (docs/gcp-api-economics.md)"
    ),
}


class GcpRejectedError(FetchError):
    """Google answered, and the answer is no (4xx)."""


class GcpUnavailableError(FetchError):
    """Google could not answer (429, 5xx, timeout, no connection) after the retries."""


_quota_fallback_warned: set[str] = set()


def fetch_all(
    spec: FetchSpec,
    clients: GcpClients,
    indices: Iterable[int] | None = None,
    *,
    max_workers: int = DEFAULT_MAX_WORKERS,
) -> FetchResult:
    """Every object of the spec (or only `indices`); raise ObjectErrors naming every failure."""
    wanted = None if indices is None else set(indices)
    chosen = [(index, obj) for index, obj in enumerate(spec.objects) if wanted is None or index in wanted]
    source = SecretManagerSource(clients)
    results: FetchResult = {}
    for part in run_units(source.fetch_units(chosen), max_workers):
        results.update(part)
    return results


def check_versions(
    spec: FetchSpec, clients: GcpClients, *, max_workers: int = DEFAULT_MAX_WORKERS
) -> list[VersionProbe]:
    """versions.get for every secret that follows latest or an alias; nothing for a numbered version."""
    units = SecretManagerSource(clients).probe_units(list(enumerate(spec.objects)))
    return [probe for part in run_units(units, max_workers) for probe in part]


class SecretManagerSource:
    """versions.access per secret; versions.get as the version check; :render for Parameter Manager."""

    def __init__(self, clients: GcpClients) -> None:
        self._clients = clients

    def fetch_units(self, items: Sequence[IndexedObject]) -> list[Callable[[], FetchResult]]:
        if items:
            self._clients.access_token()  # once, before the pool fans out: an identity failure is reported once
        return [partial(self._fetch_one, index, obj) for index, obj in items]

    def probe_units(self, items: Sequence[IndexedObject]) -> list[Callable[[], list[VersionProbe]]]:
        moving = [(index, obj) for index, obj in items if not is_pinned(obj)]
        if moving:
            self._clients.access_token()
        return [partial(self._probe_one, index, obj) for index, obj in moving]

    def _fetch_one(self, index: int, obj: ObjectSpec) -> FetchResult:
        if obj.object_type == "gcpparameter":
            return {index: self._render_parameter(obj)}
        value = self._access(obj.object_name)
        return {index: extracted(obj, value)}

    def _probe_one(self, index: int, obj: ObjectSpec) -> list[VersionProbe]:
        location = _location(obj.object_name)
        if obj.object_type == "gcpparameter":
            value = self._render_parameter(obj)
            return [VersionProbe(index=index, region=location, version=value.version, value=value)]
        try:
            reply = self._get(obj.object_name, "GetSecretVersion", "")
        except GcpUnavailableError as exc:
            if not exc.code.startswith("RESOURCE_EXHAUSTED"):
                raise
            if obj.object_name not in _quota_fallback_warned:
                _quota_fallback_warned.add(obj.object_name)
                log.warning("versions.get quota exhausted; checking with an access instead", object=obj.object_name)
            value = extracted(obj, self._access(obj.object_name))
            return [VersionProbe(index=index, region=location, version=value.version, value=value)]
        enabled = reply.body.get("state") == "ENABLED"
        version = _version_number(reply.body.get("name")) if enabled else None
        log.debug("checked secret version", object=obj.object_name, version=version, location=location)
        return [VersionProbe(index=index, region=location, version=version)]

    def _access(self, name: str) -> FetchedValue:
        reply = self._get(name, "AccessSecretVersion", ":access")
        payload = reply.body.get("payload")
        data = _payload_bytes(payload, name, "AccessSecretVersion", _location(name))
        expected = payload.get("dataCrc32c") if isinstance(payload, Mapping) else None
        if expected is not None and str(expected) != str(crc32c(data)):
            raise _rejected(name, "DATA_LOSS", "AccessSecretVersion", "the payload does not match its dataCrc32c")
        version = _version_number(reply.body.get("name")) or ""
        log.info("fetched secret", object=name, version=version, location=_location(name))
        return FetchedValue(data, version, _location(name))

    def _render_parameter(self, obj: ObjectSpec) -> FetchedValue:
        name = obj.object_name
        reply = self._get(name, "RenderParameterVersion", ":render")
        rendered = reply.body.get("renderedPayload")
        data = _payload_bytes({"data": rendered}, name, "RenderParameterVersion", _location(name))
        # References inside a parameter can move, so its version is what it renders to.
        version = f"{reply.body.get('parameterVersion') or name}#{crc32c(data)}"
        return extracted(obj, FetchedValue(data, version, _location(name)))

    def _get(self, name: str, operation: str, suffix: str) -> Reply:
        host, location = _host(name), _location(name)
        self._clients.calls.record(host.split(".", 1)[0], operation, location)
        token = self._clients.access_token()
        try:
            reply = self._clients.https.request(
                "GET", host, f"/v1/{name}{suffix}", {"Authorization": f"Bearer {token}"}
            )
        except TransportError as exc:
            raise GcpUnavailableError(
                object_name=name,
                region=location,
                code="UNAVAILABLE",
                operation=operation,
                hint=(
                    f"could not reach {host}; check the pod's egress (Private Google Access, NAT, proxy) and DNS"
                    if exc.retryable
                    else f"{host}'s answer was refused (TLS not trusted, or a reply over the size bound): check any "
                    "proxy between the pod and Google, and SSL_CERT_FILE if one inspects TLS"
                ),
                detail=f"{type(exc).__name__}: {exc}"[:120],
                kind="GCP secret",
            ) from None
        if reply.status == 200:
            return reply
        if reply.status == 401:
            self._clients.forget_token(token)
        status, message = _google_error(reply)
        code = f"{status} (HTTP {reply.status})"
        error = GcpUnavailableError if reply.status in (429, 500, 502, 503, 504) else GcpRejectedError
        raise error(
            object_name=name,
            region=location,
            code=code,
            operation=operation,
            hint=_HINTS.get(status, "see the Google message"),
            detail=message,
            kind="GCP parameter" if "/parameters/" in name else "GCP secret",
        )


def _payload_bytes(payload: Any, name: str, operation: str, location: str) -> bytes:
    data = payload.get("data") if isinstance(payload, Mapping) else None
    if not isinstance(data, str):
        raise _rejected(name, "NO_PAYLOAD", operation, "the reply carries no payload data")
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise _rejected(name, "BAD_PAYLOAD", operation, "the payload is not base64") from None


def _rejected(name: str, code: str, operation: str, detail: str) -> GcpRejectedError:
    return GcpRejectedError(
        object_name=name,
        region=_location(name),
        code=code,
        operation=operation,
        hint="the reply was damaged on its way; retry, and check any proxy between the pod and Google",
        detail=detail,
        kind="GCP secret",
    )


def _google_error(reply: Reply) -> tuple[str, str]:
    """(gRPC status name, Google's message, cleaned and bounded) of an error reply."""
    error = reply.body.get("error")
    status = error.get("status") if isinstance(error, Mapping) else None
    message = error.get("message") if isinstance(error, Mapping) else None
    status = status if isinstance(status, str) and status.replace("_", "").isalpha() else f"HTTP_{reply.status}"
    text = "".join(ch if ch.isprintable() else " " for ch in message) if isinstance(message, str) else ""
    if len(text) > MAX_GOOGLE_MESSAGE_CHARS:
        text = text[:MAX_GOOGLE_MESSAGE_CHARS] + "..."
    return status[:40], text


def _location(name: str) -> str:
    parsed = parse_resource_name(name)
    return parsed[2] if parsed else "global"


def _host(name: str) -> str:
    """The global or regional endpoint (secretmanager.LOCATION.rep.googleapis.com) of a resource."""
    parsed = parse_resource_name(name)
    service = "parametermanager" if parsed and parsed[0] == "gcpparameter" else "secretmanager"
    location = parsed[2] if parsed else "global"
    return f"{service}.googleapis.com" if location == "global" else f"{service}.{location}.rep.googleapis.com"


def _version_number(name: Any) -> str | None:
    """The version number from a version's full name (projects/NUMBER/secrets/S/versions/7 -> "7")."""
    if not isinstance(name, str):
        return None
    last = name.rsplit("/", 1)[-1]
    return last if last.isdigit() and len(last) <= 20 else None


def _crc32c_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_CRC32C_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC32C (Castagnoli), as Secret Manager's dataCrc32c: pure Python, a few ms for the 64 KiB maximum."""
    crc = 0xFFFFFFFF
    table = _CRC32C_TABLE
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF
