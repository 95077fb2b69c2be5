"""Decide whether a pod is injected and resolve what it asked for into one FetchSpec.

Why it exists: a pod's request is spread over its annotations, a
SecretProviderClass, its namespace's annotations and the webhook's defaults.
Merging them is policy, and policy must be pure and testable without a server,
so this module takes plain dicts and a lookup function and returns either a
`ResolvedRequest` or a `Denial` whose message names what to edit. All field
validation is delegated to the one spec model in `fetcher/spec.py`; this module
only decides which value wins and how problems are attributed:

    region, failover region:  pod annotation > SecretProviderClass > namespace annotation > FERRY_DEFAULT_REGION
    refresh interval:         pod annotation > namespace annotation (floor: FERRY_MIN_REFRESH_INTERVAL)
    secret source:            pod's SPC xor pod's objects (both: denied) > namespace's SPC
    path translation:         pod annotation > SecretProviderClass > "_"

Mount paths that would hide parts of the container's filesystem the app or
the kubelet depend on are refused (see `FORBIDDEN_MOUNT_TREES` and
`FORBIDDEN_MOUNT_PATHS`).
"""

from __future__ import annotations

import difflib
import functools
import json
import posixpath
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
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
    ANNOTATION_STATUS,
    DEFAULT_MOUNT_PATH,
    FetchSpec,
    Problem,
    SpecError,
    build_spec,
    iter_annotation_keys,
    spec_from_secret_provider_class,
)
from webhook.containers import OWN_CONTAINER_NAMES
from webhook.settings import Settings
from webhook.volumes import VOLUME_NAME

# (namespace, name) -> SecretProviderClass API JSON, or None when it does not exist.
# Containers plus init containers in a pod Ferry injects into: far above any real pod, and a bound on the
# work (one mount per container, one patch op each) that a hostile or broken manifest can make admission do.
MAX_POD_CONTAINERS = 256

SpcLookup = Callable[[str, str], Mapping[str, Any] | None]

# Keys a namespace may carry; the others only make sense on a pod.
NAMESPACE_ANNOTATIONS = frozenset(
    {
        ANNOTATION_INJECT,
        ANNOTATION_SECRET_PROVIDER_CLASS,
        ANNOTATION_REGION,
        ANNOTATION_FAILOVER_REGION,
        ANNOTATION_REFRESH_INTERVAL,
    }
)
POD_ANNOTATIONS = frozenset(iter_annotation_keys())

# The mount path may be neither one of these nor below one: system directories
# the image needs, and the token mounts of the service account and IRSA.
FORBIDDEN_MOUNT_TREES = (
    "/bin",
    "/boot",
    "/dev",
    "/etc",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/proc",
    "/sbin",
    "/sys",
    "/usr",
    "/var/run/secrets",
    "/run/secrets",
)
# Nor exactly one of these (below them is fine): mounting there would hide the
# whole directory, e.g. the app's writable /tmp.
FORBIDDEN_MOUNT_PATHS = frozenset({"/", "/tmp", "/var", "/var/run", "/run", "/home", "/opt", "/srv", "/root"})
MAX_MOUNT_PATH_CHARS = 512

_DNS_SUBDOMAIN_RE = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")


@dataclass(frozen=True)
class ResolvedRequest:
    """A valid request: everything the pod builders need."""

    spec: FetchSpec
    mount_path: str
    # Names of the app's containers and init containers that get the read-only mount.
    containers: tuple[str, ...]
    # uid Ferry's containers run as (the app's, else FERRY_DEFAULT_USER_ID).
    run_as_user: int
    # Where the objects came from, for logs: "SecretProviderClass ns/name" or the annotation.
    source: str
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class Denial:
    """An invalid request: `allowed: false` with a message that says what to fix."""

    # Short, bounded label for metrics ("invalid-spec", "missing-secret-provider-class", ...).
    reason: str
    message: str


@dataclass(frozen=True)
class Skip:
    """Not injected, and allowed unchanged."""

    reason: str
    warnings: tuple[str, ...] = ()


def annotations_of(obj: Mapping[str, Any] | None) -> Mapping[str, str]:
    if not obj:
        return {}
    meta = obj.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    return annotations if isinstance(annotations, Mapping) else {}


def decide_injection(
    pod: Mapping[str, Any], namespace: str, namespace_obj: Mapping[str, Any] | None, settings: Settings
) -> Skip | Denial | None:
    """None when the pod is to be injected; else why not (a Skip) or why it is refused (a Denial)."""
    pod_annotations = annotations_of(pod)
    if settings.is_excluded_namespace(namespace):
        warnings: tuple[str, ...] = ()
        if _parse_bool(pod_annotations.get(ANNOTATION_INJECT)) is True:
            warnings = (
                f"{ANNOTATION_INJECT}: Ferry never injects in namespace {namespace}; this pod starts without secrets",
            )
        return Skip("excluded-namespace", warnings)
    unknown = _unknown_keys(pod_annotations, POD_ANNOTATIONS)
    if unknown:
        return Denial("unknown-annotation", unknown)
    pod_value = pod_annotations.get(ANNOTATION_INJECT)
    if pod_value is not None:
        decision = _parse_bool(pod_value)
        if decision is None:
            return Denial(
                "invalid-annotation",
                f'{ANNOTATION_INJECT}: {pod_value!r} must be "true" or "false"',
            )
        return None if decision else Skip("opted-out")
    ns_value = annotations_of(namespace_obj).get(ANNOTATION_INJECT)
    if ns_value is not None:
        decision = _parse_bool(ns_value)
        if decision is None:
            return Denial(
                "invalid-annotation",
                f'namespace {namespace} annotation {ANNOTATION_INJECT}: {ns_value!r} must be "true" or "false"; '
                f"fix the namespace, or set {ANNOTATION_INJECT} on the pod",
            )
        if decision:
            if not _names_secrets(pod_annotations) and not _value(
                annotations_of(namespace_obj), ANNOTATION_SECRET_PROVIDER_CLASS
            ):
                # Namespace-wide opt-in, but nothing to fetch: this pod did not ask for secrets.
                return Skip("nothing-named")
            return None
    leftovers = sorted(key for key in pod_annotations if key.startswith(ANNOTATION_PREFIX))
    if leftovers:
        return Skip(
            "not-requested",
            (
                f'{", ".join(leftovers)} set but {ANNOTATION_INJECT} is not "true" on the pod or its namespace; '
                "this pod starts without secrets",
            ),
        )
    return Skip("not-requested")


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
    unknown = _unknown_keys(pod_ann, POD_ANNOTATIONS)
    if unknown:
        return Denial("unknown-annotation", unknown)
    warnings: list[str] = [
        f"namespace {ns} annotation {key} is {'not a Ferry annotation' if key not in POD_ANNOTATIONS else 'pod-only'}"
        " and is ignored"
        for key in sorted(ns_ann)
        if key.startswith(ANNOTATION_PREFIX) and key not in NAMESPACE_ANNOTATIONS
    ]
    spec_body: Mapping[str, Any] = pod.get("spec") or {}
    count = sum(len(spec_body.get(group) or []) for group in ("initContainers", "containers"))
    if count > MAX_POD_CONTAINERS:
        return Denial(
            "too-many-containers",
            f"spec: the pod has {count} containers and init containers; Ferry injects into pods with at most "
            f"{MAX_POD_CONTAINERS}, so that admission stays well inside the API server's timeout. Split the pod",
        )

    pod_spc = _value(pod_ann, ANNOTATION_SECRET_PROVIDER_CLASS)
    pod_objects = pod_ann.get(ANNOTATION_OBJECTS)
    ns_spc = _value(ns_ann, ANNOTATION_SECRET_PROVIDER_CLASS)
    if pod_spc and pod_objects is not None:
        return Denial(
            "conflicting-sources",
            f"both {ANNOTATION_SECRET_PROVIDER_CLASS} ({pod_spc}) and {ANNOTATION_OBJECTS} are set; "
            "Ferry never guesses which one you meant: remove one of them",
        )
    if pod_objects is None and not pod_spc and not ns_spc:
        return Denial(
            "no-objects",
            f"{ANNOTATION_INJECT} is true but no secrets are named: set {ANNOTATION_SECRET_PROVIDER_CLASS} to a "
            f"SecretProviderClass in namespace {ns}, or {ANNOTATION_OBJECTS} to ASCP objects YAML",
        )

    problems: list[str] = []
    mount_path = _check_mount_path(pod_ann.get(ANNOTATION_MOUNT_PATH), problems)
    containers = _select_containers(spec_body, pod_ann.get(ANNOTATION_CONTAINERS), problems)
    _check_reserved_names(spec_body, problems)
    if mount_path and containers:
        _check_mount_conflicts(spec_body, containers, mount_path, problems)
    notify_signal = _value(pod_ann, ANNOTATION_NOTIFY_SIGNAL)
    if notify_signal and spec_body.get("shareProcessNamespace") is not True:
        problems.append(
            f"{ANNOTATION_NOTIFY_SIGNAL}: signalling a process needs spec.shareProcessNamespace: true so the sidecar "
            f"can see it; set it, or use {ANNOTATION_NOTIFY_URL} instead"
        )
    notify_url = _value(pod_ann, ANNOTATION_NOTIFY_URL)
    uid, gid = _file_owner(spec_body, containers)
    run_as_user = uid if uid else settings.default_user_id

    refresh, refresh_label = _first(
        (_value(pod_ann, ANNOTATION_REFRESH_INTERVAL), ANNOTATION_REFRESH_INTERVAL),
        (_value(ns_ann, ANNOTATION_REFRESH_INTERVAL), f"namespace {ns} annotation {ANNOTATION_REFRESH_INTERVAL}"),
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
    ns_region = (_value(ns_ann, ANNOTATION_REGION), f"namespace {ns} annotation {ANNOTATION_REGION}")
    ns_failover = (
        _value(ns_ann, ANNOTATION_FAILOVER_REGION),
        f"namespace {ns} annotation {ANNOTATION_FAILOVER_REGION}",
    )
    default_region = (settings.default_region, "FERRY_DEFAULT_REGION (a webhook setting)")
    pod_region = (_value(pod_ann, ANNOTATION_REGION), ANNOTATION_REGION)
    pod_failover = (_value(pod_ann, ANNOTATION_FAILOVER_REGION), ANNOTATION_FAILOVER_REGION)
    pod_translation = pod_ann.get(ANNOTATION_PATH_TRANSLATION)

    spec: FetchSpec | None = None
    if pod_objects is not None:
        source = ANNOTATION_OBJECTS
        region, region_label = _first(pod_region, ns_region, default_region)
        failover, failover_label = _first(pod_failover, ns_failover)
        built = _build_inline(
            pod_objects,
            region,
            failover,
            pod_translation,
            options,
            (
                ("region", region_label or ANNOTATION_REGION),
                ("failoverRegion", failover_label or ANNOTATION_FAILOVER_REGION),
                ("pathTranslation", ANNOTATION_PATH_TRANSLATION),
                *labels.items(),
            ),
        )
        if isinstance(built, FetchSpec):
            spec = built
        else:
            problems.extend(_attribute(built, labels, objects_source=ANNOTATION_OBJECTS))
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
                f"{via}: SecretProviderClass {spc_name!r} was not found in namespace {ns}; create it there "
                "(Ferry reads it from the pod's own namespace) or correct the name"
                if _DNS_SUBDOMAIN_RE.match(spc_name)
                else f"{via}: {spc_name!r} is not a valid SecretProviderClass name"
            )
            return Denial("missing-secret-provider-class", "; ".join(problems))
        params = _spc_parameters(manifest)
        spc_region = (_value(params, "region"), source)
        spc_failover = (_value(params, "failoverRegion"), source)
        region, region_label = _first(pod_region, spc_region, ns_region, default_region)
        failover, failover_label = _first(pod_failover, spc_failover, ns_failover)
        overrides: dict[str, str | None] = {"region": region, "failoverRegion": failover}
        renames = dict(labels)
        if region_label != source:
            renames["spec.parameters.region"] = region_label or ANNOTATION_REGION
        if failover_label != source:
            renames["spec.parameters.failoverRegion"] = failover_label or ANNOTATION_FAILOVER_REGION
        if pod_translation is not None:
            overrides["pathTranslation"] = pod_translation
            renames["spec.parameters.pathTranslation"] = ANNOTATION_PATH_TRANSLATION
        built = _build_from_spc(_spc_key(manifest, ns, spc_name, overrides), options)
        if isinstance(built, FetchSpec):
            spec = built
        else:
            problems.extend(_attribute(built, renames, objects_source=source, spc_source=source))

    if problems or spec is None:
        return Denial("invalid-spec", "; ".join(problems))
    if (notify_url or notify_signal) and not spec.refresh_seconds:
        warnings.append(
            f"{ANNOTATION_NOTIFY_URL if notify_url else ANNOTATION_NOTIFY_SIGNAL} has no effect without "
            f"{ANNOTATION_REFRESH_INTERVAL}: files are fetched once, before the app starts"
        )
    return ResolvedRequest(
        spec=spec,
        mount_path=mount_path or DEFAULT_MOUNT_PATH,
        containers=containers,
        run_as_user=run_as_user,
        source=source,
        warnings=tuple(warnings),
    )


# --- Spec building, memoized on content. ---------------------------------------
# Parsing objects YAML dominates admission time; an SPC or an annotation is the
# same text for every replica of a Deployment, so the result (or the error) is
# cached by the exact inputs. Content, not resourceVersion, is the key: files
# given with --secret-provider-class have no resourceVersion.


@dataclass(frozen=True)
class _SpecOptions:
    refresh: str | None
    file_uid: int | None
    file_gid: int | None
    notify_url: str | None
    notify_signal: str | None
    min_refresh_seconds: float


_CACHE_SIZE = 512


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _build_inline(
    objects: str,
    region: str | None,
    failover: str | None,
    translation: str | None,
    options: _SpecOptions,
    field_names: tuple[tuple[str, str], ...],
) -> FetchSpec | tuple[Problem, ...]:
    """The spec, or its problems (a tuple, not the exception: cached tracebacks would pin frames)."""
    try:
        return build_spec(
            objects=objects,
            region=region,
            failover_region=failover,
            path_translation=translation,
            refresh_interval=options.refresh,
            file_uid=options.file_uid,
            file_gid=options.file_gid,
            notify_url=options.notify_url,
            notify_signal=options.notify_signal,
            min_refresh_seconds=options.min_refresh_seconds,
            field_names=dict(field_names),
        )
    except SpecError as exc:
        return exc.problems


def _spc_key(manifest: Mapping[str, Any], namespace: str, name: str, overrides: Mapping[str, str | None]) -> str:
    """The SPC as the spec model should see it (only what matters), as a canonical JSON cache key."""
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
    trimmed = {
        "apiVersion": manifest.get("apiVersion"),
        "kind": manifest.get("kind"),
        "metadata": {"name": name, "namespace": namespace},
        "spec": body,
    }
    return json.dumps(trimmed, sort_keys=True, default=str)


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _build_from_spc(key: str, options: _SpecOptions) -> FetchSpec | tuple[Problem, ...]:
    try:
        return spec_from_secret_provider_class(
            json.loads(key),
            refresh_interval=options.refresh,
            file_uid=options.file_uid,
            file_gid=options.file_gid,
            notify_url=options.notify_url,
            notify_signal=options.notify_signal,
            min_refresh_seconds=options.min_refresh_seconds,
        )
    except SpecError as exc:
        return exc.problems


def clear_spec_cache() -> None:
    """Forget memoized specs (tests; never needed for correctness)."""
    _build_inline.cache_clear()
    _build_from_spc.cache_clear()


# --- Attribution: every problem names what the user must edit. -------------------


def _attribute(
    problems: Iterable[Problem],
    renames: Mapping[str, str],
    *,
    objects_source: str,
    spc_source: str | None = None,
) -> list[str]:
    """Messages prefixed by where each field came from (annotation, SPC, namespace, setting)."""
    out: list[str] = []
    for problem in problems:
        field = problem.field
        if field in renames:
            out.append(f"{renames[field]}: {problem.message}")
        elif field.startswith(("objects", "spec.parameters.objects")):
            out.append(f"{objects_source}: {problem}")
        elif spc_source and (field.startswith("spec.") or field == "kind"):
            out.append(f"{spc_source}: {problem}")
        else:
            out.append(str(problem))
    return out


# --- Pod-shape checks. -----------------------------------------------------------


def _check_mount_path(raw: str | None, problems: list[str]) -> str | None:
    if raw is None:
        return DEFAULT_MOUNT_PATH
    path = raw.strip()
    label = ANNOTATION_MOUNT_PATH
    if not path.startswith("/"):
        problems.append(f"{label}: {raw!r} must be an absolute path like {DEFAULT_MOUNT_PATH}")
        return None
    if len(path) > MAX_MOUNT_PATH_CHARS or any(not ch.isprintable() for ch in path):
        problems.append(f"{label}: {raw!r} must be a printable path of at most {MAX_MOUNT_PATH_CHARS} characters")
        return None
    normalized = posixpath.normpath(path)
    if normalized.startswith("//"):
        normalized = normalized[1:]
    if normalized != path:
        problems.append(f"{label}: {raw!r} is not normalized; write it as {normalized!r}")
        return None
    if path in FORBIDDEN_MOUNT_PATHS:
        suggestion = posixpath.join(path, "secrets") if path != "/" else DEFAULT_MOUNT_PATH
        problems.append(f"{label}: {path!r} would hide that whole directory; use a subdirectory like {suggestion}")
        return None
    for tree in FORBIDDEN_MOUNT_TREES:
        if path == tree or path.startswith(tree + "/"):
            problems.append(
                f"{label}: {path!r} is in {tree}, which the image or the kubelet needs; use e.g. {DEFAULT_MOUNT_PATH}"
            )
            return None
    return path


def _select_containers(spec: Mapping[str, Any], raw: str | None, problems: list[str]) -> tuple[str, ...]:
    app = [c.get("name") for c in spec.get("containers") or [] if isinstance(c, Mapping)]
    init = [c.get("name") for c in spec.get("initContainers") or [] if isinstance(c, Mapping)]
    known = [name for name in [*init, *app] if isinstance(name, str) and name not in OWN_CONTAINER_NAMES]
    if raw is None:
        return tuple(known)
    names = [part.strip() for part in raw.split(",") if part.strip()]
    if not names:
        problems.append(
            f"{ANNOTATION_CONTAINERS}: names no container; list container names separated by commas, "
            "or remove it to mount into all of them"
        )
        return ()
    chosen: list[str] = []
    known_set = frozenset(known)
    for name in names:
        if name in known_set:
            if name not in chosen:
                chosen.append(name)
            continue
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]}?" if close else f"this pod has: {', '.join(known) or 'no containers'}"
        problems.append(f"{ANNOTATION_CONTAINERS}: no container named {name!r} in this pod; {hint}")
    return tuple(chosen)


def _check_reserved_names(spec: Mapping[str, Any], problems: list[str]) -> None:
    for group in ("initContainers", "containers"):
        for container in spec.get(group) or []:
            if isinstance(container, Mapping) and container.get("name") in OWN_CONTAINER_NAMES:
                problems.append(
                    f"spec.{group}: the name {container.get('name')!r} is reserved for Ferry's own containers; "
                    "rename that container"
                )
    for volume in spec.get("volumes") or []:
        if isinstance(volume, Mapping) and volume.get("name") == VOLUME_NAME:
            problems.append(f"spec.volumes: the name {VOLUME_NAME!r} is reserved for Ferry's volume; rename it")


def _check_mount_conflicts(
    spec: Mapping[str, Any], containers: Sequence[str], mount_path: str, problems: list[str]
) -> None:
    wanted = frozenset(containers)
    for group in ("initContainers", "containers"):
        for container in spec.get(group) or []:
            if not isinstance(container, Mapping) or container.get("name") not in wanted:
                continue
            for mount in container.get("volumeMounts") or []:
                if isinstance(mount, Mapping) and posixpath.normpath(str(mount.get("mountPath", ""))) == mount_path:
                    problems.append(
                        f"{ANNOTATION_MOUNT_PATH}: container {container.get('name')!r} already mounts volume "
                        f"{mount.get('name')!r} at {mount_path}; choose another path"
                    )


def _file_owner(spec: Mapping[str, Any], containers: Sequence[str]) -> tuple[int | None, int | None]:
    """(uid, gid) the files should belong to: the pod's runAsUser/fsGroup, else its containers' if they agree."""
    pod_sc = spec.get("securityContext") or {}
    wanted = frozenset(containers)
    selected = [
        c
        for c in spec.get("containers") or []
        if isinstance(c, Mapping) and c.get("name") in wanted and isinstance(c.get("securityContext"), Mapping)
    ]

    def agreed(key: str) -> int | None:
        values = {c["securityContext"].get(key) for c in selected} - {None}
        value = values.pop() if len(values) == 1 else None
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    uid = pod_sc.get("runAsUser") if isinstance(pod_sc, Mapping) else None
    if not isinstance(uid, int) or isinstance(uid, bool):
        uid = agreed("runAsUser")
    gid = None
    if isinstance(pod_sc, Mapping):
        for key in ("fsGroup", "runAsGroup"):
            value = pod_sc.get(key)
            if isinstance(value, int) and not isinstance(value, bool):
                gid = value
                break
    if gid is None:
        gid = agreed("runAsGroup")
    # Root apps read any file; Ferry's containers never run as root, so no root ownership is asked for.
    return (uid if uid else None), gid


# --- Small helpers. --------------------------------------------------------------


def _unknown_keys(annotations: Mapping[str, str], known: frozenset[str]) -> str:
    problems = []
    for key in sorted(annotations):
        if key.startswith(ANNOTATION_PREFIX) and key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.7)
            hint = f"did you mean {close[0]}?" if close else f"known keys: {', '.join(sorted(known))}"
            problems.append(f"{key}: is not a Ferry annotation; {hint}")
    return "; ".join(problems)


def _names_secrets(annotations: Mapping[str, str]) -> bool:
    return ANNOTATION_OBJECTS in annotations or bool(_value(annotations, ANNOTATION_SECRET_PROVIDER_CLASS))


def _parse_bool(value: str | None) -> bool | None:
    if value is None:
        return None
    lowered = str(value).strip().lower()
    return True if lowered == "true" else False if lowered == "false" else None


def _value(mapping: Mapping[str, Any], key: str) -> str | None:
    value = mapping.get(key)
    if value is None:
        return None
    text = str(value).strip()
    return text or None


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


def status_of(pod: Mapping[str, Any]) -> str | None:
    return annotations_of(pod).get(ANNOTATION_STATUS)
