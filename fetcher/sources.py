"""Reading secrets and parameters from AWS: concurrently, by version, with a failover region.

The only module that knows the shape of Secrets Manager's and SSM's replies: it turns the spec's objects
into independent calls behind one `Source` protocol. Which calls, and failover: docs/fetcher.md
("One delivery, in order") and docs/aws-api-economics.md.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import partial
from typing import Any, TypeAlias, TypeVar

from fetcher.aws import AwsClients
from fetcher.contract import FetchSpec, ObjectSpec, ObjectType, parse_arn
from fetcher.errors import (
    ACCESS_DENIED_CODES,
    AwsRejectedError,
    ParametersNotFoundError,
    translating_aws_errors,
)
from fetcher.fanout import Target, ask_with_failover, failover_target, primary_target, run_units
from fetcher.logs import log
from fetcher.values import FetchedValue, FetchResult, IndexedObject, Source, VersionProbe

__all__ = ["FetchResult", "FetchedValue", "IndexedObject", "Source", "VersionProbe", "check_versions", "fetch_all"]

# Concurrent AWS calls per fetch; matches AwsSettings.max_pool_connections.
DEFAULT_MAX_WORKERS = 10
# SSM's GetParameters takes at most 10 names.
SSM_BATCH_SIZE = 10
# The label GetSecretValue returns when neither version nor label is given.
DEFAULT_SECRET_STAGE = "AWSCURRENT"

T = TypeVar("T")

# Secrets whose DescribeSecret was denied, so the fallback is logged once per process, not once per refresh.
_describe_denied_warned: set[str] = set()


# --- Public entry points. ------------------------------------------------------


def fetch_all(
    spec: FetchSpec,
    clients: AwsClients,
    indices: Iterable[int] | None = None,
    *,
    max_workers: int = DEFAULT_MAX_WORKERS,
) -> FetchResult:
    """Fetch every object of the spec (or only `indices`); raise ObjectErrors naming every failure."""
    from fetcher.callplan import sources_of  # callplan builds on this module

    chosen = _select(spec, indices)
    units: list[Callable[[], FetchResult]] = []
    for source, items in sources_of(spec, clients, chosen):
        units.extend(source.fetch_units(items))
    results: FetchResult = {}
    for part in run_units(units, max_workers):
        results.update(part)
    return results


def check_versions(
    spec: FetchSpec,
    clients: AwsClients,
    *,
    max_workers: int = DEFAULT_MAX_WORKERS,
) -> list[VersionProbe]:
    """Cheap version checks for every object not pinned to a version (pinned ones cost no call)."""
    from fetcher.callplan import sources_of

    units: list[Callable[[], list[VersionProbe]]] = []
    for source, items in sources_of(spec, clients, _select(spec, None)):
        units.extend(source.probe_units(items))
    return [probe for part in run_units(units, max_workers) for probe in part]


def source_for(object_type: ObjectType, spec: FetchSpec, clients: AwsClients) -> Source:
    if object_type == "secretsmanager":
        return SecretsManagerSource(clients, spec.region, spec.failover_region)
    return ParameterStoreSource(clients, spec.region, spec.failover_region)


# --- Secrets Manager. ----------------------------------------------------------


class SecretsManagerSource:
    """GetSecretValue per secret; DescribeSecret as the version check."""

    def __init__(self, clients: AwsClients, region: str, failover_region: str | None) -> None:
        self._clients = clients
        self._region = region
        self._failover_region = failover_region

    def fetch_units(self, items: Sequence[IndexedObject]) -> list[Callable[[], FetchResult]]:
        self._clients.client("secretsmanager", self._region)  # create before the pool fans out
        return [partial(self._fetch_one, index, obj) for index, obj in items]

    def probe_units(self, items: Sequence[IndexedObject]) -> list[Callable[[], list[VersionProbe]]]:
        unpinned = [(index, obj) for index, obj in items if not obj.object_version]
        if unpinned:
            self._clients.client("secretsmanager", self._region)
        return [partial(self._probe_one, index, obj) for index, obj in unpinned]

    def _fetch_one(self, index: int, obj: ObjectSpec) -> FetchResult:
        failover = failover_target(obj, self._failover_region)
        value = ask_with_failover(
            lambda: self._get_secret_value(primary_target(obj, self._region)),
            (lambda: self._get_secret_value(failover)) if failover else None,
        )
        return {index: value}

    def _probe_one(self, index: int, obj: ObjectSpec) -> list[VersionProbe]:
        failover = failover_target(obj, self._failover_region)
        try:
            region, version = ask_with_failover(
                lambda: self._current_version(primary_target(obj, self._region)),
                (lambda: self._current_version(failover)) if failover else None,
            )
        except AwsRejectedError as exc:
            if exc.operation != "DescribeSecret" or exc.code not in ACCESS_DENIED_CODES:
                raise
            # A role granted only GetSecretValue still rotates, at the price of a full read per check.
            if obj.object_name not in _describe_denied_warned:
                _describe_denied_warned.add(obj.object_name)
                log.warning(
                    "DescribeSecret is denied; checking versions with GetSecretValue instead "
                    "(grant secretsmanager:DescribeSecret for cheaper refreshes)",
                    object=obj.object_name,
                    region=exc.region,
                )
            value = self._fetch_one(index, obj)[index]
            return [VersionProbe(index=index, region=value.region, version=value.version, value=value)]
        return [VersionProbe(index=index, region=region, version=version)]

    def _get_secret_value(self, target: Target) -> FetchedValue:
        params: dict[str, str] = {"SecretId": target.name}
        if target.version:
            params["VersionId"] = target.version
        if target.label:
            params["VersionStage"] = target.label
        client = self._clients.client("secretsmanager", target.region)
        with translating_aws_errors(
            object_name=target.name, region=target.region, service="secretsmanager", operation="GetSecretValue"
        ):
            reply = client.get_secret_value(**params)
        version = str(reply.get("VersionId") or "")
        if reply.get("SecretString") is not None:
            value = FetchedValue(str(reply["SecretString"]).encode("utf-8"), version, target.region)
        elif reply.get("SecretBinary") is not None:
            value = FetchedValue(bytes(reply["SecretBinary"]), version, target.region, binary=True)
        else:
            raise AwsRejectedError(
                object_name=target.name,
                region=target.region,
                code="NoSecretValue",
                operation="GetSecretValue",
                hint="this version has neither SecretString nor SecretBinary; put a value into the secret",
                kind="secret",
            )
        log.info("fetched secret", object=target.name, version=version, region=target.region)
        return value

    def _current_version(self, target: Target) -> tuple[str, str | None]:
        client = self._clients.client("secretsmanager", target.region)
        with translating_aws_errors(
            object_name=target.name, region=target.region, service="secretsmanager", operation="DescribeSecret"
        ):
            reply = client.describe_secret(SecretId=target.name)
        wanted = target.label or DEFAULT_SECRET_STAGE
        stages: Mapping[str, Sequence[str]] = reply.get("VersionIdsToStages") or {}
        version = next((vid for vid, labels in stages.items() if wanted in labels), None)
        log.debug("checked secret version", object=target.name, label=wanted, version=version, region=target.region)
        return target.region, version


# --- SSM Parameter Store. ------------------------------------------------------


class ParameterStoreSource:
    """GetParameters in batches of 10, with decryption; the same call is the version check."""

    def __init__(self, clients: AwsClients, region: str, failover_region: str | None) -> None:
        self._clients = clients
        self._region = region
        self._failover_region = failover_region

    def fetch_units(self, items: Sequence[IndexedObject]) -> list[Callable[[], FetchResult]]:
        self._clients.client("ssm", self._region)
        return [partial(self._fetch_batch, batch) for batch in _batches(items, SSM_BATCH_SIZE)]

    def probe_units(self, items: Sequence[IndexedObject]) -> list[Callable[[], list[VersionProbe]]]:
        unpinned = [(index, obj) for index, obj in items if not obj.object_version]
        if unpinned:
            self._clients.client("ssm", self._region)
        return [partial(self._probe_batch, batch) for batch in _batches(unpinned, SSM_BATCH_SIZE)]

    def _fetch_batch(self, batch: Sequence[IndexedObject]) -> FetchResult:
        primary = [(index, primary_target(obj, self._region)) for index, obj in batch]
        failover: list[tuple[int, Target]] = []
        for index, obj in batch:
            target = failover_target(obj, self._failover_region)
            if target is not None:
                failover.append((index, target))
        return ask_with_failover(
            lambda: self._get_parameters(primary),
            (lambda: self._get_parameters(failover)) if failover else None,
        )

    def _probe_batch(self, batch: Sequence[IndexedObject]) -> list[VersionProbe]:
        values = self._fetch_batch(batch)
        return [
            VersionProbe(index=index, region=value.region, version=value.version, value=value)
            for index, value in sorted(values.items())
        ]

    def _get_parameters(self, targets: Sequence[tuple[int, Target]]) -> FetchResult:
        region = targets[0][1].region
        requested = dict.fromkeys(_selector_name(target) for _, target in targets)
        names = ", ".join(target.name for _, target in targets)
        client = self._clients.client("ssm", region)
        with translating_aws_errors(object_name=names, region=region, service="ssm", operation="GetParameters"):
            reply = client.get_parameters(Names=list(requested), WithDecryption=True)
        invalid = [str(name) for name in reply.get("InvalidParameters") or []]
        if invalid:
            raise ParametersNotFoundError(names=invalid, region=region)
        # Every target, not one per selector: one parameter may be listed twice under different aliases.
        results = _match_parameters(reply.get("Parameters") or [], targets, region)
        missing = [target.name for index, target in targets if index not in results]
        if missing:
            raise ParametersNotFoundError(names=missing, region=region)
        for index, target in targets:
            log.debug("fetched parameter", object=target.name, version=results[index].version, region=region)
        return results


def _selector_name(target: Target) -> str:
    """SSM's `name:version` / `name:label` selector syntax."""
    if target.version:
        return f"{target.name}:{target.version}"
    if target.label:
        return f"{target.name}:{target.label}"
    return target.name


def _reply_keys(name: str) -> set[str]:
    """The names a reply may use for a requested name (ARNs come back as plain names and vice versa)."""
    keys = {name}
    arn = parse_arn(name) if name.startswith("arn:") else None
    if arn is not None and arn[3].startswith("parameter"):
        bare = arn[3][len("parameter") :]
        keys.update({bare, bare.lstrip("/"), "/" + bare.lstrip("/")})
    return keys


Entry: TypeAlias = tuple[int, Mapping[str, Any]]
Picker: TypeAlias = Callable[[list[Entry], Target, str], Entry | None]


def _match_parameters(
    parameters: Sequence[Mapping[str, Any]], targets: Sequence[tuple[int, Target]], region: str
) -> FetchResult:
    """Map GetParameters' replies (in any order) back to the objects that asked, the same way every time.

    Each distinct selector gets exactly one reply. Replies that carry a Selector (AWS) are matched by it;
    without one (moto), a version is matched by its number, latest takes the highest version left,
    and a label takes what remains, so the file for latest never gets an older version.
    """
    by_selector: dict[str, list[tuple[int, Target]]] = {}
    for index, target in targets:
        by_selector.setdefault(_selector_name(target), []).append((index, target))
    # Each reply indexed once by the names it answers to (Name and ARN), so matching stays linear.
    by_key: dict[str, list[int]] = {}
    for position, parameter in enumerate(parameters):
        for key in {str(parameter.get("Name")), str(parameter.get("ARN"))}:
            by_key.setdefault(key, []).append(position)
    answering: dict[str, list[Entry]] = {}
    for selector, asking in by_selector.items():
        positions = {position for key in _reply_keys(asking[0][1].name) for position in by_key.get(key, ())}
        found = [(position, parameters[position]) for position in positions]
        answering[selector] = sorted(found, key=lambda pair: (_version_number(pair[1]), pair[0]))
    taken: set[int] = set()
    chosen: dict[str, Mapping[str, Any]] = {}

    def candidates(selector: str) -> list[Entry]:
        return [entry for entry in answering[selector] if entry[0] not in taken]

    def take(selector: str, pick: Picker) -> None:
        if selector not in chosen:
            found = pick(candidates(selector), by_selector[selector][0][1], selector)
            if found is not None:
                taken.add(found[0])
                chosen[selector] = found[1]

    for pick in (_by_selector, _by_version, _latest, _label):
        for selector in by_selector:
            take(selector, pick)
    results: FetchResult = {}
    for selector, parameter in chosen.items():
        value = FetchedValue(str(parameter.get("Value", "")).encode("utf-8"), str(parameter.get("Version", "")), region)
        for index, _ in by_selector[selector]:
            results[index] = value
    return results


def _by_selector(found: list[Entry], target: Target, selector: str) -> Entry | None:
    """1. What AWS marks with its Selector (":3", ":label")."""
    suffix = selector[len(target.name) :]
    return next((entry for entry in found if suffix and entry[1].get("Selector") == suffix), None)


def _by_version(found: list[Entry], target: Target, selector: str) -> Entry | None:
    """2. A version by its number."""
    return next((entry for entry in found if target.version and str(entry[1].get("Version")) == target.version), None)


def _latest(found: list[Entry], target: Target, selector: str) -> Entry | None:
    """3. Latest: the highest version among replies without a Selector (`found` is sorted by version)."""
    plain = [entry for entry in found if not entry[1].get("Selector")]
    return plain[-1] if plain and not target.version and not target.label else None


def _label(found: list[Entry], target: Target, selector: str) -> Entry | None:
    """4. A label without a Selector in the reply: what remains."""
    plain = [entry for entry in found if not entry[1].get("Selector")]
    return plain[0] if plain and target.label else None


def _version_number(parameter: Mapping[str, Any]) -> int:
    try:
        return int(parameter.get("Version") or 0)
    except (TypeError, ValueError):
        return 0


# --- Grouping the spec's objects. ------------------------------------------------


def _select(spec: FetchSpec, indices: Iterable[int] | None) -> list[IndexedObject]:
    if indices is None:
        return list(enumerate(spec.objects))
    wanted = set(indices)
    return [(index, obj) for index, obj in enumerate(spec.objects) if index in wanted]


def _batches(items: Sequence[T], size: int) -> list[list[T]]:
    return [list(items[start : start + size]) for start in range(0, len(items), size)]
