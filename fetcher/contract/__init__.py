"""What the webhook and the fetcher share: the spec model and its JSON form, the annotation names, the
error root and the message helpers, and the one log line.

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

Where things are:

- `annotations`: the pod annotation keys (the public contract);
- `problems`: `FerryError` (the root of every deliberate failure), `SpecError`, `Problem`;
- `model`: the dataclasses, the limits, and the file names a spec writes;
- `validate`: `build_spec` and the request-wide checks; `objects` and `paths`
  check the objects list and the file names it gives;
- `wire`: the canonical JSON in ``FERRY_SPEC``, both directions;
- `spc`: SecretProviderClass objects and manifest files, and warnings for what Ferry ignores in them;
- `secret_objects`: the CSI driver's ``secretObjects`` (Kubernetes Secrets synced from the files), checked;
- `formats`: the dotenv and JSON documents written beside the files;
- `gcp`: the GCP provider's `secrets` list and the Workload Identity settings (provider: gcp).

This package must not import boto3 or botocore (the webhook image has neither);
an import-linter contract in pyproject.toml enforces it.
"""

from fetcher.contract.annotations import (
    ANNOTATION_AWS_ENDPOINTS,
    ANNOTATION_CONTAINERS,
    ANNOTATION_FAILOVER_REGION,
    ANNOTATION_GCP_IDENTITY_PROVIDER,
    ANNOTATION_GCP_SERVICE_ACCOUNT,
    ANNOTATION_GCP_WORKLOAD_POOL,
    ANNOTATION_INJECT,
    ANNOTATION_KEYS,
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
    STATUS_INJECTED,
    iter_annotation_keys,
)
from fetcher.contract.model import (
    DEFAULT_FILE_PERMISSION,
    DEFAULT_MIN_REFRESH_SECONDS,
    DEFAULT_MOUNT_PATH,
    DEFAULT_PATH_TRANSLATION,
    MAX_FILE_NAME_BYTES,
    MAX_OBJECTS,
    MAX_OBJECTS_YAML_BYTES,
    MAX_PATH_BYTES,
    MAX_REFRESH_SECONDS,
    MAX_YAML_DEPTH,
    OBJECT_TYPES,
    SPEC_ENV_VAR,
    SPEC_VERSION,
    FailoverObject,
    FetchSpec,
    GcpIdentity,
    JmesPathEntry,
    Notify,
    ObjectSpec,
    ObjectType,
    OutputFile,
    file_names,
    list_output_files,
    needs_kube_api,
    translate_path,
)
from fetcher.contract.objects import parse_arn
from fetcher.contract.problems import (
    MAX_MESSAGE_CHARS,
    FerryError,
    Problem,
    SpecError,
    bounded,
    join_problems,
    listed,
    quote,
)
from fetcher.contract.spc import (
    MAX_MANIFEST_BYTES,
    SPC_FIELD_NAMES,
    ManifestError,
    load_manifests,
    pick_secret_provider_class,
    secret_provider_class_warnings,
    spec_from_secret_provider_class,
)
from fetcher.contract.validate import build_spec, parse_duration, parse_objects_yaml
from fetcher.contract.wire import spec_from_json, spec_to_json

__all__ = [
    "ANNOTATION_AWS_ENDPOINTS",
    "ANNOTATION_CONTAINERS",
    "ANNOTATION_FAILOVER_REGION",
    "ANNOTATION_GCP_IDENTITY_PROVIDER",
    "ANNOTATION_GCP_SERVICE_ACCOUNT",
    "ANNOTATION_GCP_WORKLOAD_POOL",
    "ANNOTATION_PROVIDER",
    "ANNOTATION_INJECT",
    "ANNOTATION_KEYS",
    "ANNOTATION_MOUNT_PATH",
    "ANNOTATION_NOTIFY_SIGNAL",
    "ANNOTATION_NOTIFY_URL",
    "ANNOTATION_OBJECTS",
    "ANNOTATION_OUTPUT_FORMATS",
    "ANNOTATION_PATH_TRANSLATION",
    "ANNOTATION_PREFIX",
    "ANNOTATION_REFRESH_INTERVAL",
    "ANNOTATION_SIDECAR_UNHEALTHY_AFTER",
    "ANNOTATION_REGION",
    "ANNOTATION_SECRET_OBJECTS",
    "ANNOTATION_SECRET_PROVIDER_CLASS",
    "ANNOTATION_STATUS",
    "DEFAULT_FILE_PERMISSION",
    "DEFAULT_MIN_REFRESH_SECONDS",
    "DEFAULT_MOUNT_PATH",
    "DEFAULT_PATH_TRANSLATION",
    "MAX_FILE_NAME_BYTES",
    "MAX_MANIFEST_BYTES",
    "MAX_OBJECTS",
    "MAX_OBJECTS_YAML_BYTES",
    "MAX_PATH_BYTES",
    "MAX_REFRESH_SECONDS",
    "MAX_YAML_DEPTH",
    "OBJECT_TYPES",
    "SPEC_ENV_VAR",
    "SPC_FIELD_NAMES",
    "SPEC_VERSION",
    "STATUS_INJECTED",
    "FailoverObject",
    "FerryError",
    "FetchSpec",
    "GcpIdentity",
    "JmesPathEntry",
    "ManifestError",
    "Notify",
    "ObjectSpec",
    "ObjectType",
    "OutputFile",
    "MAX_MESSAGE_CHARS",
    "Problem",
    "bounded",
    "join_problems",
    "listed",
    "quote",
    "SpecError",
    "build_spec",
    "iter_annotation_keys",
    "file_names",
    "list_output_files",
    "needs_kube_api",
    "load_manifests",
    "parse_arn",
    "parse_duration",
    "parse_objects_yaml",
    "pick_secret_provider_class",
    "secret_provider_class_warnings",
    "spec_from_json",
    "spec_from_secret_provider_class",
    "spec_to_json",
    "translate_path",
]
