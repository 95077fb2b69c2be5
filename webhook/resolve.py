"""Resolve what a pod asked for into one FetchSpec: pod ∪ SecretProviderClass ∪ namespace ∪ defaults.

Why it exists: a pod's request is spread over its annotations, a
SecretProviderClass, its namespace's annotations and the webhook's defaults.
Merging them is policy, and policy must be pure and testable without a server,
so this module takes plain dicts and a lookup function and returns either a
`ResolvedRequest` or a `Denial` whose message names what to edit. Whether to
inject at all is `webhook.decide`'s question, asked before this one; checks on
the pod's own shape are in `webhook.podshape`; field validation is the spec
model's (`fetcher.spec`). This module only decides which value wins and tells
the spec model what to call each field, so every problem names what to edit:

    region, failover region:  pod annotation > SecretProviderClass > namespace annotation > FERRY_DEFAULT_REGION
    refresh interval:         pod annotation > namespace annotation (floor: FERRY_MIN_REFRESH_INTERVAL)
    secret source:            pod's SPC xor pod's objects (both: denied) > namespace's SPC
    path translation:         pod annotation > SecretProviderClass > "_"
    output formats:           pod annotation > SecretProviderClass parameter outputFormats > namespace annotation
    secretObjects:            the SecretProviderClass's, or the pod's ferry.dev/secret-objects with inline objects

Whatever a SecretProviderClass holds that Ferry does not act on becomes an
admission warning naming it (`fetcher.spec.secret_provider_class_warnings`).

A spec is built once per distinct input (parsing the objects YAML dominates
admission): `webhook.specbuild` builds it, and the cache is `webhook.memo`'s.
"""

from __future__ import annotations

import heapq
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from fetcher.spec import (
    ANNOTATION_CONTAINERS,
    ANNOTATION_FAILOVER_REGION,
    ANNOTATION_INJECT,
    ANNOTATION_MOUNT_PATH,
    ANNOTATION_NOTIFY_SIGNAL,
    ANNOTATION_NOTIFY_URL,
    ANNOTATION_OBJECTS,
    ANNOTATION_OUTPUT_FORMATS,
    ANNOTATION_PATH_TRANSLATION,
    ANNOTATION_PREFIX,
    ANNOTATION_PROVIDER,
    ANNOTATION_REFRESH_INTERVAL,
    ANNOTATION_REGION,
    ANNOTATION_SECRET_OBJECTS,
    ANNOTATION_SECRET_PROVIDER_CLASS,
    ANNOTATION_SIDECAR_UNHEALTHY_AFTER,
    DEFAULT_MOUNT_PATH,
    SPC_FIELD_NAMES,
    FetchSpec,
    join_problems,
    parse_duration,
    quote,
    secret_provider_class_warnings,
)
from fetcher.spec.gcp import workload_identity
from webhook import memo
from webhook.decide import (
    MAX_REPORTED_KEYS,
    NAMESPACE_ANNOTATIONS,
    POD_ANNOTATIONS,
    Denial,
    annotations_of,
    short,
    value_of,
)
from webhook.podshape import (
    check_container_count,
    check_mount_conflicts,
    check_mount_path,
    check_os,
    check_own_volume_mounts,
    check_reserved_names,
    csi_secret_volumes,
    file_owner,
    nested_mount_warnings,
    select_containers,
)
from webhook.settings import Settings
from webhook.specbuild import SpecOptions, inline_spec, spc_spec, trimmed_spc
from webhook.view import SPC_TOO_LARGE

# (namespace, name) -> SecretProviderClass API JSON, or None when it does not exist.
SpcLookup = Callable[[str, str], Mapping[str, Any] | None]

_DNS_SUBDOMAIN_RE = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")


@dataclass(frozen=True)
class ResolvedRequest:
    """A valid request: everything the pod builders need."""

    spec: FetchSpec
    # The spec's canonical JSON (FERRY_SPEC), serialized once per distinct spec.
    spec_json: str
    mount_path: str
    # Names of the app's containers and init containers that get the read-only mount.
    containers: tuple[str, ...]
    # uid Ferry's containers run as (the app's, else FERRY_DEFAULT_USER_ID).
    run_as_user: int
    # Where the objects came from, for logs: "SecretProviderClass ns/name" or the annotation.
    source: str
    warnings: tuple[str, ...] = ()
    # The refresh sidecar's liveness probe fails after this long of refreshes failing in a row (0: no probe).
    sidecar_unhealthy_after: float = 0.0


def resolve_spec(
    pod: Mapping[str, Any],
    namespace_obj: Mapping[str, Any] | None,
    spc_lookup: SpcLookup,
    settings: Settings,
    *,
    namespace: str | None = None,
) -> ResolvedRequest | Denial:
    """Merge pod ∪ SecretProviderClass ∪ namespace ∪ defaults and validate the result.

    Every problem found is reported in one message, so one edit fixes them all.
    """
    ns = namespace or (pod.get("metadata") or {}).get("namespace") or _name_of(namespace_obj) or "default"
    pod_ann = annotations_of(pod)
    ns_ann = annotations_of(namespace_obj)
    # At most MAX_WARNINGS travel anyway (webhook.review); none of the others is even formatted.
    ignored = [key for key in ns_ann if key.startswith(ANNOTATION_PREFIX) and key not in NAMESPACE_ANNOTATIONS]
    warnings: list[str] = [
        f"namespace {ns} annotation {short(key)} is "
        f"{'not a Ferry annotation' if key not in POD_ANNOTATIONS else 'pod-only'} and is ignored"
        for key in heapq.nsmallest(MAX_REPORTED_KEYS, ignored)
    ]
    spec_body: Mapping[str, Any] = pod.get("spec") or {}
    too_many = check_container_count(spec_body)
    if too_many:
        return Denial("too-many-containers", too_many)
    not_linux = check_os(spec_body)
    if not_linux:
        return Denial("not-linux", not_linux)

    pod_spc = value_of(pod_ann, ANNOTATION_SECRET_PROVIDER_CLASS)
    pod_objects = pod_ann.get(ANNOTATION_OBJECTS)
    pod_secret_objects = pod_ann.get(ANNOTATION_SECRET_OBJECTS)
    ns_spc = value_of(ns_ann, ANNOTATION_SECRET_PROVIDER_CLASS)
    if pod_spc and pod_objects is not None:
        return Denial(
            "conflicting-sources",
            f"both {ANNOTATION_SECRET_PROVIDER_CLASS} ({short(pod_spc)}) and {ANNOTATION_OBJECTS} are set; "
            "Ferry never guesses which one you meant: remove one of them",
        )
    if pod_objects is None and not pod_spc and not ns_spc:
        return Denial(
            "no-objects",
            f"{ANNOTATION_INJECT} is true but no secrets are named: set {ANNOTATION_SECRET_PROVIDER_CLASS} to a "
            f"SecretProviderClass in namespace {ns}, or {ANNOTATION_OBJECTS} to ASCP objects YAML",
        )

    if pod_secret_objects is not None and pod_objects is None:
        return Denial(
            "conflicting-sources",
            f"{ANNOTATION_SECRET_OBJECTS} goes with {ANNOTATION_OBJECTS}; with a SecretProviderClass, write the "
            "secretObjects in the class's spec.secretObjects (as for the CSI driver) and remove "
            f"{ANNOTATION_SECRET_OBJECTS}",
        )

    problems: list[str] = []
    mount_path = check_mount_path(pod_ann.get(ANNOTATION_MOUNT_PATH), problems)
    containers = select_containers(spec_body, pod_ann.get(ANNOTATION_CONTAINERS), problems)
    check_reserved_names(spec_body, problems)
    check_own_volume_mounts(spec_body, problems)
    if mount_path and containers:
        check_mount_conflicts(spec_body, containers, mount_path, problems)
        warnings.extend(nested_mount_warnings(spec_body, containers, mount_path))
    warnings.extend(
        f"spec.volumes: {name!r} still uses the Secrets Store CSI driver; remove the CSI volume and its "
        "volumeMounts, Ferry writes the same files"
        for name in csi_secret_volumes(spec_body)[:4]
    )
    notify_signal = value_of(pod_ann, ANNOTATION_NOTIFY_SIGNAL)
    if notify_signal and spec_body.get("shareProcessNamespace") is not True:
        problems.append(
            f"{ANNOTATION_NOTIFY_SIGNAL}: signalling a process needs spec.shareProcessNamespace: true so the sidecar "
            f"can see it; set it, or use {ANNOTATION_NOTIFY_URL} instead"
        )
    notify_url = value_of(pod_ann, ANNOTATION_NOTIFY_URL)
    unhealthy_after = _unhealthy_after(value_of(pod_ann, ANNOTATION_SIDECAR_UNHEALTHY_AFTER), settings, problems)
    uid, gid = file_owner(spec_body, containers)
    run_as_user = uid if uid else settings.default_user_id

    refresh, refresh_label = _first(
        (value_of(pod_ann, ANNOTATION_REFRESH_INTERVAL), ANNOTATION_REFRESH_INTERVAL),
        (value_of(ns_ann, ANNOTATION_REFRESH_INTERVAL), f"namespace {ns} annotation {ANNOTATION_REFRESH_INTERVAL}"),
    )
    gcp_identity, gcp_labels, gcp_warnings = workload_identity(pod_ann, ns_ann, ns, settings.gcp_identity())
    warnings.extend(gcp_warnings)
    options = SpecOptions(
        refresh=refresh,
        file_uid=uid,
        file_gid=gid,
        notify_url=notify_url,
        notify_signal=notify_signal,
        min_refresh_seconds=settings.min_refresh_seconds,
        gcp_identity=gcp_identity,
    )
    labels = {
        **gcp_labels,
        "refreshInterval": refresh_label or ANNOTATION_REFRESH_INTERVAL,
        "notifyUrl": ANNOTATION_NOTIFY_URL,
        "notifySignal": ANNOTATION_NOTIFY_SIGNAL,
        "fileUid": "spec.securityContext.runAsUser",
        "fileGid": "spec.securityContext.fsGroup",
    }
    formats, formats_label = _first(
        (value_of(pod_ann, ANNOTATION_OUTPUT_FORMATS), ANNOTATION_OUTPUT_FORMATS),
        (value_of(ns_ann, ANNOTATION_OUTPUT_FORMATS), f"namespace {ns} annotation {ANNOTATION_OUTPUT_FORMATS}"),
    )
    ns_region = (value_of(ns_ann, ANNOTATION_REGION), f"namespace {ns} annotation {ANNOTATION_REGION}")
    ns_failover = (
        value_of(ns_ann, ANNOTATION_FAILOVER_REGION),
        f"namespace {ns} annotation {ANNOTATION_FAILOVER_REGION}",
    )
    default_region = (settings.default_region, "FERRY_DEFAULT_REGION (a webhook setting)")
    pod_region = (value_of(pod_ann, ANNOTATION_REGION), ANNOTATION_REGION)
    pod_failover = (value_of(pod_ann, ANNOTATION_FAILOVER_REGION), ANNOTATION_FAILOVER_REGION)
    pod_translation = pod_ann.get(ANNOTATION_PATH_TRANSLATION)

    spec: FetchSpec | None = None
    spec_json = ""
    if pod_objects is not None:
        source = ANNOTATION_OBJECTS
        region, region_label = _first(pod_region, ns_region, default_region)
        failover, failover_label = _first(pod_failover, ns_failover)
        names = {
            "objects": f"{ANNOTATION_OBJECTS}: objects",
            "region": region_label or ANNOTATION_REGION,
            "failoverRegion": failover_label or ANNOTATION_FAILOVER_REGION,
            "pathTranslation": ANNOTATION_PATH_TRANSLATION,
            "secretObjects": ANNOTATION_SECRET_OBJECTS,
            "outputFormats": formats_label or ANNOTATION_OUTPUT_FORMATS,
            "provider": ANNOTATION_PROVIDER,
            **labels,
        }
        provider = value_of(pod_ann, ANNOTATION_PROVIDER)
        built = inline_spec(
            pod_objects, region, failover, pod_translation, options, names, pod_secret_objects, formats, provider
        )
        if isinstance(built, memo.BuiltSpec):
            spec, spec_json = built.spec, built.json
        else:
            problems.extend(str(problem) for problem in built)
    else:
        spc_name, via = (
            (pod_spc, ANNOTATION_SECRET_PROVIDER_CLASS)
            if pod_spc
            else (
                ns_spc,
                f"namespace {ns} annotation {ANNOTATION_SECRET_PROVIDER_CLASS}",
            )
        )
        assert spc_name is not None
        source = f"SecretProviderClass {ns}/{spc_name}"
        manifest = spc_lookup(ns, spc_name) if _DNS_SUBDOMAIN_RE.match(spc_name) else None
        if manifest is None:
            problems.append(
                f"{via}: SecretProviderClass {quote(spc_name)} was not found in namespace {ns}; create it there "
                "(Ferry reads it from the pod's own namespace) or correct the name"
                if _DNS_SUBDOMAIN_RE.match(spc_name)
                else f"{via}: {quote(spc_name)} is not a valid SecretProviderClass name"
            )
            return Denial("missing-secret-provider-class", join_problems(problems))
        too_large = manifest.get(SPC_TOO_LARGE)
        if isinstance(too_large, Mapping):
            return Denial("secret-provider-class-too-large", _too_large_message(via, source, too_large))
        params = _spc_parameters(manifest)
        spc_region = (value_of(params, "region"), source)
        spc_failover = (value_of(params, "failoverRegion"), source)
        region, region_label = _first(pod_region, spc_region, ns_region, default_region)
        failover, failover_label = _first(pod_failover, spc_failover, ns_failover)
        overrides: dict[str, str | None] = {"region": region, "failoverRegion": failover}
        # Each field named once, as the user must edit it: inside the class, or where its value came from.
        names = {field: f"{source}: {name}" for field, name in SPC_FIELD_NAMES.items()} | labels
        if region_label != source:
            names["region"] = region_label or ANNOTATION_REGION
        if failover_label != source:
            names["failoverRegion"] = failover_label or ANNOTATION_FAILOVER_REGION
        if pod_translation is not None:
            overrides["pathTranslation"] = pod_translation
            names["pathTranslation"] = ANNOTATION_PATH_TRANSLATION
        pod_formats = value_of(pod_ann, ANNOTATION_OUTPUT_FORMATS)
        if pod_formats or (formats and not value_of(params, "outputFormats")):
            # The pod's annotation wins over the class's parameter, which wins over the namespace's.
            overrides["outputFormats"] = formats
            names["outputFormats"] = formats_label or ANNOTATION_OUTPUT_FORMATS
        warnings.extend(secret_provider_class_warnings(manifest, f"{source}: "))
        built = spc_spec(trimmed_spc(manifest, ns, spc_name, overrides), options, names)
        if isinstance(built, memo.BuiltSpec):
            spec, spec_json = built.spec, built.json
        else:
            problems.extend(str(problem) for problem in built)

    if problems or spec is None:
        return Denial("invalid-spec", join_problems(problems))
    if (notify_url or notify_signal) and not spec.refresh_seconds:
        warnings.append(
            f"{ANNOTATION_NOTIFY_URL if notify_url else ANNOTATION_NOTIFY_SIGNAL} has no effect without "
            f"{ANNOTATION_REFRESH_INTERVAL}: files are fetched once, before the app starts"
        )
    if value_of(pod_ann, ANNOTATION_SIDECAR_UNHEALTHY_AFTER) and not spec.refresh_seconds:
        warnings.append(
            f"{ANNOTATION_SIDECAR_UNHEALTHY_AFTER} has no effect without {ANNOTATION_REFRESH_INTERVAL}: "
            "there is no refresh sidecar to probe"
        )
    return ResolvedRequest(
        spec=spec,
        spec_json=spec_json,
        mount_path=mount_path or DEFAULT_MOUNT_PATH,
        containers=containers,
        run_as_user=run_as_user,
        source=source,
        warnings=tuple(warnings),
        sidecar_unhealthy_after=unhealthy_after,
    )


def _unhealthy_after(value: str | None, settings: Settings, problems: list[str]) -> float:
    """The annotation in seconds (or the webhook's default): 0, or from the refresh floor to 7 days."""
    if value is None:
        return settings.sidecar_unhealthy_after_seconds
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        problems.append(f"{ANNOTATION_SIDECAR_UNHEALTHY_AFTER}: {exc}, or 0 for no liveness probe")
        return 0.0
    floor = settings.min_refresh_seconds
    if seconds and not floor <= seconds <= 7 * 24 * 3600:
        problems.append(
            f"{ANNOTATION_SIDECAR_UNHEALTHY_AFTER}: {int(seconds)}s is outside {int(floor)}s..7 days; "
            "use a few refresh intervals (for example 10m), or 0 for no liveness probe"
        )
    return seconds


def _too_large_message(via: str, source: str, too_large: Mapping[str, Any]) -> str:
    if too_large.get("cacheFull"):
        return (
            f"{via}: {source} could not be read: the SecretProviderClasses in this cluster exceed what Ferry keeps "
            "in memory; delete unused classes or shorten their objects, then create the pod again"
        )
    return (
        f"{via}: {source} is {too_large.get('bytes')} bytes in spec.provider, spec.parameters and "
        f"spec.secretObjects; Ferry reads classes of at most {too_large.get('limit')} bytes. Shorten it, or split "
        "it into several classes"
    )


def _first(*candidates: tuple[str | None, str]) -> tuple[str | None, str | None]:
    """The first (value, label) whose value is set."""
    for value, label in candidates:
        if value:
            return value, label
    return None, None


def _name_of(obj: Mapping[str, Any] | None) -> str | None:
    if not obj:
        return None
    name = (obj.get("metadata") or {}).get("name")
    return name if isinstance(name, str) else None


def _spc_parameters(manifest: Mapping[str, Any]) -> Mapping[str, Any]:
    spec = manifest.get("spec")
    params = spec.get("parameters") if isinstance(spec, Mapping) else None
    return params if isinstance(params, Mapping) else {}
