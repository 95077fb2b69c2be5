"""Checks of ASCP's `objects` list: names, types, ARNs, aliases, jmesPath, failover, file names.

The objects list is the part of a request a user writes by hand and the part that decides which paths the fetcher
writes, so it carries most of the rules (traversal, collisions after path translation, look-alike slashes). Each
check appends a `Problem` naming the entry's field.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from typing import Any, cast

from fetcher.contract.model import (
    DEFAULT_FILE_PERMISSION,
    MAX_OBJECTS,
    OBJECT_TYPES,
    REGION_RE,
    FailoverObject,
    JmesPathEntry,
    ObjectSpec,
    ObjectType,
)
from fetcher.contract.object_options import (
    OPTION_KEYS,
    check_discovery,
    check_expand_json,
    check_role,
    check_role_count,
)
from fetcher.contract.paths import check_file_component
from fetcher.contract.problems import Problem, kind_of, quote

_ARN_SERVICE_TO_TYPE: dict[str, ObjectType] = {"secretsmanager": "secretsmanager", "ssm": "ssmparameter"}
_ACCOUNT_RE = re.compile(r"^\d{12}$")
_PERMISSION_RE = re.compile(r"^0[0-7]{3}$")
_OBJECT_KEYS = (
    "objectName",
    "objectType",
    "objectAlias",
    "objectVersion",
    "objectVersionLabel",
    "filePermission",
    "jmesPath",
    "failoverObject",
    *OPTION_KEYS,
)
_JMES_KEYS = ("path", "objectAlias", "filePermission")
_FAILOVER_KEYS = ("objectName", "objectVersion", "objectVersionLabel")


def parse_arn(text: str) -> tuple[str, str, str, str] | None:
    """(partition, service, region, resource) of an ARN, or None if it does not parse."""
    parts = text.split(":", 5)
    if len(parts) != 6 or parts[0] != "arn":
        return None
    _, partition, service, region, account, resource = parts
    if not partition.startswith("aws") or not service or not REGION_RE.match(region):
        return None
    if not _ACCOUNT_RE.match(account) or not resource:
        return None
    return partition, service, region, resource


def check_objects(
    raw: Any, name: str, region: str | None, failover_region: str | None, problems: list[Problem]
) -> list[tuple[int, ObjectSpec]]:
    if raw is None:
        problems.append(Problem(name, "is missing; list at least one object with objectName"))
        return []
    if not isinstance(raw, list | tuple):
        problems.append(Problem(name, f"must be a list of objects, got {kind_of(raw)}"))
        return []
    if not raw:
        problems.append(Problem(name, "is empty; list at least one object with objectName"))
        return []
    if len(raw) > MAX_OBJECTS:
        problems.append(Problem(name, f"has {len(raw)} objects; the limit is {MAX_OBJECTS}"))
        return []
    # Like ASCP, the same object may be listed more than once (AWSCURRENT and AWSPREVIOUS side by side): the
    # rule is on file names, which `fetcher.contract.paths.check_file_names` keeps unique after path translation.
    parsed: list[tuple[int, ObjectSpec]] = []
    for index, entry in enumerate(raw):
        where = f"{name}[{index}]"
        obj = _check_object(entry, where, region, failover_region, problems)
        if obj is None:
            continue
        parsed.append((index, obj))
    check_role_count([obj.role for _, obj in parsed], name, problems)
    return parsed


def _check_object(
    entry: Any, where: str, region: str | None, failover_region: str | None, problems: list[Problem]
) -> ObjectSpec | None:
    if entry is None:
        problems.append(Problem(where, "is empty (a lone '-'); remove it or give it an objectName"))
        return None
    if not isinstance(entry, Mapping):
        problems.append(Problem(where, f"must be a mapping with objectName, got {kind_of(entry)}"))
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
        check_file_component(alias, f"{where}.objectAlias", problems)
    jmes = _check_jmes(entry.get("jmesPath"), f"{where}.jmesPath", object_type, problems)
    failover = _check_failover(
        entry.get("failoverObject"), where, object_type, alias, version, failover_region, problems
    )
    role = check_role(entry, where, region, problems)
    expand_json = check_expand_json(entry, where, problems)
    discover = check_discovery(entry, where, object_type, problems) if "discover" in entry else None
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
        role=role,
        expand_json=expand_json,
        discover=discover,
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
                Problem(f"{where}.objectType", f"{quote(raw_type)} is not secretsmanager or ssmparameter{hint}")
            )
            return None
    if name.startswith("arn:"):
        arn = parse_arn(name)
        if arn is None:
            problems.append(
                Problem(
                    f"{where}.{name_field}",
                    f"{quote(name)} is not a valid ARN; expected arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME "
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
                    f"ARN service {quote(service)} with resource {resource.split(':')[0].split('/')[0]!r} is not a "
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
        problems.append(Problem(where, f"must be a list of {{path, objectAlias}}, got {kind_of(raw)}"))
        return ()
    entries: list[JmesPathEntry] = []
    for index, item in enumerate(raw):
        here = f"{where}[{index}]"
        if not isinstance(item, Mapping):
            problems.append(Problem(here, f"must be a mapping with path and objectAlias, got {kind_of(item)}"))
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
            check_file_component(alias, f"{here}.objectAlias", problems)
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
        problems.append(Problem(here, f"must be a mapping with objectName, got {kind_of(raw)}"))
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
        problems.append(Problem(f"{where}.{key}", f"must be a string, got {kind_of(value)}; quote it"))
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
        problems.append(Problem(where, f'{quote(value)} must be 4 octal digits like "0644" or "0600"'))
        return None
    return int(value, 8)


def _jmespath_syntax_error(path: str) -> str | None:
    """Check JMESPath syntax without importing jmespath's evaluator at admission hot paths.

    Not cached here: the spec model holds no state. The webhook caches whole specs (webhook/policy/memo.py), and
    jmespath's parser keeps its own recent expressions.
    """
    import jmespath.exceptions
    import jmespath.parser

    try:
        jmespath.parser.Parser().parse(path)
    except jmespath.exceptions.ParseError as exc:
        hint = ""
        if "-" in path and '"' not in path:
            hint = '; a key with "-" must be quoted, e.g. "db-user" (in YAML: path: \'"db-user"\')'
        return f"{quote(path)} is not a valid JMESPath expression ({exc.msg}){hint}"
    return None
