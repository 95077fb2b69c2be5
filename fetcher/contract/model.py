"""The spec's data: what to fetch, where to write it, and the file names that follow.

The webhook builds a `FetchSpec` at admission and the fetcher acts on the same classes inside the pod, so both sides
agree on every file name. Only data and pure naming rules live here; checking raw input is
`fetcher.contract.validate`'s job and the JSON form is `fetcher.contract.wire`'s.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from fetcher.contract.object_options import AssumeRole, Discovery
from fetcher.contract.secret_objects import SecretObject

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

ObjectType = Literal["secretsmanager", "ssmparameter", "gcpsecret", "gcpparameter"]
# The objectType values of ASCP's objects list (GCP objects come from the GCP provider's format: fetcher.contract.gcp).
OBJECT_TYPES: tuple[ObjectType, ...] = ("secretsmanager", "ssmparameter")
Provider = Literal["aws", "gcp"]
PROVIDER_AWS: Provider = "aws"
PROVIDER_GCP: Provider = "gcp"
PROVIDERS: tuple[Provider, ...] = (PROVIDER_AWS, PROVIDER_GCP)
REGION_RE = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d{1,2}$")


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
    # Issue 18 (fetcher.contract.object_options): a role to assume, one file per JSON key, many objects by path.
    role: AssumeRole | None = None
    expand_json: bool = False
    discover: Discovery | None = None
    # GCP provider: the file holds this top-level key of the JSON or YAML value instead of the whole value.
    extract_json_key: str | None = None
    extract_yaml_key: str | None = None

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
    # A directory of files known only at fetch time (expandJson keys, discovered objects) rather than one file.
    expands: bool = False


@dataclass(frozen=True)
class Notify:
    """How the sidecar tells the app that files changed."""

    url: str | None = None
    signal: str | None = None
    process: str | None = None


@dataclass(frozen=True)
class GcpIdentity:
    """GKE Workload Identity: what the fetcher exchanges its token for, and whom it then impersonates."""

    workload_pool: str
    # The cluster as the pool knows it; the security token endpoint's audience names it.
    identity_provider: str
    service_account: str | None = None


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
    # The CSI driver's secretObjects: Kubernetes Secrets written from the files, with the pod's ServiceAccount.
    secret_objects: tuple[SecretObject, ...] = ()
    # Extra documents on the same swap: (format, file name), e.g. ("dotenv", "secrets.env"), sorted by format.
    output_formats: tuple[tuple[str, str], ...] = ()
    # The pod's own endpoints in its region: (service, URL), sorted (fetcher.contract.endpoints).
    endpoints: tuple[tuple[str, str], ...] = ()
    # Whose API the objects are in; "gcp" specs carry their Workload Identity settings (region is unused).
    provider: Provider = "aws"
    gcp: GcpIdentity | None = None

    def output_files(self) -> tuple[OutputFile, ...]:
        """Every file this spec writes, in object order."""
        return list_output_files(self.objects, self.path_translation)


def needs_kube_api(spec: FetchSpec) -> bool:
    """Whether Ferry's containers talk to the Kubernetes API (and so get the pod's ServiceAccount token).

    The one place this is decided: only a spec that syncs Kubernetes Secrets needs the API; every other pod's
    Ferry containers run without a token.
    """
    return bool(spec.secret_objects)


def file_names(spec: FetchSpec) -> tuple[str, ...]:
    """Every file name on the volume: the objects' files, then the output-format documents."""
    return (*(out.name for out in spec.output_files()), *(name for _, name in spec.output_formats))


def list_output_files(objects: Sequence[ObjectSpec], path_translation: str | None) -> tuple[OutputFile, ...]:
    """The files ASCP would write for these objects: the whole value, then one per jmesPath entry."""
    files: list[OutputFile] = []
    for index, obj in enumerate(objects):
        if obj.discover is not None and not obj.object_alias:
            continue  # discovered objects land at the volume's root, under names known at fetch time
        dynamic = obj.expand_json or obj.discover is not None
        files.append(OutputFile(obj.file_name(path_translation), index, None, None, obj.file_permission, dynamic))
        for position, entry in enumerate(obj.jmes_path):
            mode = obj.file_permission if entry.file_permission is None else entry.file_permission
            name = translate_path(entry.object_alias, path_translation)
            files.append(OutputFile(name, index, position, entry.path, mode))
    return tuple(files)


def translate_path(name: str, path_translation: str | None) -> str:
    """ASCP's file naming: replace "/" with the translation character, or strip a leading "/"."""
    if path_translation:
        return name.replace("/", path_translation)
    return name.lstrip("/")
