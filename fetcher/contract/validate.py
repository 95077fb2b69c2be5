"""From raw strings (annotations, SecretProviderClass parameters) to a checked `FetchSpec`.

A mistake is cheapest at admission, where the user sees it at `kubectl apply`: `build_spec` runs every check,
collects every problem before raising, and names each field the way the user wrote it, so one round trip fixes
them all. The objects list has its own module (`fetcher.contract.objects`); this one holds the request-wide fields.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from fetcher.contract.endpoints import EndpointRequest, endpoints_for
from fetcher.contract.formats import DOTENV_FORMAT, FormatError, env_keys, parse_output_formats
from fetcher.contract.model import (
    DEFAULT_MIN_REFRESH_SECONDS,
    DEFAULT_PATH_TRANSLATION,
    MAX_OBJECTS_YAML_BYTES,
    MAX_REFRESH_SECONDS,
    MAX_YAML_DEPTH,
    PROVIDERS,
    REGION_RE,
    FetchSpec,
    Notify,
    list_output_files,
)
from fetcher.contract.objects import check_objects
from fetcher.contract.paths import check_file_names
from fetcher.contract.problems import Problem, SpecError, kind_of, listed, quote
from fetcher.contract.regions import region_problem
from fetcher.contract.secret_objects import (
    MAX_PROBLEMS_SHOWN,
    SecretObject,
    SecretObjectsError,
    parse_secret_objects,
)

_DURATION_RE = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")
_SIGNALS = ("SIGHUP", "SIGINT", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGTERM", "SIGWINCH")


# Inputs whose problems name the field as the caller spells it (`field_names`), else by these names.
_FIELDS = (
    "objects region failoverRegion pathTranslation refreshInterval notifyUrl notifySignal fileUid fileGid "
    "secretObjects outputFormats provider endpoints"
).split()


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
    secret_objects: str | Sequence[Any] | None = None,
    output_formats: str | Mapping[str, str] | None = None,
    endpoints: EndpointRequest | None = None,
    provider: str | None = None,
    gcp_identity: Mapping[str, Any] | None = None,
) -> FetchSpec:
    """Validate raw inputs (strings as they appear in annotations or an SPC) into a FetchSpec.

    `objects` is ASCP's YAML string, or an already parsed list. `field_names`
    maps the logical names (region, failoverRegion, pathTranslation,
    refreshInterval, objects, notifyUrl, notifySignal) to what the user wrote,
    e.g. ``ferry.dev/region``, so messages name the annotation they must edit.
    Every problem is collected before raising, so one round trip fixes them all.
    """
    names = {**{field: field for field in _FIELDS}, **(field_names or {})}
    problems: list[Problem] = []
    gcp = provider == "gcp"
    if provider not in (None, "", *PROVIDERS):
        problems.append(Problem(names["provider"], f"{quote(provider)} is not aws or gcp"))
    primary = None if gcp else _check_region(region, names["region"], problems, required=True)
    failover = None if gcp else _check_region(failover_region, names["failoverRegion"], problems, required=False)
    if primary and failover and primary == failover:
        problems.append(
            Problem(
                names["failoverRegion"],
                f"is the same as the region ({primary}); name a different region, or remove it to use no failover",
            )
        )
    translation = None if gcp else _check_path_translation(path_translation, names["pathTranslation"], problems)
    refresh = _check_refresh(refresh_interval, names["refreshInterval"], min_refresh_seconds, problems)
    notify = _check_notify(notify_url, notify_signal, names, problems)
    for label, value in (("fileUid", file_uid), ("fileGid", file_gid)):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
            problems.append(Problem(names[label], "must be a non-negative integer (a uid/gid)"))

    raw_objects: Sequence[Any] | None
    if isinstance(objects, str):
        try:
            what = "secrets (start each with '- resourceName:')" if gcp else "objects (start each with '- objectName:')"
            raw_objects = parse_objects_yaml(objects, names["objects"], what)
        except SpecError as exc:
            raise SpecError([*problems, *exc.problems]) from None
    else:
        raw_objects = objects
    if gcp:  # the GCP provider's format (loaded only for it); its paths are file names as given
        from fetcher.contract.gcp import check_request

        positioned, identity = check_request(raw_objects, gcp_identity, names, problems)
    else:
        positioned, identity = check_objects(raw_objects, names["objects"], primary, failover, problems), None
    parsed = [obj for _, obj in positioned]
    if parsed and not gcp:
        check_file_names(parsed, [index for index, _ in positioned], translation, names["objects"], problems)
    formats = _check_output_formats(output_formats, names["outputFormats"], problems)
    synced = _check_secret_objects(secret_objects, names["secretObjects"], problems)
    pod_endpoints = endpoints_for(endpoints, names["endpoints"], gcp, problems)
    if parsed and not problems:
        files = [out.name for out in list_output_files(parsed, translation)]
        _check_documents(files, formats, names["outputFormats"], problems)
        _check_synced_files(synced, [*files, *(name for _, name in formats)], names["secretObjects"], problems)

    if problems:
        raise SpecError(problems)
    return FetchSpec(
        objects=tuple(parsed),
        region=primary or "",
        failover_region=failover,
        path_translation=translation,
        refresh_seconds=refresh,
        file_uid=file_uid,
        file_gid=file_gid,
        notify=notify,
        secret_objects=synced,
        output_formats=formats,
        endpoints=pod_endpoints,
        provider="gcp" if gcp else "aws",
        gcp=identity,
    )


def _check_output_formats(raw: Any, name: str, problems: list[Problem]) -> tuple[tuple[str, str], ...]:
    try:
        return parse_output_formats(raw)
    except FormatError as exc:
        problems.append(Problem(name, str(exc)))
        return ()


def _check_secret_objects(raw: Any, name: str, problems: list[Problem]) -> tuple[SecretObject, ...]:
    if raw is None or raw == "":
        return ()
    if isinstance(raw, str):
        try:
            raw = parse_objects_yaml(raw, name, what="secretObjects entries (start each with '- secretName:')")
        except SpecError as exc:
            problems.extend(exc.problems)
            return ()
    try:
        return parse_secret_objects(raw, name)
    except SecretObjectsError as exc:
        shown = exc.problems[:MAX_PROBLEMS_SHOWN]
        problems.extend(Problem("", problem) for problem in shown)
        if len(exc.problems) > len(shown):
            problems.append(Problem(name, f"and {len(exc.problems) - len(shown)} more problems"))
        return ()


def _check_documents(
    files: Sequence[str], formats: Sequence[tuple[str, str]], name: str, problems: list[Problem]
) -> None:
    """The documents' names must be free, and dotenv's keys unique: both are known before anything is fetched."""
    for fmt, target in formats:
        if target in files:
            problems.append(
                Problem(name, f"{fmt} would be written to {quote(target)}, a file of the objects; name it {fmt}=OTHER")
            )
    if any(fmt == DOTENV_FORMAT for fmt, _ in formats):
        try:
            env_keys(files)
        except FormatError as exc:
            problems.append(Problem(name, str(exc)))


def _check_synced_files(
    objects: Sequence[SecretObject], files: Sequence[str], name: str, problems: list[Problem]
) -> None:
    """Every data[].objectName must be a file the spec writes (the name after alias and path translation)."""
    known = set(files)
    unknown = [
        (index, position, item.object_name)
        for index, obj in enumerate(objects)
        for position, item in enumerate(obj.data)
        if item.object_name not in known
    ]
    for index, position, object_name in unknown[:MAX_PROBLEMS_SHOWN]:
        problems.append(
            Problem(
                f"{name}[{index}].data[{position}].objectName",
                f"no file is named {quote(object_name)}; objectName is the file name after objectAlias "
                f"and path translation, one of {listed(sorted(known))}",
            )
        )
    if len(unknown) > MAX_PROBLEMS_SHOWN:
        problems.append(Problem(name, f"and {len(unknown) - MAX_PROBLEMS_SHOWN} more unknown objectNames"))


def parse_objects_yaml(
    text: str, field_name: str = "objects", what: str = "objects (start each with '- objectName:')"
) -> list[Any]:
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
                    f"must be a YAML list of {what}, got {kind_of(loaded)}",
                )
            ]
        )
    return loaded


def parse_duration(text: str) -> float:
    """Seconds in "90" (bare: seconds), "30s", "5m", "1h30m", "1d". Raises ValueError with a readable reason."""
    value = text.strip()
    if value.isdigit():
        return float(value)
    match = _DURATION_RE.match(value)
    if not value or not match or not any(match.groups()):
        raise ValueError(f"{quote(text)} is not a duration; write it like 30s, 5m, 1h30m or 1d")
    days, hours, minutes, seconds = (int(part or 0) for part in match.groups())
    return float(days * 86400 + hours * 3600 + minutes * 60 + seconds)


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
    if not isinstance(value, str) or not REGION_RE.match(value):
        problems.append(Problem(name, f"{quote(value)} is not an AWS region; write it like us-east-1"))
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
            Problem(name, f'{quote(value)} must be a single printable character other than / \\ and ., or "False"')
        )
        return DEFAULT_PATH_TRANSLATION
    return value


def _check_refresh(value: Any, name: str, floor: float, problems: list[Problem]) -> float:
    if value is None or value == "":
        return 0.0
    if isinstance(value, int | float) and not isinstance(value, bool):
        # Seconds as the canonical JSON carries them; a hand-edited value gets the same ceiling.
        seconds = float(value)
        if not math.isfinite(seconds) or seconds < 0:
            problems.append(Problem(name, f"{quote(value)} must be a non-negative number of seconds"))
            return 0.0
        if seconds > MAX_REFRESH_SECONDS:
            problems.append(Problem(name, f"{quote(value)} seconds is over 7 days; use a shorter interval or 0"))
            return 0.0
        return seconds
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
                    f"{quote(text)} must be an http:// URL on localhost, 127.0.0.1 or [::1] "
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
                    f"{quote(text)} must be SIGNAL:process-name, e.g. SIGHUP:nginx; signals: {', '.join(_SIGNALS)}",
                )
            )
        else:
            sig, process = head, tail
    return Notify(url=notify_url, signal=sig, process=process)


def _format_seconds(seconds: float) -> str:
    whole = int(seconds)
    if whole != seconds:
        return f"{seconds}s"
    if whole and whole % 3600 == 0:
        return f"{whole // 3600}h"
    if whole and whole % 60 == 0:
        return f"{whole // 60}m"
    return f"{whole}s"
