"""Stage 3: which value wins. Pod ∪ SecretProviderClass ∪ namespace ∪ defaults, merged into the spec's inputs.

Precedence and where each problem points are in docs/admission.md ("Which value wins").
"""

from __future__ import annotations

import heapq
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

from fetcher.contract import (
    ANNOTATION_AWS_ENDPOINTS,
    ANNOTATION_FAILOVER_REGION,
    ANNOTATION_INJECT,
    ANNOTATION_NOTIFY_SIGNAL,
    ANNOTATION_NOTIFY_URL,
    ANNOTATION_OBJECTS,
    ANNOTATION_OUTPUT_FORMATS,
    ANNOTATION_PATH_TRANSLATION,
    ANNOTATION_PROVIDER,
    ANNOTATION_REFRESH_INTERVAL,
    ANNOTATION_REGION,
    ANNOTATION_SECRET_OBJECTS,
    ANNOTATION_SECRET_PROVIDER_CLASS,
    ANNOTATION_SIDECAR_UNHEALTHY_AFTER,
    SPC_FIELD_NAMES,
    bounded,
    join_problems,
    parse_duration,
    quote,
    secret_provider_class_warnings,
)
from fetcher.contract.endpoints import EndpointRequest
from fetcher.contract.gcp import workload_identity
from webhook.policy.decide import MAX_KEY_CHARS_SHOWN, MAX_REPORTED_KEYS, NAMESPACE_ANNOTATIONS, POD_ANNOTATIONS, Denial
from webhook.policy.podshape import PodShape
from webhook.policy.request import PodRequest
from webhook.policy.view import SPC_TOO_LARGE
from webhook.settings import Settings

# (namespace, name) -> SecretProviderClass API JSON, or None when it does not exist.
SpcLookup = Callable[[str, str], Mapping[str, Any] | None]

_DNS_SUBDOMAIN_RE = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")


class SpecOptions(NamedTuple):
    """The spec's fields that come from the pod whatever the source of its objects."""

    refresh: str | None
    file_uid: int | None
    file_gid: int | None
    notify_url: str | None
    notify_signal: str | None
    min_refresh_seconds: float
    # Workload Identity settings for provider: gcp, as (key, value) pairs (hashable: the spec cache's key holds them).
    gcp_identity: tuple[tuple[str, str | None], ...] = ()
    # ferry.dev/aws-endpoints and the webhook's policy for it (issue 18); hashable, like the rest.
    endpoints: EndpointRequest | None = None


class InlineSpecInputs(NamedTuple):
    """A spec from the pod's own ferry.dev/objects: every input is a string, so the value is its own key."""

    objects: str
    region: str | None
    failover: str | None
    translation: str | None
    options: SpecOptions
    # field -> where the user edits it, for messages.
    names: tuple[tuple[str, str], ...]
    secret_objects: str | None
    output_formats: str | None
    provider: str | None = None


class SpcSpecInputs(NamedTuple):
    """A spec from a SecretProviderClass, trimmed to what the spec model reads, the pod's overrides merged in."""

    trimmed: Mapping[str, Any]
    options: SpecOptions
    names: tuple[tuple[str, str], ...]


SpecInputs = InlineSpecInputs | SpcSpecInputs


class Resolution(NamedTuple):
    """What stage 4 builds the spec from, and what stage 3 found on the way."""

    inputs: SpecInputs
    # Where the objects came from, for logs: "SecretProviderClass ns/name" or the annotation.
    source: str
    # The pod's shape problems and this stage's, reported with the spec's own.
    problems: tuple[str, ...]
    warnings: tuple[str, ...]
    # The refresh sidecar's liveness probe fails after this long of refreshes failing in a row (0: no probe).
    sidecar_unhealthy_after: float


def resolve_spec(
    request: PodRequest, shape: PodShape, spc_lookup: SpcLookup, settings: Settings
) -> Resolution | Denial:
    """Merge pod ∪ SecretProviderClass ∪ namespace ∪ defaults; the spec model validates the result in stage 4."""
    ns = request.namespace
    pod, ns_ann = request.annotations, request.namespace_annotations
    # At most MAX_WARNINGS travel anyway (webhook.policy.review); none of the others is even formatted.
    ignored = [key for key in ns_ann.keys if key not in NAMESPACE_ANNOTATIONS]
    warnings: list[str] = [
        f"namespace {ns} annotation {bounded(key, MAX_KEY_CHARS_SHOWN)} is "
        f"{'not a Ferry annotation' if key not in POD_ANNOTATIONS else 'pod-only'} and is ignored"
        for key in heapq.nsmallest(MAX_REPORTED_KEYS, ignored)
    ]
    if pod.secret_provider_class and pod.objects is not None:
        return Denial(
            "conflicting-sources",
            f"both {ANNOTATION_SECRET_PROVIDER_CLASS} ({bounded(pod.secret_provider_class, MAX_KEY_CHARS_SHOWN)}) "
            f"and {ANNOTATION_OBJECTS} are set; Ferry never guesses which one you meant: remove one of them",
        )
    if pod.objects is None and not pod.secret_provider_class and not ns_ann.secret_provider_class:
        return Denial(
            "no-objects",
            f"{ANNOTATION_INJECT} is true but no secrets are named: set {ANNOTATION_SECRET_PROVIDER_CLASS} to a "
            f"SecretProviderClass in namespace {ns}, or {ANNOTATION_OBJECTS} to ASCP objects YAML",
        )
    if pod.secret_objects is not None and pod.objects is None:
        return Denial(
            "conflicting-sources",
            f"{ANNOTATION_SECRET_OBJECTS} goes with {ANNOTATION_OBJECTS}; with a SecretProviderClass, write the "
            "secretObjects in the class's spec.secretObjects (as for the CSI driver) and remove "
            f"{ANNOTATION_SECRET_OBJECTS}",
        )
    warnings.extend(shape.warnings)
    problems = list(shape.problems)
    unhealthy_after = _unhealthy_after(pod.sidecar_unhealthy_after, settings, problems)
    refresh, refresh_label = _first(
        (pod.refresh_interval, ANNOTATION_REFRESH_INTERVAL),
        (ns_ann.refresh_interval, f"namespace {ns} annotation {ANNOTATION_REFRESH_INTERVAL}"),
    )
    endpoints, endpoints_label = _first(
        (pod.aws_endpoints, ANNOTATION_AWS_ENDPOINTS),
        (ns_ann.aws_endpoints, f"namespace {ns} annotation {ANNOTATION_AWS_ENDPOINTS}"),
    )
    formats, formats_label = _first(
        (pod.output_formats, ANNOTATION_OUTPUT_FORMATS),
        (ns_ann.output_formats, f"namespace {ns} annotation {ANNOTATION_OUTPUT_FORMATS}"),
    )
    ns_region = (ns_ann.region, f"namespace {ns} annotation {ANNOTATION_REGION}")
    ns_failover = (ns_ann.failover_region, f"namespace {ns} annotation {ANNOTATION_FAILOVER_REGION}")
    default_region = (settings.default_region, "FERRY_DEFAULT_REGION (a webhook setting)")
    pod_region = (pod.region, ANNOTATION_REGION)
    pod_failover = (pod.failover_region, ANNOTATION_FAILOVER_REGION)

    trimmed: dict[str, Any] | None = None  # the SecretProviderClass as the spec model sees it
    spc_warnings: Sequence[str] = ()
    formats_override = False
    if pod.objects is not None:
        source = ANNOTATION_OBJECTS
        region, region_label = _first(pod_region, ns_region, default_region)
        failover, failover_label = _first(pod_failover, ns_failover)
    else:
        spc_name, via = (
            (pod.secret_provider_class, ANNOTATION_SECRET_PROVIDER_CLASS)
            if pod.secret_provider_class
            else (ns_ann.secret_provider_class, f"namespace {ns} annotation {ANNOTATION_SECRET_PROVIDER_CLASS}")
        )
        assert spc_name is not None
        source = f"SecretProviderClass {ns}/{spc_name}"
        valid_name = _DNS_SUBDOMAIN_RE.match(spc_name) is not None
        manifest = spc_lookup(ns, spc_name) if valid_name else None
        if manifest is None:
            problems.append(
                f"{via}: SecretProviderClass {quote(spc_name)} was not found in namespace {ns}; create it there "
                "(Ferry reads it from the pod's own namespace) or correct the name"
                if valid_name
                else f"{via}: {quote(spc_name)} is not a valid SecretProviderClass name"
            )
            return Denial("missing-secret-provider-class", join_problems(problems))
        too_large = manifest.get(SPC_TOO_LARGE)
        if isinstance(too_large, Mapping):
            return Denial("secret-provider-class-too-large", _too_large_message(via, source, too_large))
        params = _spc_parameters(manifest)
        spc_region = (_value(params, "region"), source)
        spc_failover = (_value(params, "failoverRegion"), source)
        region, region_label = _first(pod_region, spc_region, ns_region, default_region)
        failover, failover_label = _first(pod_failover, spc_failover, ns_failover)
        overrides: dict[str, str | None] = {"region": region, "failoverRegion": failover}
        if pod.path_translation is not None:
            overrides["pathTranslation"] = pod.path_translation
        # The pod's annotation wins over the class's parameter, which wins over the namespace's.
        formats_override = bool(pod.output_formats or (formats and not _value(params, "outputFormats")))
        if formats_override:
            overrides["outputFormats"] = formats
        spc_warnings = secret_provider_class_warnings(manifest, f"{source}: ")
        trimmed = _trimmed_spc(manifest, ns, spc_name, overrides)

    # Read last, after this module's own helpers: a reader following one request through the stages goes down
    # into the Workload Identity reader once and on to the next stage, not back into this module.
    gcp_identity, gcp_labels, gcp_warnings = workload_identity(
        pod.all, ns_ann.all, ns, settings.gcp_identity(), request.ksa
    )
    warnings.extend(gcp_warnings)
    options = SpecOptions(
        refresh=refresh,
        file_uid=shape.file_uid,
        file_gid=shape.file_gid,
        notify_url=pod.notify_url,
        notify_signal=pod.notify_signal,
        min_refresh_seconds=settings.min_refresh_seconds,
        gcp_identity=gcp_identity,
        endpoints=(
            EndpointRequest(endpoints, settings.endpoint_policy, from_namespace=not pod.aws_endpoints)
            if endpoints
            else None
        ),
    )
    labels = {
        **gcp_labels,
        "refreshInterval": refresh_label or ANNOTATION_REFRESH_INTERVAL,
        "notifyUrl": ANNOTATION_NOTIFY_URL,
        "notifySignal": ANNOTATION_NOTIFY_SIGNAL,
        "fileUid": "spec.securityContext.runAsUser",
        "fileGid": "spec.securityContext.fsGroup",
        "endpoints": endpoints_label or ANNOTATION_AWS_ENDPOINTS,
    }
    inputs: SpecInputs
    if trimmed is None:
        assert pod.objects is not None  # the inline branch above
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
        inputs = InlineSpecInputs(
            pod.objects,
            region,
            failover,
            pod.path_translation,
            options,
            tuple(names.items()),
            pod.secret_objects,
            formats,
            pod.provider,
        )
    else:
        # Each field named once, as the user must edit it: inside the class, or where its value came from.
        spc_names = {field: f"{source}: {name}" for field, name in SPC_FIELD_NAMES.items()} | labels
        if region_label != source:
            spc_names["region"] = region_label or ANNOTATION_REGION
        if failover_label != source:
            spc_names["failoverRegion"] = failover_label or ANNOTATION_FAILOVER_REGION
        if pod.path_translation is not None:
            spc_names["pathTranslation"] = ANNOTATION_PATH_TRANSLATION
        if formats_override:
            spc_names["outputFormats"] = formats_label or ANNOTATION_OUTPUT_FORMATS
        warnings.extend(spc_warnings)
        inputs = SpcSpecInputs(trimmed, options, tuple(spc_names.items()))
    return Resolution(inputs, source, tuple(problems), tuple(warnings), unhealthy_after)


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


def _value(mapping: Mapping[str, Any], key: str) -> str | None:
    """A parameter's value stripped of blanks; None when absent or blank."""
    value = mapping.get(key)
    if value is None:
        return None
    text = str(value).strip()
    return text or None


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


def _spc_parameters(manifest: Mapping[str, Any]) -> Mapping[str, Any]:
    spec = manifest.get("spec")
    params = spec.get("parameters") if isinstance(spec, Mapping) else None
    return params if isinstance(params, Mapping) else {}
