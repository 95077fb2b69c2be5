"""The pod, its namespace and their Ferry annotations, read once into frozen values that every stage shares."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

from fetcher.contract import (
    ANNOTATION_AWS_ENDPOINTS,
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
    ANNOTATION_STATUS,
)
from fetcher.contract.gcp import KsaAnnotation

# `isinstance(x, _OBJECT)` is `isinstance(x, Mapping)`, at once for a dict (what JSON decodes to).
_OBJECT = (dict, Mapping)

# The namespace label that routes a namespace's pods to Ferry (the ns.pods.ferry.dev entry of the
# MutatingWebhookConfiguration). A namespace's ferry.dev/inject annotation counts only with it: the API
# server never sends Ferry the pods of a namespace without it, so the webhook must not read the annotation
# as an opt-in either, or the offline preview and a pod routed for another reason would disagree with it.
NAMESPACE_OPT_IN_LABEL = (ANNOTATION_INJECT, "enabled")
JOB_NAME_LABELS = ("batch.kubernetes.io/job-name", "job-name")
# Names of the containers Ferry adds; reserved in every injected pod, and the sign of one.
INIT_CONTAINER_NAME = "ferry-init"
SIDECAR_NAME = "ferry-sidecar"
OWN_CONTAINER_NAMES = frozenset({INIT_CONTAINER_NAME, SIDECAR_NAME})


class FerryAnnotations(NamedTuple):
    """Ferry's annotations on one object. Text the spec model parses stays as written; a value is stripped
    (None when blank)."""

    # Every annotation of the object, as sent (Workload Identity's reader takes them whole).
    all: Mapping[str, str]
    # Every ferry.dev/ key on the object, in its order: the unknown ones are denied or warned about.
    keys: tuple[str, ...]
    inject: str | None
    status: str | None
    secret_provider_class: str | None
    objects: str | None
    secret_objects: str | None
    output_formats: str | None
    region: str | None
    failover_region: str | None
    path_translation: str | None
    mount_path: str | None
    containers: str | None
    refresh_interval: str | None
    sidecar_unhealthy_after: str | None
    notify_url: str | None
    notify_signal: str | None
    provider: str | None
    aws_endpoints: str | None

    @classmethod
    def of(cls, obj: Mapping[str, Any] | None) -> FerryAnnotations:
        annotations = _annotations(obj)
        keys = tuple([key for key in annotations if key.startswith(ANNOTATION_PREFIX)])
        if not keys:  # every field is a ferry.dev/ key: all None (most namespaces)
            return cls(annotations, (), *_NO_VALUES)
        get = annotations.get
        # Positional, in the order of the fields: a NamedTuple made from 19 keywords costs twice as much.
        return cls(
            annotations,
            keys,
            get(ANNOTATION_INJECT),
            get(ANNOTATION_STATUS),
            _value(get(ANNOTATION_SECRET_PROVIDER_CLASS)),
            get(ANNOTATION_OBJECTS),
            get(ANNOTATION_SECRET_OBJECTS),
            _value(get(ANNOTATION_OUTPUT_FORMATS)),
            _value(get(ANNOTATION_REGION)),
            _value(get(ANNOTATION_FAILOVER_REGION)),
            get(ANNOTATION_PATH_TRANSLATION),
            get(ANNOTATION_MOUNT_PATH),
            get(ANNOTATION_CONTAINERS),
            _value(get(ANNOTATION_REFRESH_INTERVAL)),
            _value(get(ANNOTATION_SIDECAR_UNHEALTHY_AFTER)),
            _value(get(ANNOTATION_NOTIFY_URL)),
            _value(get(ANNOTATION_NOTIFY_SIGNAL)),
            _value(get(ANNOTATION_PROVIDER)),
            _value(get(ANNOTATION_AWS_ENDPOINTS)),
        )


_NO_VALUES = (None,) * (len(FerryAnnotations._fields) - 2)


class PodRequest(NamedTuple):
    """One pod CREATE as the stages see it; none of them reads the pod's metadata again."""

    # The pod as sent (never modified) and its spec.
    pod: Mapping[str, Any]
    spec: Mapping[str, Any]
    # From the AdmissionRequest, never from the pod: the API server names it.
    namespace: str
    annotations: FerryAnnotations
    namespace_annotations: FerryAnnotations
    # The namespace carries NAMESPACE_OPT_IN_LABEL; and that label's value, whatever it is.
    namespace_opted_in: bool
    namespace_inject_label: str | None
    # Owned by a Job, or meant to exit: a regular sidecar would keep it running forever.
    run_to_completion: bool
    # Ferry's init container or sidecar is in the pod: it was injected (the status annotation alone proves nothing).
    has_own_containers: bool
    # The pod's ServiceAccount's iam.gke.io/gcp-service-account, read once from the cluster view (None when the
    # webhook does not read ServiceAccounts: no GCP settings, or no cluster). Part of the memo key.
    ksa: KsaAnnotation | None = None

    @classmethod
    def read(
        cls,
        pod: Mapping[str, Any],
        namespace: str,
        namespace_obj: Mapping[str, Any] | None,
        ksa: KsaAnnotation | None = None,
    ) -> PodRequest:
        spec = pod.get("spec")
        inject_label = _label(namespace_obj, NAMESPACE_OPT_IN_LABEL[0])
        return cls(  # positional, in the order of the fields (a third cheaper than keywords)
            pod,
            spec if isinstance(spec, _OBJECT) else {},
            namespace,
            FerryAnnotations.of(pod),
            FerryAnnotations.of(namespace_obj),
            inject_label == NAMESPACE_OPT_IN_LABEL[1],
            inject_label,
            is_run_to_completion(pod),
            _has_own_containers(spec),
            ksa,
        )


def is_run_to_completion(pod: Mapping[str, Any]) -> bool:
    """Owned by a Job, or restartPolicy Never/OnFailure. Never raises: the memo keys every pod on this."""
    meta = pod.get("metadata")
    meta = meta if isinstance(meta, _OBJECT) else {}
    owners = meta.get("ownerReferences")
    if isinstance(owners, list) and any(isinstance(o, _OBJECT) and o.get("kind") == "Job" for o in owners):
        return True
    labels = meta.get("labels")
    if isinstance(labels, _OBJECT) and any(label in labels for label in JOB_NAME_LABELS):
        return True
    spec = pod.get("spec")
    return isinstance(spec, _OBJECT) and spec.get("restartPolicy") in ("Never", "OnFailure")


def _has_own_containers(spec: object) -> bool:
    if not isinstance(spec, _OBJECT):
        return False
    groups = (spec.get("initContainers"), spec.get("containers"))
    return any(
        isinstance(container, dict) and container.get("name") in OWN_CONTAINER_NAMES
        for group in groups
        if type(group) is list
        for container in group
    )


def _annotations(obj: Mapping[str, Any] | None) -> Mapping[str, str]:
    if not obj:
        return {}
    meta = obj.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    return annotations if isinstance(annotations, _OBJECT) else {}


def _label(namespace_obj: Mapping[str, Any] | None, key: str) -> str | None:
    meta = (namespace_obj or {}).get("metadata")
    labels = meta.get("labels") if isinstance(meta, _OBJECT) else None
    value = labels.get(key) if isinstance(labels, _OBJECT) else None
    return str(value) if value is not None else None


def _value(value: Any) -> str | None:
    """The annotation's value stripped of blanks; None when absent or blank."""
    if value is None:
        return None
    text = str(value).strip()
    return text or None
