"""Reading secrets and parameters from AWS: concurrently, by version, with a failover region.

Why it exists: this is the only module that knows the shape of Secrets
Manager's and SSM's replies. Both services sit behind one small `Source`
protocol that turns the spec's objects into independent units of work (one
per secret, one per batch of parameters), so `fetch_all` can run every unit of
both services in one bounded thread pool (fanout.py) and report every failure at once.

Why one GetSecretValue per secret and not BatchGetSecretValue (quotas per
account and region, as AWS publishes them: GetSecretValue 10,000 rps;
BatchGetSecretValue 100 rps, not adjustable, at most 20 secrets per call).
Take a fleet rollout of 5,000 pods with 5 secrets each, all starting at once:

- GetSecretValue: 5,000 x 5 = 25,000 calls / 10,000 rps = 2.5 s of the
  account's quota.
- BatchGetSecretValue: each pod has its own identity and fetches only its own
  secrets, so a call can never carry another pod's secrets: one call per pod,
  5,000 calls / 100 rps = 50 s of throttling. Even with impossible perfect
  packing across pods (25,000 / 20 = 1,250 calls) it would be 1,250 / 100 rps
  = 12.5 s, still 5x the GetSecretValue figure, and that 100 rps is shared
  with everything else in the account and cannot be raised.
- For one pod the latency is the same either way: its 5 calls run in
  parallel, so they cost about one round trip, like one batch call.
- BatchGetSecretValue also needs an extra IAM action
  (secretsmanager:BatchGetSecretValue) that existing ASCP policies lack.

So: one GetSecretValue per secret, run concurrently (at most
`DEFAULT_MAX_WORKERS` at a time). SSM is the opposite case: GetParameter and
GetParameters share one quota, 40 TPS by default (3,000 with higher
throughput). The same rollout with 5 parameters per pod is 25,000 GetParameter
calls / 40 TPS = 625 s, or 5,000 GetParameters calls / 40 TPS = 125 s (1.7 s
at 3,000 TPS): batching by 10 is the only sane choice there. The sidecar's
version check uses DescribeSecret (40,000 rps) rather than GetSecretValue.

Failover: the primary region is always asked first. If it answers with an
error (4xx: not found, access denied) that answer stands, because another
region would only hide it. Only a 5xx, throttling, a timeout or a connection
failure (`AwsUnavailableError`) sends the same request, with the
`failoverObject`'s name and version, to the failover region. When an object
is named by ARN and has no failoverObject, the failover region is asked for
the same ARN with the region replaced (how Secrets Manager names replicas).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import partial
from typing import Any, TypeVar

from fetcher.aws import AwsClients
from fetcher.errors import (
    ACCESS_DENIED_CODES,
    AwsRejectedError,
    ParametersNotFoundError,
    translating_aws_errors,
)
from fetcher.fanout import Target, ask_with_failover, failover_target, primary_target, run_units
from fetcher.logs import log
from fetcher.spec import FetchSpec, ObjectSpec, ObjectType, parse_arn
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
    chosen = _select(spec, indices)
    units: list[Callable[[], FetchResult]] = []
    for object_type, items in _by_type(chosen).items():
        units.extend(source_for(object_type, spec, clients).fetch_units(items))
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
    units: list[Callable[[], list[VersionProbe]]] = []
    for object_type, items in _by_type(_select(spec, None)).items():
        units.extend(source_for(object_type, spec, clients).probe_units(items))
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


def _match_parameters(
    parameters: Sequence[Mapping[str, Any]], targets: Sequence[tuple[int, Target]], region: str
) -> FetchResult:
    """Map GetParameters' replies (in any order) back to the objects that asked."""
    by_key: dict[str, list[tuple[int, Target]]] = {}
    for index, target in targets:
        for key in _reply_keys(target.name):
            by_key.setdefault(key, []).append((index, target))
    results: FetchResult = {}
    for parameter in parameters:
        candidates = by_key.get(str(parameter.get("Name")), []) or by_key.get(str(parameter.get("ARN")), [])
        for index, target in candidates:
            version = str(parameter.get("Version", ""))
            selector = parameter.get("Selector")
            if target.version and version != target.version:
                continue
            if selector and selector != _selector_name(target)[len(target.name) :]:
                continue
            value = FetchedValue(str(parameter.get("Value", "")).encode("utf-8"), version, region)
            results.setdefault(index, value)
    return results


# --- Grouping the spec's objects. ------------------------------------------------


def _select(spec: FetchSpec, indices: Iterable[int] | None) -> list[IndexedObject]:
    if indices is None:
        return list(enumerate(spec.objects))
    wanted = set(indices)
    return [(index, obj) for index, obj in enumerate(spec.objects) if index in wanted]


def _by_type(items: Sequence[IndexedObject]) -> dict[ObjectType, list[IndexedObject]]:
    grouped: dict[ObjectType, list[IndexedObject]] = {}
    for index, obj in items:
        grouped.setdefault(obj.object_type, []).append((index, obj))
    return grouped


def _batches(items: Sequence[T], size: int) -> list[list[T]]:
    return [list(items[start : start + size]) for start in range(0, len(items), size)]
