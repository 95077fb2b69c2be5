"""The spec's JSON form in the ``FERRY_SPEC`` env var: written by the webhook, read by the fetcher.

The pod spec is the only channel from admission to the init container. The JSON is canonical (the same spec
gives the same bytes, which keeps the memoized patch stable), and reading it runs every check again: a
hand-edited value is user input, and each problem names its JSON field (``FERRY_SPEC.refreshSeconds``), so
the CLI exits 2 with a message instead of an internal error.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from fetcher.contract.endpoints import ANY_ENDPOINT, EndpointRequest, endpoints_to_wire
from fetcher.contract.model import (
    DEFAULT_FILE_PERMISSION,
    DEFAULT_PATH_TRANSLATION,
    PROVIDER_GCP,
    SPEC_ENV_VAR,
    SPEC_VERSION,
    FetchSpec,
    ObjectSpec,
)
from fetcher.contract.object_options import object_options_to_wire
from fetcher.contract.problems import Problem, SpecError, kind_of, quote
from fetcher.contract.secret_objects import secret_object_to_wire
from fetcher.contract.validate import build_spec

# What each of build_spec's logical fields is called in the JSON, for messages.
_WIRE_FIELDS = {
    "objects": f"{SPEC_ENV_VAR}.objects",
    "region": f"{SPEC_ENV_VAR}.region",
    "failoverRegion": f"{SPEC_ENV_VAR}.failoverRegion",
    "pathTranslation": f"{SPEC_ENV_VAR}.pathTranslation",
    "refreshInterval": f"{SPEC_ENV_VAR}.refreshSeconds",
    "notifyUrl": f"{SPEC_ENV_VAR}.notify.url",
    "notifySignal": f"{SPEC_ENV_VAR}.notify",
    "fileUid": f"{SPEC_ENV_VAR}.fileUid",
    "fileGid": f"{SPEC_ENV_VAR}.fileGid",
    "secretObjects": f"{SPEC_ENV_VAR}.secretObjects",
    "outputFormats": f"{SPEC_ENV_VAR}.outputFormats",
    "endpoints": f"{SPEC_ENV_VAR}.endpoints",
    "provider": f"{SPEC_ENV_VAR}.provider",
    "workloadPool": f"{SPEC_ENV_VAR}.gcp.workloadPool",
    "identityProvider": f"{SPEC_ENV_VAR}.gcp.identityProvider",
    "serviceAccount": f"{SPEC_ENV_VAR}.gcp.serviceAccount",
}
_NOTIFY_KEYS = ("url", "signal", "process")


def spec_to_json(spec: FetchSpec) -> str:
    """Canonical JSON: sorted keys, no spaces, defaults left out."""
    return json.dumps(_spec_to_wire(spec), sort_keys=True, separators=(",", ":"))


def spec_from_json(text: str) -> FetchSpec:
    """Parse and check the env var; every problem is a SpecError naming the JSON field."""
    try:
        wire = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SpecError([Problem(SPEC_ENV_VAR, f"is not valid JSON ({exc.msg} at position {exc.pos})")]) from None
    if not isinstance(wire, dict):
        raise SpecError([Problem(SPEC_ENV_VAR, "must be a JSON object")])
    if wire.get("v") != SPEC_VERSION:
        raise SpecError(
            [
                Problem(
                    f"{SPEC_ENV_VAR}.v",
                    f"spec version {quote(wire.get('v'))} is not {SPEC_VERSION}; "
                    "use a fetcher image of the same release as the webhook",
                )
            ]
        )
    problems: list[Problem] = []
    refresh = wire.get("refreshSeconds", 0)
    if not isinstance(refresh, int | float) or isinstance(refresh, bool):
        problems.append(
            Problem(_WIRE_FIELDS["refreshInterval"], f"must be a number of seconds, got {kind_of(refresh)}")
        )
        refresh = 0
    notify_url, notify_signal = _notify_fields(wire.get("notify"), problems)
    translation = wire.get("pathTranslation", DEFAULT_PATH_TRANSLATION)
    try:
        spec = build_spec(
            objects=wire.get("objects"),
            region=wire.get("region"),
            failover_region=wire.get("failoverRegion"),
            path_translation="False" if translation is None else translation,
            refresh_interval=refresh,
            file_uid=wire.get("fileUid"),
            file_gid=wire.get("fileGid"),
            notify_url=notify_url,
            notify_signal=notify_signal,
            min_refresh_seconds=0.0,
            field_names=_WIRE_FIELDS,
            secret_objects=wire.get("secretObjects"),
            output_formats=wire.get("outputFormats"),
            # The webhook applied its allow-list at admission; here only the shape is checked again.
            endpoints=EndpointRequest(wire.get("endpoints"), ANY_ENDPOINT),
            provider=wire.get("provider"),
            gcp_identity=wire.get("gcp") if isinstance(wire.get("gcp"), Mapping) else None,
        )
    except SpecError as exc:
        raise SpecError([*problems, *exc.problems]) from None
    if problems:
        raise SpecError(problems)
    return spec


def _notify_fields(raw: Any, problems: list[Problem]) -> tuple[str | None, str | None]:
    """(url, "SIGNAL:process") from the wire's notify object, for build_spec to check like annotations."""
    where = f"{SPEC_ENV_VAR}.notify"
    if raw is None or raw == {}:
        return None, None
    if not isinstance(raw, Mapping):
        problems.append(Problem(where, f"must be a JSON object with url, signal and process, got {kind_of(raw)}"))
        return None, None
    for key, value in raw.items():
        if key not in _NOTIFY_KEYS:
            problems.append(
                Problem(f"{where}.{quote(key, 40)}", f"is not a known key; known keys: {', '.join(_NOTIFY_KEYS)}")
            )
        elif value is not None and not isinstance(value, str):
            problems.append(Problem(f"{where}.{key}", f"must be a string, got {kind_of(value)}"))
    url, signal, process = (raw.get(key) if isinstance(raw.get(key), str) else None for key in _NOTIFY_KEYS)
    if signal and not process:
        problems.append(Problem(f"{where}.process", "is missing; a signal needs the name of the process to send it to"))
        return url, None
    if process and not signal:
        problems.append(Problem(f"{where}.signal", "is missing; name the signal to send to the process"))
        return url, None
    return url, (f"{signal}:{process}" if signal else None)


def _object_to_wire(obj: ObjectSpec) -> dict[str, Any]:
    wire: dict[str, Any] = {"objectName": obj.object_name, "objectType": obj.object_type}
    if obj.object_alias:
        wire["objectAlias"] = obj.object_alias
    if obj.object_version:
        wire["objectVersion"] = obj.object_version
    if obj.object_version_label:
        wire["objectVersionLabel"] = obj.object_version_label
    if obj.file_permission != DEFAULT_FILE_PERMISSION:
        wire["filePermission"] = f"{obj.file_permission:04o}"
    if obj.jmes_path:
        wire["jmesPath"] = [
            {"path": e.path, "objectAlias": e.object_alias}
            | ({"filePermission": f"{e.file_permission:04o}"} if e.file_permission is not None else {})
            for e in obj.jmes_path
        ]
    wire.update(object_options_to_wire(obj.role, obj.expand_json, obj.discover))
    if obj.failover_object:
        fo = obj.failover_object
        wire["failoverObject"] = {"objectName": fo.object_name} | {
            k: v
            for k, v in (
                ("objectVersion", fo.object_version),
                ("objectVersionLabel", fo.object_version_label),
            )
            if v
        }
    return wire


def _spec_to_wire(spec: FetchSpec) -> dict[str, Any]:
    wire: dict[str, Any] = {
        "v": SPEC_VERSION,
        "objects": [_object_to_wire(obj) for obj in spec.objects],
        "region": spec.region,
        "pathTranslation": spec.path_translation,
    }
    if spec.provider == PROVIDER_GCP:
        from fetcher.contract.gcp import identity_to_wire, secret_to_wire

        wire.update(provider=PROVIDER_GCP, objects=[secret_to_wire(obj) for obj in spec.objects])
        del wire["region"], wire["pathTranslation"]  # a GCP name carries its location; paths are not translated
        if spec.gcp is not None:
            wire["gcp"] = identity_to_wire(spec.gcp)
    if spec.failover_region:
        wire["failoverRegion"] = spec.failover_region
    if spec.refresh_seconds:
        wire["refreshSeconds"] = spec.refresh_seconds
    if spec.file_uid is not None:
        wire["fileUid"] = spec.file_uid
    if spec.file_gid is not None:
        wire["fileGid"] = spec.file_gid
    notify = {
        k: v
        for k, v in (
            ("url", spec.notify.url),
            ("signal", spec.notify.signal),
            ("process", spec.notify.process),
        )
        if v
    }
    if notify:
        wire["notify"] = notify
    if spec.secret_objects:
        wire["secretObjects"] = [secret_object_to_wire(obj) for obj in spec.secret_objects]
    if spec.output_formats:
        wire["outputFormats"] = dict(spec.output_formats)
    wire.update(endpoints_to_wire(spec.endpoints))
    return wire
