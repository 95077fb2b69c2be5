"""The one spec model that the webhook and the fetcher share.

Why it exists: the webhook validates a pod's request at admission and the
fetcher acts on it minutes later inside the pod. If the two parsed the request
with different code, a pod could be admitted with a spec its own init container
rejects. So there is exactly one model: the webhook builds a `FetchSpec` from
annotations or a SecretProviderClass, serialises it to canonical JSON in one
env var, and the fetcher parses that JSON back with the same classes.

It follows the AWS provider for the Secrets Store CSI Driver (ASCP): the same
`objects` YAML, the same file names, the same defaults; and it is stricter
where ASCP lets a mistake through to mount time (collisions after path
translation, traversal in aliases, YAML bombs).

This module must not import boto3 or botocore (the webhook image has neither);
an import-linter contract in pyproject.toml enforces it.
"""

from __future__ import annotations

import difflib
import functools
import json
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from fetcher.regions import region_problem

# --- Annotation keys (the contract in DESIGN.md). -----------------------------
ANNOTATION_PREFIX = "ferry.dev/"
# "true"/"false": inject into this pod (pod value wins over the namespace's).
ANNOTATION_INJECT = "ferry.dev/inject"
# Name of a SecretProviderClass in the pod's namespace.
ANNOTATION_SECRET_PROVIDER_CLASS = "ferry.dev/secret-provider-class"
# ASCP `objects` YAML, inline on the pod.
ANNOTATION_OBJECTS = "ferry.dev/objects"
# Primary AWS region.
ANNOTATION_REGION = "ferry.dev/region"
# Region asked when the primary fails with a 5xx, throttling or a network error.
ANNOTATION_FAILOVER_REGION = "ferry.dev/failover-region"
# ASCP pathTranslation: one character replacing "/" in file names, or "False".
ANNOTATION_PATH_TRANSLATION = "ferry.dev/path-translation"
# Absolute path of the volume in the app containers.
ANNOTATION_MOUNT_PATH = "ferry.dev/mount-path"
# Comma-separated app containers that get the mount (default: all).
ANNOTATION_CONTAINERS = "ferry.dev/containers"
# Refresh interval of the sidecar ("30s", "5m"); absent or "0": init only.
ANNOTATION_REFRESH_INTERVAL = "ferry.dev/refresh-interval"
# Localhost URL the sidecar POSTs to after it swapped in new files.
ANNOTATION_NOTIFY_URL = "ferry.dev/notify-url"
# "SIGNAL:process-name": signal sent after a swap (needs shareProcessNamespace).
ANNOTATION_NOTIFY_SIGNAL = "ferry.dev/notify-signal"
# Written by the webhook: "injected", so a pod is never injected twice.
ANNOTATION_STATUS = "ferry.dev/status"
STATUS_INJECTED = "injected"

# Env var that carries the canonical JSON spec into the injected containers.
SPEC_ENV_VAR = "FERRY_SPEC"
SPEC_VERSION = 1

DEFAULT_MOUNT_PATH = "/mnt/secrets-store"
DEFAULT_PATH_TRANSLATION = "_"
DEFAULT_FILE_PERMISSION = 0o644
# Refresh intervals below this are denied: a fleet polling faster burns
# DescribeSecret quota for no user-visible gain. The webhook may lower it.
DEFAULT_MIN_REFRESH_SECONDS = 10.0
MAX_REFRESH_SECONDS = 7 * 24 * 3600.0

MAX_OBJECTS_YAML_BYTES = 64 * 1024
MAX_YAML_DEPTH = 8
MAX_OBJECTS = 200
MAX_FILE_NAME_BYTES = 255
MAX_PATH_BYTES = 1024

ObjectType = Literal["secretsmanager", "ssmparameter"]
OBJECT_TYPES: tuple[ObjectType, ...] = ("secretsmanager", "ssmparameter")
_ARN_SERVICE_TO_TYPE: dict[str, ObjectType] = {"secretsmanager": "secretsmanager", "ssm": "ssmparameter"}

_REGION_RE = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d{1,2}$")
_ACCOUNT_RE = re.compile(r"^\d{12}$")
_PERMISSION_RE = re.compile(r"^0[0-7]{3}$")
_DURATION_RE = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")
_SIGNALS = (
    "SIGHUP",
    "SIGINT",
    "SIGQUIT",
    "SIGUSR1",
    "SIGUSR2",
    "SIGTERM",
    "SIGWINCH",
)
_OBJECT_KEYS = (
    "objectName",
    "objectType",
    "objectAlias",
    "objectVersion",
    "objectVersionLabel",
    "filePermission",
    "jmesPath",
    "failoverObject",
)
_JMES_KEYS = ("path", "objectAlias", "filePermission")
_FAILOVER_KEYS = ("objectName", "objectVersion", "objectVersionLabel")
# Characters that are never allowed in a file name we write.
_SLASHES = ("/", "\\")
# Slashes NFKC leaves alone (division, fraction, big solidus, ...): a file name with one reads like a path.
_SLASH_LOOKALIKES = frozenset("\u2215\u2044\u29f8\u29f5\u2571\u27cb")


class SpecError(ValueError):
    """A request for secrets that cannot be honoured, with every problem found.

    Each problem names the field (``objects[2].objectAlias``) and says how to fix
    it. `source` says where the spec came from (an annotation, a
    SecretProviderClass) and is prefixed by the caller that knows it.
    """

    def __init__(self, problems: Sequence[Problem], source: str = "") -> None:
        self.problems = tuple(problems)
        self.source = source
        super().__init__(self.message)

    @property
    def message(self) -> str:
        text = "; ".join(str(problem) for problem in self.problems)
        return f"{self.source}: {text}" if self.source else text

    def with_source(self, source: str) -> SpecError:
        return SpecError(self.problems, source)


@dataclass(frozen=True)
class Problem:
    """One invalid field and how to fix it."""

    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message


@dataclass(frozen=True)
class JmesPathEntry:
    """One JSON key of a secret written to a file of its own."""

    path: str
    object_alias: str
    # None: the file gets its object's filePermission.
    file_permission: int | None = None


@dataclass(frozen=True)
class FailoverObject:
    """What to ask the failover region for instead of the primary name."""

    object_name: str
    object_version: str | None = None
    object_version_label: str | None = None


@dataclass(frozen=True)
class ObjectSpec:
    """One Secrets Manager secret or SSM parameter, as ASCP's `objects` entry."""

    object_name: str
    object_type: ObjectType
    object_alias: str | None = None
    object_version: str | None = None
    object_version_label: str | None = None
    file_permission: int = DEFAULT_FILE_PERMISSION
    jmes_path: tuple[JmesPathEntry, ...] = ()
    failover_object: FailoverObject | None = None

    def file_name(self, path_translation: str | None) -> str:
        """The file's path below the volume, as ASCP names it."""
        return translate_path(self.object_alias or self.object_name, path_translation)

    def failover_name(self) -> str:
        return self.failover_object.object_name if self.failover_object else self.object_name

    def failover_version(self) -> tuple[str | None, str | None]:
        """(version, label) to ask the failover region for."""
        if self.failover_object is None:
            return self.object_version, self.object_version_label
        return (
            self.failover_object.object_version or self.object_version,
            self.failover_object.object_version_label or self.object_version_label,
        )


@dataclass(frozen=True)
class OutputFile:
    """One file the fetcher writes: where its bytes come from and its mode."""

    name: str
    object_index: int
    # Index into the object's jmesPath list; None for the whole-object file.
    jmes_index: int | None
    jmes_path: str | None
    mode: int


@dataclass(frozen=True)
class Notify:
    """How the sidecar tells the app that files changed."""

    url: str | None = None
    signal: str | None = None
    process: str | None = None


@dataclass(frozen=True)
class FetchSpec:
    """Everything the fetcher needs, and nothing it has to ask Kubernetes for."""

    objects: tuple[ObjectSpec, ...]
    region: str
    failover_region: str | None = None
    # None: translation off (ASCP's "False"); names keep their slashes.
    path_translation: str | None = DEFAULT_PATH_TRANSLATION
    refresh_seconds: float = 0.0
    file_uid: int | None = None
    file_gid: int | None = None
    notify: Notify = field(default_factory=Notify)

    def output_files(self) -> tuple[OutputFile, ...]:
        """Every file this spec writes, in object order."""
        return list_output_files(self.objects, self.path_translation)

    def to_json(self) -> str:
        """Canonical JSON: the same spec always gives the same bytes."""
        return json.dumps(_spec_to_wire(self), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> FetchSpec:
        """Parse the env var back; validation runs again, so a hand-edited value is checked."""
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
                        f"spec version {_show(wire.get('v'))} is not {SPEC_VERSION}; "
                        "use a fetcher image of the same release as the webhook",
                    )
                ]
            )
        notify = wire.get("notify") or {}
        translation = wire.get("pathTranslation", DEFAULT_PATH_TRANSLATION)
        return build_spec(
            objects=wire.get("objects"),
            region=wire.get("region"),
            failover_region=wire.get("failoverRegion"),
            path_translation="False" if translation is None else translation,
            refresh_interval=float(wire.get("refreshSeconds", 0)),
            file_uid=wire.get("fileUid"),
            file_gid=wire.get("fileGid"),
            notify_url=notify.get("url"),
            notify_signal=(f"{notify['signal']}:{notify['process']}" if notify.get("signal") else None),
            min_refresh_seconds=0.0,
        )


def list_output_files(objects: Sequence[ObjectSpec], path_translation: str | None) -> tuple[OutputFile, ...]:
    """The files ASCP would write for these objects: the whole value, then one per jmesPath entry."""
    files: list[OutputFile] = []
    for index, obj in enumerate(objects):
        files.append(OutputFile(obj.file_name(path_translation), index, None, None, obj.file_permission))
        for position, entry in enumerate(obj.jmes_path):
            mode = obj.file_permission if entry.file_permission is None else entry.file_permission
            name = translate_path(entry.object_alias, path_translation)
            files.append(OutputFile(name, index, position, entry.path, mode))
    return tuple(files)


# --- Building and validating. -------------------------------------------------


def build_spec(
    *,
    objects: str | Sequence[Any] | None,
    region: str | None,
    failover_region: str | None = None,
    path_translation: str | None = None,
    refresh_interval: str | float | None = None,
    file_uid: int | None = None,
    file_gid: int | None = None,
    notify_url: str | None = None,
    notify_signal: str | None = None,
    min_refresh_seconds: float = DEFAULT_MIN_REFRESH_SECONDS,
    field_names: Mapping[str, str] | None = None,
) -> FetchSpec:
    """Validate raw inputs (strings as they appear in annotations or an SPC) into a FetchSpec.

    `objects` is ASCP's YAML string, or an already parsed list. `field_names`
    maps the logical names (region, failoverRegion, pathTranslation,
    refreshInterval, objects, notifyUrl, notifySignal) to what the user wrote,
    e.g. ``ferry.dev/region``, so messages name the annotation they must edit.
    Every problem is collected before raising, so one round trip fixes them all.
    """
    names = {
        "objects": "objects",
        "region": "region",
        "failoverRegion": "failoverRegion",
        "pathTranslation": "pathTranslation",
        "refreshInterval": "refreshInterval",
        "notifyUrl": "notifyUrl",
        "notifySignal": "notifySignal",
        **(field_names or {}),
    }
    problems: list[Problem] = []

    primary = _check_region(region, names["region"], problems, required=True)
    failover = _check_region(failover_region, names["failoverRegion"], problems, required=False)
    if primary and failover and primary == failover:
        problems.append(
            Problem(
                names["failoverRegion"],
                f"is the same as the region ({primary}); name a different region, or remove it to use no failover",
            )
        )
    translation = _check_path_translation(path_translation, names["pathTranslation"], problems)
    refresh = _check_refresh(refresh_interval, names["refreshInterval"], min_refresh_seconds, problems)
    notify = _check_notify(notify_url, notify_signal, names, problems)
    for label, value in (("fileUid", file_uid), ("fileGid", file_gid)):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
            problems.append(Problem(label, "must be a non-negative integer (a uid/gid)"))

    raw_objects: Sequence[Any] | None
    if isinstance(objects, str):
        try:
            raw_objects = parse_objects_yaml(objects, names["objects"])
        except SpecError as exc:
            raise SpecError([*problems, *exc.problems]) from None
    else:
        raw_objects = objects
    positioned = _check_objects(raw_objects, names["objects"], primary, failover, problems)
    parsed = [obj for _, obj in positioned]
    if parsed:
        _check_file_names(parsed, [index for index, _ in positioned], translation, names["objects"], problems)

    if problems:
        raise SpecError(problems)
    assert primary is not None
    return FetchSpec(
        objects=tuple(parsed),
        region=primary,
        failover_region=failover,
        path_translation=translation,
        refresh_seconds=refresh,
        file_uid=file_uid,
        file_gid=file_gid,
        notify=notify,
    )


def spec_from_secret_provider_class(
    manifest: Mapping[str, Any],
    *,
    region: str | None = None,
    failover_region: str | None = None,
    **options: Any,
) -> FetchSpec:
    """A FetchSpec from a SecretProviderClass object (as read from the API or a file).

    The SPC's own `region` / `failoverRegion` parameters win over the
    arguments, which are the fallbacks (namespace annotation, webhook default).
    """
    meta = manifest.get("metadata") or {}
    where = f"SecretProviderClass {meta.get('namespace', '')}/{meta.get('name', '?')}".replace(" /", " ")
    problems: list[Problem] = []
    api_version = manifest.get("apiVersion", "")
    if manifest.get("kind") != "SecretProviderClass" or not str(api_version).startswith("secrets-store.csi.x-k8s.io/"):
        problems.append(
            Problem(
                "kind",
                f"expected kind SecretProviderClass in secrets-store.csi.x-k8s.io, got {_show(manifest.get('kind'))} "
                f"in {_show(api_version)}",
            )
        )
    spec = manifest.get("spec") if isinstance(manifest.get("spec"), Mapping) else {}
    assert isinstance(spec, Mapping)
    if spec.get("provider") != "aws":
        problems.append(Problem("spec.provider", f"is {_show(spec.get('provider'))}; Ferry serves only provider: aws"))
    params = spec.get("parameters") if isinstance(spec.get("parameters"), Mapping) else {}
    assert isinstance(params, Mapping)
    if "objects" not in params:
        problems.append(Problem("spec.parameters.objects", "is missing; list the secrets to mount, as for ASCP"))
    if params.get("usePodIdentity") not in (None, "", "true", "false", True, False):
        problems.append(Problem("spec.parameters.usePodIdentity", 'must be "true" or "false"'))
    if problems:
        raise SpecError(problems, where)
    try:
        return build_spec(
            objects=params.get("objects"),
            region=params.get("region") or region,
            failover_region=params.get("failoverRegion") or failover_region,
            path_translation=params.get("pathTranslation"),
            field_names={
                "objects": "spec.parameters.objects",
                "region": "spec.parameters.region",
                "failoverRegion": "spec.parameters.failoverRegion",
                "pathTranslation": "spec.parameters.pathTranslation",
            },
            **options,
        )
    except SpecError as exc:
        raise exc.with_source(where) from None


def parse_objects_yaml(text: str, field_name: str = "objects") -> list[Any]:
    """Parse ASCP's `objects` YAML safely: size, depth and anchor limits first."""
    if not isinstance(text, str):
        raise SpecError([Problem(field_name, "must be a YAML string (a list of objects)")])
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_OBJECTS_YAML_BYTES:
        raise SpecError(
            [
                Problem(
                    field_name,
                    f"is {size} bytes; the limit is {MAX_OBJECTS_YAML_BYTES}. "
                    "Split the objects across pods or shorten the list",
                )
            ]
        )
    # Imported here, not at the top: the fetcher's init and sidecar get JSON and
    # never parse YAML, and importing PyYAML costs them 20-40 ms per pod start.
    import yaml

    # libyaml's safe loader is ~10x faster than the pure-Python one; the webhook parses on its hot path.
    loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    depth = 0
    try:
        for event in yaml.parse(text, Loader=loader):
            if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
                raise SpecError(
                    [
                        Problem(
                            field_name,
                            "uses YAML anchors or aliases (& or *); write each object out in full",
                        )
                    ]
                )
            if isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                if depth > MAX_YAML_DEPTH:
                    raise SpecError(
                        [Problem(field_name, f"is nested deeper than {MAX_YAML_DEPTH} levels; objects are flat")]
                    )
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
        loaded = yaml.load(text, Loader=loader)  # noqa: S506 - a SafeLoader (libyaml's when available)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "malformed YAML"
        raise SpecError([Problem(field_name, f"is not valid YAML{where}: {problem}")]) from None
    if loaded is None:
        raise SpecError([Problem(field_name, "is empty; list at least one object with objectName")])
    if not isinstance(loaded, list):
        raise SpecError(
            [
                Problem(
                    field_name,
                    f"must be a YAML list of objects (start each with '- objectName:'), got {_kind(loaded)}",
                )
            ]
        )
    return loaded


def parse_duration(text: str) -> float:
    """Seconds in "90", "30s", "5m", "1h30m". Raises ValueError with a readable reason."""
    value = text.strip()
    if value.isdigit():
        return float(value)
    match = _DURATION_RE.match(value)
    if not value or not match or not any(match.groups()):
        raise ValueError(f"{_show(text)} is not a duration; write it like 30s, 5m or 1h30m")
    hours, minutes, seconds = (int(part or 0) for part in match.groups())
    return float(hours * 3600 + minutes * 60 + seconds)


def translate_path(name: str, path_translation: str | None) -> str:
    """ASCP's file naming: replace "/" with the translation character, or strip a leading "/"."""
    if path_translation:
        return name.replace("/", path_translation)
    return name.lstrip("/")


def parse_arn(text: str) -> tuple[str, str, str, str] | None:
    """(partition, service, region, resource) of an ARN, or None if it does not parse."""
    parts = text.split(":", 5)
    if len(parts) != 6 or parts[0] != "arn":
        return None
    _, partition, service, region, account, resource = parts
    if not partition.startswith("aws") or not service or not _REGION_RE.match(region):
        return None
    if not _ACCOUNT_RE.match(account) or not resource:
        return None
    return partition, service, region, resource


# --- Field checks (pure; each appends Problems). ----------------------------


def _check_region(value: Any, name: str, problems: list[Problem], *, required: bool) -> str | None:
    if value is None or value == "":
        if required:
            problems.append(
                Problem(
                    name,
                    "no AWS region is set; set ferry.dev/region on the pod or namespace, "
                    "region in the SecretProviderClass, or the webhook's FERRY_DEFAULT_REGION",
                )
            )
        return None
    if not isinstance(value, str) or not _REGION_RE.match(value):
        problems.append(Problem(name, f"{_show(value)} is not an AWS region; write it like us-east-1"))
        return None
    if (unknown := region_problem(value)) is not None:
        problems.append(Problem(name, unknown))
        return None
    return value


def _check_path_translation(value: Any, name: str, problems: list[Problem]) -> str | None:
    if value is None or value == "":
        return DEFAULT_PATH_TRANSLATION
    if isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        problems.append(Problem(name, 'must be one character or "False"'))
        return DEFAULT_PATH_TRANSLATION
    if value.lower() == "false":
        return None
    if len(value) != 1 or value in ("/", "\\", ".", "\x00") or not value.isprintable():
        problems.append(
            Problem(name, f'{_show(value)} must be a single printable character other than / \\ and ., or "False"')
        )
        return DEFAULT_PATH_TRANSLATION
    return value


def _check_refresh(value: Any, name: str, floor: float, problems: list[Problem]) -> float:
    if value is None or value == "":
        return 0.0
    if isinstance(value, int | float) and not isinstance(value, bool):
        return max(float(value), 0.0)  # already validated: the canonical JSON carries seconds
    try:
        seconds = parse_duration(str(value))
    except ValueError as exc:
        problems.append(Problem(name, str(exc)))
        return 0.0
    if seconds == 0:
        return 0.0
    if seconds < floor:
        problems.append(
            Problem(
                name,
                f"{value} is below the floor of {_format_seconds(floor)}; "
                f"use {_format_seconds(floor)} or more, or 0 for no refresh",
            )
        )
    elif seconds > MAX_REFRESH_SECONDS:
        problems.append(Problem(name, f"{value} is over 7 days; use a shorter interval or 0 for no refresh"))
    return seconds


def _check_notify(url: Any, signal: Any, names: Mapping[str, str], problems: list[Problem]) -> Notify:
    notify_url = None
    if url:
        text = str(url)
        if not re.match(r"^http://(localhost|127\.0\.0\.1|\[::1\])(:\d{1,5})?(/[^\s]*)?$", text):
            problems.append(
                Problem(
                    names["notifyUrl"],
                    f"{_show(text)} must be an http:// URL on localhost, 127.0.0.1 or [::1] "
                    "(the app in the same pod), e.g. http://localhost:8080/-/reload",
                )
            )
        else:
            notify_url = text
    sig = process = None
    if signal:
        text = str(signal)
        head, _, tail = text.partition(":")
        head = head.upper() if head.upper().startswith("SIG") else f"SIG{head.upper()}"
        if head not in _SIGNALS or not tail or not re.match(r"^[A-Za-z0-9._-]{1,64}$", tail):
            problems.append(
                Problem(
                    names["notifySignal"],
                    f"{_show(text)} must be SIGNAL:process-name, e.g. SIGHUP:nginx; signals: {', '.join(_SIGNALS)}",
                )
            )
        else:
            sig, process = head, tail
    return Notify(url=notify_url, signal=sig, process=process)


def _check_objects(
    raw: Any, name: str, region: str | None, failover_region: str | None, problems: list[Problem]
) -> list[tuple[int, ObjectSpec]]:
    if raw is None:
        problems.append(Problem(name, "is missing; list at least one object with objectName"))
        return []
    if not isinstance(raw, list | tuple):
        problems.append(Problem(name, f"must be a list of objects, got {_kind(raw)}"))
        return []
    if not raw:
        problems.append(Problem(name, "is empty; list at least one object with objectName"))
        return []
    if len(raw) > MAX_OBJECTS:
        problems.append(Problem(name, f"has {len(raw)} objects; the limit is {MAX_OBJECTS}"))
        return []
    parsed: list[tuple[int, ObjectSpec]] = []
    seen: dict[tuple[str, str], int] = {}
    for index, entry in enumerate(raw):
        where = f"{name}[{index}]"
        obj = _check_object(entry, where, region, failover_region, problems)
        if obj is None:
            continue
        key = (obj.object_type, obj.object_name)
        if key in seen:
            problems.append(
                Problem(
                    f"{where}.objectName",
                    f"{_show(obj.object_name)} is already listed at {name}[{seen[key]}]; list each object once "
                    "(use jmesPath to write several files from one secret)",
                )
            )
        else:
            seen[key] = index
        parsed.append((index, obj))
    return parsed


def _check_object(
    entry: Any, where: str, region: str | None, failover_region: str | None, problems: list[Problem]
) -> ObjectSpec | None:
    if entry is None:
        problems.append(Problem(where, "is empty (a lone '-'); remove it or give it an objectName"))
        return None
    if not isinstance(entry, Mapping):
        problems.append(Problem(where, f"must be a mapping with objectName, got {_kind(entry)}"))
        return None
    before = len(problems)
    _check_keys(entry, _OBJECT_KEYS, where, problems)
    name = _string(entry, "objectName", where, problems)
    if not name:
        if "objectName" not in entry or entry.get("objectName") in (None, ""):
            problems.append(Problem(f"{where}.objectName", "is missing; name the secret or parameter, or give its ARN"))
        return None
    object_type = _check_name_and_type(name, entry.get("objectType"), f"{where}", region, "objectName", problems)
    alias = _string(entry, "objectAlias", where, problems)
    version = _version(entry, "objectVersion", where, problems)
    label = _string(entry, "objectVersionLabel", where, problems)
    mode = _permission(entry.get("filePermission"), f"{where}.filePermission", problems)
    if object_type == "ssmparameter" and version and label:
        problems.append(
            Problem(
                f"{where}.objectVersionLabel",
                "an SSM parameter takes objectVersion or objectVersionLabel, not both; remove one",
            )
        )
    if alias is not None:
        _check_file_component(alias, f"{where}.objectAlias", problems)
    jmes = _check_jmes(entry.get("jmesPath"), f"{where}.jmesPath", object_type, problems)
    failover = _check_failover(
        entry.get("failoverObject"), where, object_type, alias, version, failover_region, problems
    )
    if len(problems) > before or object_type is None:
        return None
    return ObjectSpec(
        object_name=name,
        object_type=object_type,
        object_alias=alias,
        object_version=version,
        object_version_label=label,
        file_permission=DEFAULT_FILE_PERMISSION if mode is None else mode,
        jmes_path=jmes,
        failover_object=failover,
    )


def _check_name_and_type(
    name: str, raw_type: Any, where: str, region: str | None, name_field: str, problems: list[Problem]
) -> ObjectType | None:
    object_type: ObjectType | None = None
    if raw_type is not None and raw_type != "":
        if raw_type in OBJECT_TYPES:
            object_type = cast(ObjectType, raw_type)
        else:
            hint = ' ("ssm" is not accepted: write ssmparameter)' if raw_type == "ssm" else ""
            problems.append(
                Problem(f"{where}.objectType", f"{_show(raw_type)} is not secretsmanager or ssmparameter{hint}")
            )
            return None
    if name.startswith("arn:"):
        arn = parse_arn(name)
        if arn is None:
            problems.append(
                Problem(
                    f"{where}.{name_field}",
                    f"{_show(name)} is not a valid ARN; expected arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME "
                    "or arn:aws:ssm:REGION:ACCOUNT:parameter/NAME",
                )
            )
            return None
        _, service, arn_region, resource = arn
        arn_type = _ARN_SERVICE_TO_TYPE.get(service)
        if arn_type is None or not resource.startswith("secret:" if arn_type == "secretsmanager" else "parameter"):
            problems.append(
                Problem(
                    f"{where}.{name_field}",
                    f"ARN service {_show(service)} with resource {resource.split(':')[0].split('/')[0]!r} is not a "
                    "Secrets Manager secret or SSM parameter",
                )
            )
            return None
        if object_type is not None and object_type != arn_type:
            problems.append(
                Problem(f"{where}.objectType", f"is {object_type} but the ARN is for {arn_type}; make them agree")
            )
            return None
        if region and arn_region != region:
            problems.append(
                Problem(
                    f"{where}.{name_field}",
                    f"the ARN's region {arn_region} differs from the region in use ({region}); "
                    "use an ARN in that region or change the region",
                )
            )
        return arn_type
    if object_type is None:
        problems.append(
            Problem(f"{where}.objectType", "is missing; set secretsmanager or ssmparameter (or give a full ARN)")
        )
    return object_type


def _check_jmes(
    raw: Any, where: str, object_type: ObjectType | None, problems: list[Problem]
) -> tuple[JmesPathEntry, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        problems.append(Problem(where, f"must be a list of {{path, objectAlias}}, got {_kind(raw)}"))
        return ()
    entries: list[JmesPathEntry] = []
    for index, item in enumerate(raw):
        here = f"{where}[{index}]"
        if not isinstance(item, Mapping):
            problems.append(Problem(here, f"must be a mapping with path and objectAlias, got {_kind(item)}"))
            continue
        _check_keys(item, _JMES_KEYS, here, problems)
        path = _string(item, "path", here, problems)
        alias = _string(item, "objectAlias", here, problems)
        mode = _permission(item.get("filePermission"), f"{here}.filePermission", problems)
        if not path:
            problems.append(Problem(f"{here}.path", "is missing; give the JMESPath of the JSON key, e.g. username"))
        else:
            error = _jmespath_syntax_error(path)
            if error:
                problems.append(Problem(f"{here}.path", error))
        if not alias:
            problems.append(Problem(f"{here}.objectAlias", "is missing; name the file this key is written to"))
        else:
            _check_file_component(alias, f"{here}.objectAlias", problems)
        if path and alias:
            entries.append(JmesPathEntry(path=path, object_alias=alias, file_permission=mode))
    return tuple(entries)


def _check_failover(
    raw: Any,
    where: str,
    object_type: ObjectType | None,
    alias: str | None,
    version: str | None,
    failover_region: str | None,
    problems: list[Problem],
) -> FailoverObject | None:
    if raw is None:
        return None
    here = f"{where}.failoverObject"
    if not isinstance(raw, Mapping):
        problems.append(Problem(here, f"must be a mapping with objectName, got {_kind(raw)}"))
        return None
    _check_keys(raw, _FAILOVER_KEYS, here, problems)
    name = _string(raw, "objectName", here, problems)
    if not name:
        problems.append(Problem(f"{here}.objectName", "is missing; name the secret to use in the failover region"))
        return None
    if not alias:
        problems.append(
            Problem(
                f"{where}.objectAlias",
                "is required with failoverObject, so both regions write the same file; add objectAlias",
            )
        )
    if not failover_region:
        problems.append(Problem(here, "needs a failover region; set ferry.dev/failover-region or failoverRegion"))
    failover_type = (
        _check_name_and_type(name, object_type, here, failover_region, "objectName", problems) if object_type else None
    )
    if object_type and failover_type and failover_type != object_type:
        problems.append(Problem(f"{here}.objectName", f"must be a {object_type} like the primary object"))
    fo_version = _version(raw, "objectVersion", here, problems)
    fo_label = _string(raw, "objectVersionLabel", here, problems)
    if object_type == "ssmparameter" and fo_version and fo_label:
        problems.append(
            Problem(
                f"{here}.objectVersionLabel",
                "an SSM parameter takes objectVersion or objectVersionLabel, not both",
            )
        )
    if fo_version != version:
        problems.append(
            Problem(
                f"{here}.objectVersion",
                f"({fo_version or 'unset'}) must equal the primary's objectVersion ({version or 'unset'}), "
                "so both regions serve the same version",
            )
        )
    return FailoverObject(object_name=name, object_version=fo_version, object_version_label=fo_label)


def _check_file_names(
    objects: Sequence[ObjectSpec],
    positions: Sequence[int],
    translation: str | None,
    name: str,
    problems: list[Problem],
) -> None:
    """Every output file must be a safe relative path, and unique, after translation.

    `positions` maps each parsed object back to its index in the user's list
    (invalid entries were dropped), so messages point at the right entry.
    """
    owners: dict[str, str] = {}
    for out in list_output_files(objects, translation):
        obj = objects[out.object_index]
        index = positions[out.object_index]
        if out.jmes_index is not None:
            origin = f"{name}[{index}].jmesPath[{out.jmes_index}].objectAlias"
        else:
            origin = f"{name}[{index}].objectAlias" if obj.object_alias else f"{name}[{index}].objectName"
        reason = _unsafe_path_reason(out.name)
        if reason:
            problems.append(
                Problem(
                    origin,
                    f"gives the file name {_show(out.name)}, which {reason}; set objectAlias to a plain name",
                )
            )
            continue
        key = out.name
        if key in owners:
            problems.append(
                Problem(
                    origin,
                    f"gives the file name {_show(out.name)}, which {owners[key]} already gives"
                    + (" after path translation" if translation else "")
                    + "; set a distinct objectAlias",
                )
            )
            continue
        owners[key] = origin
    # A file and a directory of the same name cannot both exist ("a" and "a/b").
    for path, origin in owners.items():
        parts = path.split("/")
        for depth in range(1, len(parts)):
            prefix = "/".join(parts[:depth])
            if prefix in owners:
                problems.append(
                    Problem(
                        origin, f"writes {_show(path)} below {_show(prefix)}, which {owners[prefix]} writes as a file"
                    )
                )


def _unsafe_path_reason(path: str) -> str | None:
    if not path:
        return "is empty"
    if len(path.encode("utf-8", "surrogatepass")) > MAX_PATH_BYTES:
        return f"is longer than {MAX_PATH_BYTES} bytes"
    if path.startswith("/"):
        return "is absolute"
    if "\\" in path:
        return "contains a backslash"
    if any(not ch.isprintable() for ch in path):
        return "contains a control character"
    normalized = unicodedata.normalize("NFKC", path)
    if normalized.count("/") != path.count("/") or "\\" in normalized or any(ch in _SLASH_LOOKALIKES for ch in path):
        return "contains a character that looks like a slash"
    for part in path.split("/"):
        if part in ("", ".", ".."):
            return "has an empty, '.' or '..' path segment"
        if part.startswith(".."):
            return "starts with '..', which is reserved for the atomic-swap directories"
        if len(part.encode("utf-8", "surrogatepass")) > MAX_FILE_NAME_BYTES:
            return f"has a segment longer than {MAX_FILE_NAME_BYTES} bytes"
    if ".." in normalized.split("/"):
        return "contains a character sequence that normalizes to '..'"
    return None


def _check_file_component(alias: str, where: str, problems: list[Problem]) -> None:
    """An alias names one file directly in the volume: no directories, nothing that climbs out.

    ASCP would translate a "/" in an alias; Ferry denies it (DESIGN.md), because an
    alias is the user's chosen file name and a slash in it is almost always a
    path mistake or an attempt to escape the volume.
    """
    fix = "use a plain file name like db-password"
    if alias.startswith("/"):
        problems.append(Problem(where, f"{_show(alias)} is an absolute path; {fix}"))
    elif alias in (".", "..") or alias.startswith("../") or "/../" in alias or alias.endswith("/.."):
        problems.append(Problem(where, f"{_show(alias)} climbs out of the volume; {fix}"))
    elif "/" in alias:
        problems.append(Problem(where, f"{_show(alias)} contains a slash; {fix}"))


def _check_keys(entry: Mapping[str, Any], allowed: Sequence[str], where: str, problems: list[Problem]) -> None:
    for key in entry:
        if key in allowed:
            continue
        if key == "objectTemplate":
            problems.append(Problem(f"{where}.objectTemplate", "is not supported by Ferry; use jmesPath to pick keys"))
            continue
        close = difflib.get_close_matches(str(key), allowed, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]}?" if close else f"; known keys: {', '.join(allowed)}"
        problems.append(Problem(f"{where}.{key}", f"is not a known key{hint}"))


def _string(entry: Mapping[str, Any], key: str, where: str, problems: list[Problem]) -> str | None:
    value = entry.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        problems.append(Problem(f"{where}.{key}", f"must be a string, got {_kind(value)}; quote it"))
        return None
    if "\x00" in value:
        problems.append(Problem(f"{where}.{key}", "contains a NUL character"))
        return None
    return value


def _version(entry: Mapping[str, Any], key: str, where: str, problems: list[Problem]) -> str | None:
    value = entry.get(key)
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return str(value)  # SSM versions are numbers; accept them unquoted.
    return _string(entry, key, where, problems)


def _permission(value: Any, where: str, problems: list[Problem]) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        problems.append(
            Problem(
                where,
                f'must be a quoted string of 4 octal digits like "0600" (YAML read {value} as a number)',
            )
        )
        return None
    if not isinstance(value, str) or not _PERMISSION_RE.match(value):
        problems.append(Problem(where, f'{_show(value)} must be 4 octal digits like "0644" or "0600"'))
        return None
    return int(value, 8)


@functools.lru_cache(maxsize=1024)
def _jmespath_syntax_error(path: str) -> str | None:
    """Check JMESPath syntax without importing jmespath's evaluator at admission hot paths."""
    import jmespath.exceptions
    import jmespath.parser

    try:
        jmespath.parser.Parser().parse(path)
    except jmespath.exceptions.ParseError as exc:
        hint = ""
        if "-" in path and '"' not in path:
            hint = '; a key with "-" must be quoted, e.g. "db-user" (in YAML: path: \'"db-user"\')'
        return f"{_show(path)} is not a valid JMESPath expression ({exc.msg}){hint}"
    return None


def _show(value: Any, limit: int = 80) -> str:
    """A user's value quoted for a message, cut short so a 100 KB input gives a short error."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _kind(value: Any) -> str:
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    return {str: "a string", bool: "a boolean", int: "a number", float: "a number"}.get(
        type(value), type(value).__name__
    )


def _format_seconds(seconds: float) -> str:
    whole = int(seconds)
    if whole != seconds:
        return f"{seconds}s"
    if whole and whole % 3600 == 0:
        return f"{whole // 3600}h"
    if whole and whole % 60 == 0:
        return f"{whole // 60}m"
    return f"{whole}s"


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
    return wire


def iter_annotation_keys() -> Iterable[str]:
    """Every annotation key Ferry reads or writes (for docs and strict-key checks)."""
    return (
        value
        for name, value in globals().items()
        if name.startswith("ANNOTATION_") and name != "ANNOTATION_PREFIX" and isinstance(value, str)
    )
