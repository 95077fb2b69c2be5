"""``secretObjects`` as written in a SecretProviderClass or the ``ferry.dev/secret-objects`` annotation, checked.

A mistake in ``secretObjects`` must be refused at ``kubectl apply``, not found by the init container minutes
later, and the webhook image carries only ``fetcher.contract``: so the pure checks live here, and building and
applying the Secrets is `fetcher.secret_sync`'s job. Rules: docs/configuration.md ("Kubernetes Secrets").
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fetcher.contract.problems import FerryError, listed, quote

MANAGED_LABEL = "secrets-store.csi.k8s.io/managed"
# Ferry's own mark on the Secrets it creates; with its field manager, how it tells its Secrets from others'.
FERRY_LABEL = "ferry.dev/managed-by"
FERRY_LABEL_VALUE = "ferry"
# Downward API env vars the webhook injects into Ferry's containers when secretObjects are asked for
# (fieldRef metadata.name / metadata.uid / metadata.namespace): the pod that writes, and owns, the Secrets.
POD_NAME_ENV_VAR = "FERRY_POD_NAME"
POD_UID_ENV_VAR = "FERRY_POD_UID"
POD_NAMESPACE_ENV_VAR = "FERRY_POD_NAMESPACE"
TLS_CERT_KEY = "tls.crt"
TLS_KEY_KEY = "tls.key"
# The API server's limit on a Secret's data, and on all annotations of one object.
MAX_SECRET_DATA_BYTES = 1024 * 1024
MAX_ANNOTATIONS_BYTES = 256 * 1024
MAX_SECRET_OBJECTS = 64
MAX_DATA_ENTRIES = 256
MAX_PROBLEMS_SHOWN = 10

# The CSI driver's types Ferry writes, each with the API server's rule for its keys (see secret_sync).
SECRET_TYPES = (
    "Opaque",
    "kubernetes.io/basic-auth",
    "kubernetes.io/tls",
    "kubernetes.io/ssh-auth",
    "kubernetes.io/dockerconfigjson",
    "kubernetes.io/dockercfg",
)
# The driver's two other types, refused: the token controller fills a service-account-token Secret with a token
# for the ServiceAccount its annotation names (any one in the namespace), and a bootstrap token lets a node join.
# RBAC cannot restrict a Secret's type, so the check is here, at admission, and again in the fetcher.
DENIED_SECRET_TYPES = ("kubernetes.io/service-account-token", "bootstrap.kubernetes.io/token")


def denied_type_problem(secret_type: str, where: str) -> str:
    """Why a token type is refused, and what to write instead."""
    return (
        f"{where}.type: {secret_type} is refused: the cluster turns a Secret of this type into a token (for any "
        "ServiceAccount it names, or for joining nodes), so writing one would let the pod act as another identity; "
        "Ferry never writes token types. Use Opaque for key/value data"
    )


_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DATA_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
_LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_KNOWN_ENTRY_FIELDS = frozenset({"secretName", "type", "labels", "annotations", "data"})
_KNOWN_DATA_FIELDS = frozenset({"objectName", "key"})


class SecretObjectsError(FerryError, ValueError):
    """``secretObjects`` cannot be honoured; each problem names its field and says how to fix it."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = tuple(problems)
        shown = "; ".join(self.problems[:MAX_PROBLEMS_SHOWN])
        extra = len(self.problems) - MAX_PROBLEMS_SHOWN
        super().__init__(shown + (f"; and {extra} more" if extra > 0 else ""))


@dataclass(frozen=True)
class SecretObjectData:
    """One key of a synced Secret and the file (name after alias and path translation) it copies."""

    object_name: str
    key: str


@dataclass(frozen=True)
class SecretObject:
    """One ``secretObjects`` entry, checked."""

    secret_name: str
    type: str
    labels: tuple[tuple[str, str], ...]
    annotations: tuple[tuple[str, str], ...]
    data: tuple[SecretObjectData, ...]


# --- Parsing and checking the entries (no files needed: the webhook can run this at admission). ----------------


def parse_secret_objects(raw: object, field: str = "secretObjects") -> tuple[SecretObject, ...]:
    """Check the ``secretObjects`` list as written in an SPC; raise SecretObjectsError with every problem."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise SecretObjectsError([f"{field}: must be a list of entries with secretName, type and data"])
    if len(raw) > MAX_SECRET_OBJECTS:
        raise SecretObjectsError([f"{field}: at most {MAX_SECRET_OBJECTS} entries, got {len(raw)}"])
    problems: list[str] = []
    objects: list[SecretObject] = []
    seen_names: dict[str, int] = {}
    for index, entry in enumerate(raw):
        where = f"{field}[{index}]"
        parsed = _parse_entry(entry, where, problems)
        if parsed is None:
            continue
        if parsed.secret_name in seen_names:
            problems.append(
                f"{where}.secretName: {quote(parsed.secret_name)} is already used by "
                f"{field}[{seen_names[parsed.secret_name]}]; merge the two entries' data into one"
            )
            continue
        seen_names[parsed.secret_name] = index
        objects.append(parsed)
    if problems:
        raise SecretObjectsError(problems)
    return tuple(objects)


def _parse_entry(entry: object, where: str, problems: list[str]) -> SecretObject | None:
    if not isinstance(entry, Mapping):
        problems.append(f"{where}: must be a mapping with secretName, type and data")
        return None
    start = len(problems)
    unknown = sorted(str(key) for key in entry if key not in _KNOWN_ENTRY_FIELDS)
    if unknown:
        problems.append(
            f"{where}: unknown field(s) {listed(unknown)}; the fields are secretName, type, labels, annotations, data"
        )
    name = entry.get("secretName")
    if not isinstance(name, str) or not name:
        problems.append(f"{where}.secretName: required, the name of the Kubernetes Secret to write")
    elif len(name) > 253 or not _DNS_SUBDOMAIN.match(name):
        problems.append(
            f"{where}.secretName: {quote(name)} is not a valid Secret name (lower-case letters, digits, '-' and '.', "
            "at most 253 characters, starting and ending with a letter or digit)"
        )
    secret_type = entry.get("type")
    if secret_type is None or secret_type == "":
        problems.append(f"{where}.type: required; use Opaque for plain key/value data")
    elif secret_type in DENIED_SECRET_TYPES:
        problems.append(denied_type_problem(str(secret_type), where))
    elif secret_type not in SECRET_TYPES:
        problems.append(f"{where}.type: {quote(secret_type)} is not supported; use one of {', '.join(SECRET_TYPES)}")
    labels = _string_map(entry.get("labels"), f"{where}.labels", problems)
    annotations = _string_map(entry.get("annotations"), f"{where}.annotations", problems)
    for key, value in labels:
        _check_label(key, value, f"{where}.labels", problems)
    for key, _ in annotations:
        _check_qualified_name(key, f"{where}.annotations", problems)
    if sum(len(key) + len(value) for key, value in annotations) > MAX_ANNOTATIONS_BYTES:
        problems.append(f"{where}.annotations: larger than {MAX_ANNOTATIONS_BYTES} bytes in total")
    data = _parse_data(entry.get("data"), f"{where}.data", problems)
    if len(problems) > start:
        return None
    assert isinstance(name, str) and isinstance(secret_type, str)
    return SecretObject(name, secret_type, labels, annotations, data)


def _parse_data(raw: object, where: str, problems: list[str]) -> tuple[SecretObjectData, ...]:
    if not isinstance(raw, list) or not raw:
        problems.append(f"{where}: required, a non-empty list of {{objectName, key}}")
        return ()
    if len(raw) > MAX_DATA_ENTRIES:
        problems.append(f"{where}: at most {MAX_DATA_ENTRIES} entries, got {len(raw)}")
        return ()
    items: list[SecretObjectData] = []
    keys: dict[str, int] = {}
    for index, item in enumerate(raw):
        at = f"{where}[{index}]"
        if not isinstance(item, Mapping):
            problems.append(f"{at}: must be a mapping with objectName and key")
            continue
        unknown = sorted(str(key) for key in item if key not in _KNOWN_DATA_FIELDS)
        if unknown:
            problems.append(f"{at}: unknown field(s) {listed(unknown)}; the fields are objectName and key")
        object_name = item.get("objectName")
        key = item.get("key")
        if not isinstance(object_name, str) or not object_name.strip():
            problems.append(f"{at}.objectName: required, the file name (after objectAlias and path translation)")
        if not isinstance(key, str) or not key.strip():
            problems.append(f"{at}.key: required, the key in the Secret's data")
        elif not _is_data_key(key.strip()):
            problems.append(
                f"{at}.key: {quote(key)} is not a valid Secret key (letters, digits, '-', '_' and '.', at most 253 "
                "characters, not '.' or '..' and not starting with '..')"
            )
        elif key.strip() in keys:
            problems.append(f"{at}.key: {quote(key)} is already set by {where}[{keys[key.strip()]}]; keys must differ")
        else:
            keys[key.strip()] = index
        if isinstance(object_name, str) and isinstance(key, str) and object_name.strip() and key.strip():
            items.append(SecretObjectData(object_name.strip(), key.strip()))
    return tuple(items)


# --- Small helpers for bounded messages. --------------------------------------------------------------------------


def _string_map(raw: object, where: str, problems: list[str]) -> tuple[tuple[str, str], ...]:
    if raw is None:
        return ()
    if not isinstance(raw, Mapping) or not all(isinstance(k, str) and isinstance(v, str) for k, v in raw.items()):
        problems.append(f"{where}: must be a mapping of strings to strings (quote numbers and booleans)")
        return ()
    return tuple(sorted(raw.items()))


def _check_label(key: str, value: str, where: str, problems: list[str]) -> None:
    _check_qualified_name(key, where, problems)
    if key == MANAGED_LABEL and value != "true":
        problems.append(f'{where}: {MANAGED_LABEL} is set to "true" by Ferry, as by the CSI driver; remove it')
    elif key == FERRY_LABEL and value != FERRY_LABEL_VALUE:
        problems.append(f"{where}: {FERRY_LABEL} is Ferry's mark on the Secrets it creates; remove it")
    elif len(value) > 63 or (value and not _LABEL_NAME.match(value)):
        problems.append(
            f"{where}[{quote(key)}]: the value is not a valid label value (at most 63 letters, digits, '-', '_' "
            "or '.', starting and ending with a letter or digit)"
        )


def _check_qualified_name(key: str, where: str, problems: list[str]) -> None:
    prefix, _, name = key.rpartition("/")
    if (
        (prefix and (len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix)))
        or len(name) > 63
        or not _LABEL_NAME.match(name)
    ):
        problems.append(
            f"{where}: {quote(key)} is not a valid key (an optional DNS prefix and '/', then at most 63 letters, "
            "digits, '-', '_' or '.')"
        )


def _is_data_key(key: str) -> bool:
    return len(key) <= 253 and bool(_DATA_KEY.match(key)) and key not in (".", "..") and not key.startswith("..")


def secret_object_to_wire(obj: SecretObject) -> dict[str, Any]:
    """One entry as the CSI driver spells it (for the spec's JSON, and for ``parse_secret_objects`` again)."""
    wire: dict[str, Any] = {
        "secretName": obj.secret_name,
        "type": obj.type,
        "data": [{"objectName": item.object_name, "key": item.key} for item in obj.data],
    }
    if obj.labels:
        wire["labels"] = dict(obj.labels)
    if obj.annotations:
        wire["annotations"] = dict(obj.annotations)
    return wire
