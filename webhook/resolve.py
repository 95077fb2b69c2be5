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

A spec is built once per distinct input (parsing the objects YAML dominates
admission); the cache is `webhook.memo`'s.
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
    ANNOTATION_PATH_TRANSLATION,
    ANNOTATION_PREFIX,
    ANNOTATION_REFRESH_INTERVAL,
    ANNOTATION_REGION,
    ANNOTATION_SECRET_PROVIDER_CLASS,
    DEFAULT_MOUNT_PATH,
    SPC_FIELD_NAMES,
    FetchSpec,
    SpecError,
    build_spec,
    join_problems,
    quote,
    spec_from_secret_provider_class,
)
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
    check_own_volume_mounts,
    check_reserved_names,
    file_owner,
    select_containers,
)
from webhook.settings import Settings
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

    pod_spc = value_of(pod_ann, ANNOTATION_SECRET_PROVIDER_CLASS)
    pod_objects = pod_ann.get(ANNOTATION_OBJECTS)
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

    problems: list[str] = []
    mount_path = check_mount_path(pod_ann.get(ANNOTATION_MOUNT_PATH), problems)
    containers = select_containers(spec_body, pod_ann.get(ANNOTATION_CONTAINERS), problems)
    check_reserved_names(spec_body, problems)
    check_own_volume_mounts(spec_body, problems)
    if mount_path and containers:
        check_mount_conflicts(spec_body, containers, mount_path, problems)
    notify_signal = value_of(pod_ann, ANNOTATION_NOTIFY_SIGNAL)
    if notify_signal and spec_body.get("shareProcessNamespace") is not True:
        problems.append(
            f"{ANNOTATION_NOTIFY_SIGNAL}: signalling a process needs spec.shareProcessNamespace: true so the sidecar "
            f"can see it; set it, or use {ANNOTATION_NOTIFY_URL} instead"
        )
    notify_url = value_of(pod_ann, ANNOTATION_NOTIFY_URL)
    uid, gid = file_owner(spec_body, containers)
    run_as_user = uid if uid else settings.default_user_id

    refresh, refresh_label = _first(
        (value_of(pod_ann, ANNOTATION_REFRESH_INTERVAL), ANNOTATION_REFRESH_INTERVAL),
        (value_of(ns_ann, ANNOTATION_REFRESH_INTERVAL), f"namespace {ns} annotation {ANNOTATION_REFRESH_INTERVAL}"),
    )
    options = _SpecOptions(
        refresh=refresh,
        file_uid=uid,
        file_gid=gid,
        notify_url=notify_url,
        notify_signal=notify_signal,
        min_refresh_seconds=settings.min_refresh_seconds,
    )
    labels = {
        "refreshInterval": refresh_label or ANNOTATION_REFRESH_INTERVAL,
        "notifyUrl": ANNOTATION_NOTIFY_URL,
        "notifySignal": ANNOTATION_NOTIFY_SIGNAL,
        "fileUid": "spec.securityContext.runAsUser",
        "fileGid": "spec.securityContext.fsGroup",
    }
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
            **labels,
        }
        built = _inline_spec(pod_objects, region, failover, pod_translation, options, names)
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
        built = _spc_spec(_trimmed_spc(manifest, ns, spc_name, overrides), options, names)
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
    return ResolvedRequest(
        spec=spec,
        spec_json=spec_json,
        mount_path=mount_path or DEFAULT_MOUNT_PATH,
        containers=containers,
        run_as_user=run_as_user,
        source=source,
        warnings=tuple(warnings),
    )


# --- Spec building, once per distinct input (see webhook.memo). ------------------
# Content, not resourceVersion, is the key: files given with --secret-provider-class have no resourceVersion.


@dataclass(frozen=True)
class _SpecOptions:
    refresh: str | None
    file_uid: int | None
    file_gid: int | None
    notify_url: str | None
    notify_signal: str | None
    min_refresh_seconds: float

    def as_arguments(self) -> dict[str, Any]:
        return {
            "refresh_interval": self.refresh,
            "file_uid": self.file_uid,
            "file_gid": self.file_gid,
            "notify_url": self.notify_url,
            "notify_signal": self.notify_signal,
            "min_refresh_seconds": self.min_refresh_seconds,
        }


def _inline_spec(
    objects: str,
    region: str | None,
    failover: str | None,
    translation: str | None,
    options: _SpecOptions,
    names: Mapping[str, str],
) -> memo.SpecResult:
    def build() -> memo.SpecResult:
        try:
            return memo.BuiltSpec.of(
                build_spec(
                    objects=objects,
                    region=region,
                    failover_region=failover,
                    path_translation=translation,
                    field_names=names,
                    **options.as_arguments(),
                )
            )
        except SpecError as exc:
            return exc.problems

    key = ("inline", objects, region, failover, translation, options, tuple(names.items()))
    return memo.remembered_spec(key, build)


def _trimmed_spc(
    manifest: Mapping[str, Any], namespace: str, name: str, overrides: Mapping[str, str | None]
) -> dict[str, Any]:
    """The SPC as the spec model should see it: only what matters, with the pod's overrides merged in."""
    spec = manifest.get("spec")
    body = dict(spec) if isinstance(spec, Mapping) else {}
    params = body.get("parameters")
    merged = dict(params) if isinstance(params, Mapping) else {}
    for key, value in overrides.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    body["parameters"] = merged
    return {
        "apiVersion": manifest.get("apiVersion"),
        "kind": manifest.get("kind"),
        "metadata": {"name": name, "namespace": namespace},
        "spec": body,
    }


def _spc_spec(trimmed: Mapping[str, Any], options: _SpecOptions, names: Mapping[str, str]) -> memo.SpecResult:
    def build() -> memo.SpecResult:
        try:
            return memo.BuiltSpec.of(
                spec_from_secret_provider_class(trimmed, field_names=names, **options.as_arguments())
            )
        except SpecError as exc:
            return exc.problems

    key = ("spc", memo.content_key(trimmed), options, tuple(names.items()))
    return memo.remembered_spec(key, build)


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
