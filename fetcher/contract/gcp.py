"""The GCP provider's `secrets` list and Workload Identity settings, checked into the one spec model.

Teams bring SecretProviderClasses written for the GCP provider (v1.15) of the Secrets Store CSI Driver; this
reads them into `ObjectSpec`s, stricter than the provider, every problem naming the entry's field. Imported
only for provider: gcp, so an AWS pod never loads it. Rules: docs/gke.md.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from fetcher.contract.annotations import (
    ANNOTATION_GCP_IDENTITY_PROVIDER,
    ANNOTATION_GCP_SERVICE_ACCOUNT,
    ANNOTATION_GCP_WORKLOAD_POOL,
)
from fetcher.contract.model import DEFAULT_FILE_PERMISSION, MAX_OBJECTS, GcpIdentity, ObjectSpec, ObjectType
from fetcher.contract.paths import unsafe_path_reason
from fetcher.contract.problems import Problem, kind_of, quote

# Where Ferry's containers find the projected ServiceAccount token whose audience is the workload pool.
GCP_TOKEN_DIR = "/var/run/secrets/ferry.dev/gcp"
GCP_TOKEN_PATH = f"{GCP_TOKEN_DIR}/token"

SECRET_KEYS = ("resourceName", "path", "fileName", "mode", "extractJSONKey", "extractYAMLKey")
# `auth` values: the pod's own identity is the only one Ferry uses.
POD_AUTH = ("", "pod-adc")
MAX_EXTRACT_KEY_CHARS = 256

_PROJECT = r"(?:[a-z][a-z0-9.-]{0,62}:)?[a-z][a-z0-9-]{4,28}[a-z0-9]|[1-9][0-9]{0,19}"
_LOCATION = r"[a-z][a-z0-9-]{1,29}"
_SECRET_ID = r"[A-Za-z0-9_-]{1,255}"
_VERSION = r"[1-9][0-9]{0,18}|latest|[A-Za-z][A-Za-z0-9_-]{0,62}"
_PARAMETER_ID = r"[A-Za-z0-9_-]{1,63}"
GLOBAL_SECRET_RE = re.compile(rf"^projects/({_PROJECT})/secrets/({_SECRET_ID})/versions/({_VERSION})\Z")
REGIONAL_SECRET_RE = re.compile(
    rf"^projects/({_PROJECT})/locations/({_LOCATION})/secrets/({_SECRET_ID})/versions/({_VERSION})\Z"
)
PARAMETER_RE = re.compile(
    rf"^projects/({_PROJECT})/locations/({_LOCATION})/parameters/({_PARAMETER_ID})/versions/({_PARAMETER_ID})\Z"
)
_WORKLOAD_POOL_RE = re.compile(r"^[a-z][a-z0-9-]{4,28}[a-z0-9]\.svc\.id\.goog\Z")
_IDENTITY_PROVIDER_RE = re.compile(
    r"^https://(?:container\.googleapis\.com/v1/projects/[a-z0-9-]{1,63}/locations/[a-z0-9-]{1,40}/clusters/"
    r"[a-z0-9-]{1,63}|gkehub\.googleapis\.com/projects/[a-z0-9-]{1,63}/locations/global/memberships/"
    r"[a-z0-9-]{1,63})\Z"
)
_SERVICE_ACCOUNT_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}@[a-z0-9][a-z0-9.-]{0,99}\.gserviceaccount\.com\Z")
# The annotation GKE's own metadata server reads on a Kubernetes ServiceAccount: the Google service account
# its pods act as. The webhook reads it from its ServiceAccount view (docs/gke.md, section 2).
KSA_GCP_SERVICE_ACCOUNT = "iam.gke.io/gcp-service-account"
_NAME_HELP = (
    "write projects/PROJECT/secrets/SECRET/versions/VERSION, projects/PROJECT/locations/LOCATION/secrets/"
    "SECRET/versions/VERSION, or a Parameter Manager projects/PROJECT/locations/LOCATION/parameters/NAME/"
    "versions/VERSION; VERSION is a number, latest or an alias"
)


def parse_resource_name(name: str) -> tuple[ObjectType, str, str, str, str] | None:
    """(type, project, location or "global", secret or parameter, version) of a resource name, or None."""
    if match := GLOBAL_SECRET_RE.match(name):
        return "gcpsecret", match[1], "global", match[2], match[3]
    if (match := REGIONAL_SECRET_RE.match(name)) and match[2] != "global":
        return "gcpsecret", match[1], match[2], match[3], match[4]
    if match := PARAMETER_RE.match(name):
        return "gcpparameter", match[1], match[2], match[3], match[4]
    return None


def is_pinned(obj: ObjectSpec) -> bool:
    """A numbered secret version never changes its bytes; latest and aliases can move."""
    parsed = parse_resource_name(obj.object_name)
    return parsed is not None and parsed[0] == "gcpsecret" and parsed[4].isdigit()


def check_request(
    raw: Sequence[Any] | None, identity: Mapping[str, Any] | None, names: Mapping[str, str], problems: list[Problem]
) -> tuple[list[tuple[int, ObjectSpec]], GcpIdentity]:
    """The objects (with their indices) and the Workload Identity of a provider: gcp request."""
    return check_secrets(raw, names["objects"], problems), check_identity(identity, names, problems)


def check_secrets(raw: Sequence[Any] | None, name: str, problems: list[Problem]) -> list[tuple[int, ObjectSpec]]:
    """Every entry of the provider's `secrets` list as an ObjectSpec (with its index); problems appended."""
    if raw is None:
        problems.append(Problem(name, "is missing; list the secrets to mount, as for the GCP provider"))
        return []
    if not isinstance(raw, Sequence) or isinstance(raw, str | bytes):
        problems.append(Problem(name, f"must be a list of secrets (each with resourceName), got {kind_of(raw)}"))
        return []
    if not raw:
        problems.append(Problem(name, "is empty; list at least one secret with resourceName"))
        return []
    if len(raw) > MAX_OBJECTS:
        problems.append(Problem(name, f"lists {len(raw)} secrets; the limit is {MAX_OBJECTS}"))
        return []
    parsed: list[tuple[int, ObjectSpec]] = []
    owners: dict[str, str] = {}
    for index, entry in enumerate(raw):
        where = f"{name}[{index}]"
        obj = _check_entry(entry, where, problems)
        if obj is None:
            continue
        path_field = f"{where}.{'path' if isinstance(entry, Mapping) and entry.get('path') else 'fileName'}"
        path = obj.object_alias or ""
        if path in owners:
            problems.append(
                Problem(
                    path_field, f"{quote(path)} is already written by {owners[path]}; give each secret its own path"
                )
            )
            continue
        owners[path] = path_field
        parsed.append((index, obj))
    for path, origin in owners.items():  # "a" as a file and "a/b" below it cannot both exist
        parts = path.split("/")
        for depth in range(1, len(parts)):
            if (prefix := "/".join(parts[:depth])) in owners:
                problems.append(
                    Problem(origin, f"writes below {quote(prefix)}, which {owners[prefix]} writes as a file")
                )
    return parsed


def _check_entry(entry: Any, where: str, problems: list[Problem]) -> ObjectSpec | None:
    if not isinstance(entry, Mapping):
        problems.append(Problem(where, f"must be a mapping with resourceName and path, got {kind_of(entry)}"))
        return None
    before = len(problems)
    for key in entry:
        if key not in SECRET_KEYS:
            close = difflib.get_close_matches(str(key), SECRET_KEYS, n=1, cutoff=0.6)
            hint = f"did you mean {close[0]}?" if close else f"known keys: {', '.join(SECRET_KEYS)}"
            if key in ("objectName", "objectType"):  # an AWS (ASCP) entry in a GCP list
                hint = "it is an AWS key; this list is in the GCP provider's format (resourceName, path)"
            problems.append(Problem(f"{where}.{quote(key, 40)}", f"is not a known key; {hint}"))
    resource = _text(entry, "resourceName", where, problems)
    parsed = parse_resource_name(resource) if resource else None
    if resource is None:
        if "resourceName" not in entry:
            problems.append(Problem(f"{where}.resourceName", f"is missing; {_NAME_HELP}"))
    elif parsed is None:
        problems.append(Problem(f"{where}.resourceName", f"{quote(resource)} does not parse; {_NAME_HELP}"))
    path = _text(entry, "path", where, problems) or _text(entry, "fileName", where, problems)
    if path is None:
        problems.append(Problem(f"{where}.path", "is missing; name the file to write, e.g. path: db-password"))
    elif reason := unsafe_path_reason(path):
        field = "path" if entry.get("path") else "fileName"
        problems.append(Problem(f"{where}.{field}", f"{quote(path)} {reason}; use a relative path like db-password"))
    mode = _mode(entry.get("mode"), f"{where}.mode", problems)
    json_key = _text(entry, "extractJSONKey", where, problems)
    yaml_key = _text(entry, "extractYAMLKey", where, problems)
    if json_key and yaml_key:
        problems.append(Problem(f"{where}.extractYAMLKey", "is set with extractJSONKey; keep one of them"))
    for key, value in (("extractJSONKey", json_key), ("extractYAMLKey", yaml_key)):
        if value is not None and len(value) > MAX_EXTRACT_KEY_CHARS:
            problems.append(Problem(f"{where}.{key}", f"is longer than {MAX_EXTRACT_KEY_CHARS} characters"))
    if len(problems) > before or parsed is None or resource is None or path is None:
        return None
    return ObjectSpec(
        object_name=resource,
        object_type=parsed[0],
        object_alias=path,
        file_permission=DEFAULT_FILE_PERMISSION if mode is None else mode,
        extract_json_key=json_key,
        extract_yaml_key=yaml_key,
    )


def _text(entry: Mapping[str, Any], key: str, where: str, problems: list[Problem]) -> str | None:
    value = entry.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        problems.append(Problem(f"{where}.{key}", f"must be a string, got {kind_of(value)}; quote it"))
        return None
    if not value.isprintable():
        problems.append(Problem(f"{where}.{key}", "contains a control character"))
        return None
    return value


def _mode(value: Any, where: str, problems: list[Problem]) -> int | None:
    """The provider's mode: an int 0..511 (YAML reads 0400 as octal), or Ferry's "0400" string form."""
    if value is None:
        return None
    if isinstance(value, str) and re.fullmatch(r"0o?[0-7]{3}", value):
        return int(value.replace("o", ""), 8)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 0o777:
        return value
    problems.append(
        Problem(where, f"{quote(value)} is not a file mode; write an octal mode from 0000 to 0777, like 0440")
    )
    return None


def check_auth(value: Any, name: str, problems: list[Problem]) -> None:
    """`auth`: pod-adc (or nothing) is the pod's own identity; every other value means a shared one."""
    if value is None or value in POD_AUTH:
        return
    if value == "provider-adc":
        reason = "uses the identity of the provider's DaemonSet, shared by every pod on the node"
    else:
        reason = f"{quote(value)} is not an identity Ferry knows"
    problems.append(
        Problem(name, f"{reason}; Ferry fetches only with each pod's own Workload Identity: remove auth or set pod-adc")
    )


def check_identity(raw: Mapping[str, Any] | None, names: Mapping[str, str], problems: list[Problem]) -> GcpIdentity:
    """The Workload Identity settings the fetcher exchanges its token with; each named where it was set."""
    raw = raw or {}
    pool, provider, account = (raw.get(key) or None for key in ("workloadPool", "identityProvider", "serviceAccount"))
    if unread := raw.get("serviceAccountUnread"):
        problems.append(Problem(names.get("serviceAccountUnread", KSA_GCP_SERVICE_ACCOUNT), str(unread)))
    fix = names.get("gcpSettings", "the webhook's FERRY_GCP_PROJECT, FERRY_GCP_LOCATION and FERRY_GCP_CLUSTER")
    if pool is None or provider is None:
        problems.append(
            Problem(
                names.get("workloadPool", "workloadPool"),
                f"GKE Workload Identity is not configured for this pod; set {fix}",
            )
        )
    for key, value, pattern, example in (
        ("workloadPool", pool, _WORKLOAD_POOL_RE, "PROJECT.svc.id.goog"),
        (
            "identityProvider",
            provider,
            _IDENTITY_PROVIDER_RE,
            "https://container.googleapis.com/v1/projects/P/locations/L/clusters/C",
        ),
        ("serviceAccount", account, _SERVICE_ACCOUNT_RE, "NAME@PROJECT.iam.gserviceaccount.com"),
    ):
        if value is not None and (not isinstance(value, str) or not pattern.match(value)):
            problems.append(Problem(names.get(key, key), f"{quote(value)} is not valid; write it like {example}"))
    return GcpIdentity(
        workload_pool=pool if isinstance(pool, str) else "",
        identity_provider=provider if isinstance(provider, str) else "",
        service_account=account if isinstance(account, str) else None,
    )


def secret_to_wire(obj: ObjectSpec) -> dict[str, Any]:
    """An object in the provider's own format, which is also its canonical JSON."""
    wire: dict[str, Any] = {"resourceName": obj.object_name, "path": obj.object_alias}
    if obj.file_permission != DEFAULT_FILE_PERMISSION:
        wire["mode"] = obj.file_permission
    if obj.extract_json_key:
        wire["extractJSONKey"] = obj.extract_json_key
    if obj.extract_yaml_key:
        wire["extractYAMLKey"] = obj.extract_yaml_key
    return wire


def identity_to_wire(identity: GcpIdentity) -> dict[str, str]:
    wire = {"workloadPool": identity.workload_pool, "identityProvider": identity.identity_provider}
    if identity.service_account:
        wire["serviceAccount"] = identity.service_account
    return wire


class KsaAnnotation(NamedTuple):
    """The pod's Kubernetes ServiceAccount and its KSA_GCP_SERVICE_ACCOUNT annotation, as the webhook read it."""

    name: str
    # The annotation's value (cut to a bound far above any valid one); None: the ServiceAccount has none.
    value: str | None
    # Why the ServiceAccount could not be read (then `value` is None); None when it was.
    unread: str | None = None
    # No later read can change this answer (the name is not a ServiceAccount's, or the webhook may not read
    # ServiceAccounts): an answer made with it is as good as one made with a value.
    final: bool = False

    @property
    def settled(self) -> bool:
        """Read, or unread for good: what the admission memo may key an answer on."""
        return self.unread is None or self.final


def workload_identity(
    pod_annotations: Mapping[str, str],
    namespace_annotations: Mapping[str, str],
    namespace: str,
    defaults: Mapping[str, str | None],
    ksa: KsaAnnotation | None = None,
) -> tuple[tuple[tuple[str, str | None], ...], dict[str, str], list[str]]:
    """(settings, field labels, warnings) of a pod's Workload Identity, for the webhook's resolve stage.

    Pool and provider: the namespace's annotations over the webhook's settings (`defaults`), never the pod's
    (a pod's value gets a warning). The Google service account: the pod's ferry.dev/gcp-service-account, then
    the namespace's, then the pod's ServiceAccount's iam.gke.io/gcp-service-account (`ksa`, None when the
    webhook does not read ServiceAccounts). Any of them grants only what Google's workloadIdentityUser
    binding for this pod's NAMESPACE/KSA allows.
    """
    identity = dict(defaults)
    labels = {
        "gcpSettings": (
            "the webhook's FERRY_GCP_PROJECT, FERRY_GCP_LOCATION and FERRY_GCP_CLUSTER (chart values fetcher.gcp.*), "
            f"or namespace annotations {ANNOTATION_GCP_WORKLOAD_POOL} and {ANNOTATION_GCP_IDENTITY_PROVIDER}"
        ),
        "workloadPool": "FERRY_GCP_WORKLOAD_POOL (a webhook setting)",
        "identityProvider": "FERRY_GCP_IDENTITY_PROVIDER (a webhook setting)",
        "serviceAccount": ANNOTATION_GCP_SERVICE_ACCOUNT,
    }
    warnings: list[str] = []
    for key, annotation in (
        ("workloadPool", ANNOTATION_GCP_WORKLOAD_POOL),
        ("identityProvider", ANNOTATION_GCP_IDENTITY_PROVIDER),
    ):
        if value := namespace_annotations.get(annotation):
            identity[key] = value
            labels[key] = f"namespace {namespace} annotation {annotation}"
        if annotation in pod_annotations:
            warnings.append(
                f"{annotation} is a namespace annotation (the cluster's Workload Identity); ignored on a pod"
            )
    account = pod_annotations.get(ANNOTATION_GCP_SERVICE_ACCOUNT)
    where = f"the pod's {ANNOTATION_GCP_SERVICE_ACCOUNT}"
    if not account and (account := namespace_annotations.get(ANNOTATION_GCP_SERVICE_ACCOUNT)):
        labels["serviceAccount"] = f"namespace {namespace} annotation {ANNOTATION_GCP_SERVICE_ACCOUNT}"
        where = labels["serviceAccount"]
    if ksa is not None:
        ksa_label = f"ServiceAccount {namespace}/{ksa.name} annotation {KSA_GCP_SERVICE_ACCOUNT}"
        if account and ksa.value and ksa.value != account:
            warnings.append(f"{ksa_label} names {quote(ksa.value)}; {where} overrides it with {quote(account)}")
        elif not account and ksa.value:
            account, labels["serviceAccount"] = ksa.value, ksa_label
        elif not account and ksa.unread:
            identity["serviceAccountUnread"] = ksa.unread
            labels["serviceAccountUnread"] = ksa_label
    identity["serviceAccount"] = account or None
    return tuple(sorted(identity.items())), labels, warnings
