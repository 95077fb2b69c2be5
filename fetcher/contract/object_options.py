"""The object options users asked the other tools for: a role per object, whole JSON secrets, discovery.

These options change who signs (`roleArn`) and how many files an object writes (`expandJson`, `discover`), so their
checks sit apart from ASCP's own fields in `objects`. Each check appends a `Problem` naming the field; the file
names they give are checked again at fetch time (`render`), where the keys and the discovered names are known.
docs/configuration.md has the rules.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fetcher.contract.problems import Problem, kind_of, quote
from fetcher.contract.regions import partition_of

ROLE_ARN_RE = re.compile(r"^arn:(aws[a-z-]*):iam::(\d{12}):role/([\w+=,.@/-]{1,512})\Z")
# STS: ExternalId is 2 to 1224 characters of [\w+=,.@:/-].
EXTERNAL_ID_RE = re.compile(r"^[\w+=,.@:/-]{2,1224}\Z")
# Distinct (roleArn, externalId) pairs one spec may name: the fetcher keeps a session for each (fetcher/awsroles.py);
# past it, every refresh would drop and assume the roles again in turn.
MAX_ROLES = 32
# A discovery selects at most this many objects (default), and a spec may raise it to MAX_DISCOVERED.
DEFAULT_MAX_DISCOVERED = 50
MAX_DISCOVERED = 200
MAX_DISCOVERY_TAGS = 5
# A Secrets Manager name (prefix): its own charset, which leaves out the filter's negation mark "!".
SECRET_PREFIX_RE = re.compile(r"^[A-Za-z0-9/_+=.@-]{1,512}\Z")
TAG_TEXT_RE = re.compile(r"^[\w .:/=+@-]{1,256}\Z")
# The ServiceAccount's name, for AssumeRole's session tags (the webhook sets it with the downward API).
POD_SERVICE_ACCOUNT_ENV_VAR = "FERRY_POD_SERVICE_ACCOUNT"
OPTION_KEYS = ("roleArn", "externalId", "expandJson", "discover")
_DISCOVER_KEYS = ("recursive", "tags", "maxObjects")


@dataclass(frozen=True)
class AssumeRole:
    """A role to assume, from the pod's own identity, for one object."""

    role_arn: str
    external_id: str | None = None


@dataclass(frozen=True)
class Discovery:
    """Select many objects: SSM parameters under a path, or secrets by name prefix and tags."""

    recursive: bool = False
    # (key, value) pairs, all of which a secret must carry.
    tags: tuple[tuple[str, str], ...] = ()
    max_objects: int = DEFAULT_MAX_DISCOVERED


def check_role(entry: Mapping[str, Any], where: str, region: str | None, problems: list[Problem]) -> AssumeRole | None:
    raw, external = entry.get("roleArn"), entry.get("externalId")
    if raw is None:
        if external is not None:
            problems.append(Problem(f"{where}.externalId", "needs roleArn: an ExternalId goes with a role to assume"))
        return None
    if not isinstance(raw, str) or not ROLE_ARN_RE.match(raw):
        problems.append(
            Problem(
                f"{where}.roleArn",
                f"{quote(raw)} is not an IAM role ARN; expected arn:aws:iam::ACCOUNT:role/NAME",
            )
        )
        return None
    match = ROLE_ARN_RE.match(raw)
    assert match is not None
    expected = partition_of(region) if region else None
    if expected and match.group(1) != expected:
        problems.append(
            Problem(
                f"{where}.roleArn",
                f"is in the {match.group(1)} partition but the region {region} is in {expected}; "
                f"use arn:{expected}:iam::... or a region of {match.group(1)}",
            )
        )
        return None
    if external is not None and (not isinstance(external, str) or not EXTERNAL_ID_RE.match(external)):
        problems.append(Problem(f"{where}.externalId", "must be 2 to 1224 characters of letters, digits and +=,.@:/_-"))
        return None
    return AssumeRole(role_arn=raw, external_id=external)


def check_role_count(roles: list[AssumeRole | None], name: str, problems: list[Problem]) -> None:
    distinct = {role for role in roles if role is not None}
    if len(distinct) > MAX_ROLES:
        problems.append(
            Problem(
                name,
                f"name {len(distinct)} different roles; at most {MAX_ROLES} (with their externalId): read objects "
                "of one account with one role, or split the pod's secrets between classes",
            )
        )


def check_expand_json(entry: Mapping[str, Any], where: str, problems: list[Problem]) -> bool:
    raw = entry.get("expandJson")
    if raw is None or raw is False or raw == "false":
        return False
    if raw is True or raw == "true":
        if entry.get("jmesPath"):
            problems.append(Problem(f"{where}.expandJson", "writes every key already; remove jmesPath or expandJson"))
        return True
    problems.append(Problem(f"{where}.expandJson", f"must be true or false, got {kind_of(raw)}"))
    return False


def check_discovery(
    entry: Mapping[str, Any], where: str, object_type: str | None, problems: list[Problem]
) -> Discovery:
    raw = entry.get("discover")
    field = f"{where}.discover"
    if raw is True or raw == "true":
        raw = {}
    if not isinstance(raw, Mapping):
        problems.append(Problem(field, f"must be true or a mapping of recursive, tags, maxObjects; got {kind_of(raw)}"))
        return Discovery()
    for key in raw:
        if key not in _DISCOVER_KEYS:
            problems.append(
                Problem(f"{field}.{str(key)[:40]}", f"is not a discover field ({', '.join(_DISCOVER_KEYS)})")
            )
    recursive = raw.get("recursive", False)
    if recursive not in (True, False):
        problems.append(Problem(f"{field}.recursive", "must be true or false"))
        recursive = False
    if recursive and object_type != "ssmparameter":
        problems.append(Problem(f"{field}.recursive", "applies to SSM parameter paths only"))
    tags = _tags(raw.get("tags"), f"{field}.tags", object_type, problems)
    limit = raw.get("maxObjects", DEFAULT_MAX_DISCOVERED)
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_DISCOVERED:
        problems.append(Problem(f"{field}.maxObjects", f"must be a whole number from 1 to {MAX_DISCOVERED}"))
        limit = DEFAULT_MAX_DISCOVERED
    for key in ("objectVersion", "objectVersionLabel", "jmesPath", "failoverObject", "expandJson"):
        if entry.get(key) not in (None, False):
            problems.append(Problem(f"{where}.{key}", "does not apply to a discovery; remove it"))
    name = entry.get("objectName")
    if isinstance(name, str) and name.startswith("arn:"):
        problems.append(Problem(f"{where}.objectName", "is the path or name prefix of a discovery, not an ARN"))
    elif object_type == "ssmparameter" and isinstance(name, str) and not name.startswith("/"):
        problems.append(Problem(f"{where}.objectName", f"{quote(name)} is not a parameter path; start it with '/'"))
    elif object_type == "secretsmanager" and isinstance(name, str) and not SECRET_PREFIX_RE.match(name):
        # AWS's name filter reads a leading "!" as "every secret NOT under this prefix".
        problems.append(
            Problem(
                f"{where}.objectName",
                f"{quote(name[:80])} is not a secret name prefix: use letters, digits and /_+=.@- only",
            )
        )
    return Discovery(recursive=bool(recursive), tags=tags, max_objects=limit)


def _tags(raw: Any, field: str, object_type: str | None, problems: list[Problem]) -> tuple[tuple[str, str], ...]:
    if raw is None:
        return ()
    if object_type != "secretsmanager":
        problems.append(Problem(field, "applies to Secrets Manager discovery only"))
        return ()
    if not isinstance(raw, Mapping) or not raw or len(raw) > MAX_DISCOVERY_TAGS:
        problems.append(Problem(field, f"must be a mapping of 1 to {MAX_DISCOVERY_TAGS} tag keys to values"))
        return ()
    pairs: list[tuple[str, str]] = []
    for key, value in raw.items():
        if not isinstance(key, str) or not isinstance(value, str) or not TAG_TEXT_RE.match(key):
            problems.append(Problem(field, "tag keys and values must be text of letters, digits and ' .:/=+@_-'"))
            return ()
        if not TAG_TEXT_RE.match(value):
            problems.append(Problem(f"{field}.{key[:40]}", "must be 1 to 256 letters, digits and ' .:/=+@_-'"))
            return ()
        pairs.append((key, value))
    return tuple(sorted(pairs))


def object_options_to_wire(role: AssumeRole | None, expand_json: bool, discover: Discovery | None) -> dict[str, Any]:
    """The options' fields in FERRY_SPEC, in the user's spelling (read back by the same checks)."""
    wire: dict[str, Any] = {}
    if role is not None:
        wire["roleArn"] = role.role_arn
        if role.external_id:
            wire["externalId"] = role.external_id
    if expand_json:
        wire["expandJson"] = True
    if discover is not None:
        wire["discover"] = (
            {"maxObjects": discover.max_objects}
            | ({"recursive": True} if discover.recursive else {})
            | ({"tags": dict(discover.tags)} if discover.tags else {})
        )
    return wire
