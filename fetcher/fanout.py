"""Independent cloud calls run together: one bounded pool, and a failover region.

A fetch is many small, independent calls; run together, every failure is collected and named at once, and an
interrupt never waits for a hanging call. sources.py knows the replies; this module only runs the calls.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

from fetcher.contract import ObjectSpec
from fetcher.errors import AwsUnavailableError, FetchError, ObjectError, ObjectErrors
from fetcher.logs import log

T = TypeVar("T")


@dataclass(frozen=True)
class Target:
    """What to ask one region for."""

    region: str
    name: str
    version: str | None
    label: str | None


def primary_target(obj: ObjectSpec, region: str) -> Target:
    return Target(region=region, name=obj.object_name, version=obj.object_version, label=obj.object_version_label)


def failover_target(obj: ObjectSpec, failover_region: str | None) -> Target | None:
    """What to ask the failover region for, or None without a failover region."""
    if not failover_region:
        return None
    version, label = obj.failover_version()
    name = obj.failover_name()
    if obj.failover_object is None and name.startswith("arn:"):
        parts = name.split(":", 5)
        parts[3] = failover_region
        name = ":".join(parts)
    return Target(region=failover_region, name=name, version=version, label=label)


def ask_with_failover(primary: Callable[[], T], failover: Callable[[], T] | None) -> T:
    """Ask the primary; only when it could not answer (AwsUnavailableError) ask the failover."""
    try:
        return primary()
    except AwsUnavailableError as primary_error:
        if failover is None:
            raise
        log.warning(
            "primary region unavailable; asking the failover region",
            object=primary_error.object_name,
            region=primary_error.region,
            code=primary_error.code,
        )
        try:
            return failover()
        except FetchError as failover_error:
            failover_error.after_primary(primary_error)
            raise


def run_units(units: Sequence[Callable[[], T]], max_workers: int) -> list[T]:
    """Run units concurrently (bounded); collect every ObjectError and raise them together, in unit order."""
    outcomes: list[T] = []
    errors: list[tuple[int, ObjectError]] = []

    def collect(position: int, unit: Callable[[], T]) -> None:
        try:
            outcomes.append(unit())
        except ObjectErrors as exc:
            errors.extend((position, error) for error in exc.errors)
        except ObjectError as exc:
            errors.append((position, exc))

    if len(units) <= 1 or max_workers <= 1:
        for position, unit in enumerate(units):
            collect(position, unit)
    else:
        pool = ThreadPoolExecutor(max_workers=min(max_workers, len(units)), thread_name_prefix="ferry-fetch")
        try:
            futures = [pool.submit(collect, position, unit) for position, unit in enumerate(units)]
            for future in futures:
                future.result()  # re-raises anything that is not an ObjectError: a bug, not an AWS failure
        except BaseException:
            # An interrupt (SIGINT/SIGTERM) must not wait for calls still hanging on the network.
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown()
    if errors:
        raise ObjectErrors([error for _, error in sorted(errors, key=lambda pair: pair[0])])
    return outcomes
