"""The init container's patience: a first delivery retried within a start-up deadline, not failed at once.

A fleet starting together meets throttling and agents not ready yet, which pass on their own, while a failed
init container costs a pod restart. Details: docs/configuration.md ("Start-up: fleets that start at once").
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping
from typing import TypeVar

from fetcher.errors import AwsRejectedError, AwsUnavailableError, ConfigError, FerryError, ObjectErrors
from fetcher.logs import log
from fetcher.retry import Backoff, retries_end_at, with_retries

T = TypeVar("T")

STARTUP_DEADLINE_ENV_VAR = "FERRY_STARTUP_DEADLINE"
# Seconds. A pod restart costs the kubelet's 10 s back-off plus a new container; two minutes of waiting inside
# covers a Pod Identity agent starting on a fresh node and a fleet-wide burst of throttling (docs/configuration.md).
DEFAULT_STARTUP_DEADLINE = 120.0
MAX_STARTUP_DEADLINE = 3600.0
# Waits between whole deliveries: full jitter from 0.5 s, doubling, capped at 15 s.
STARTUP_BACKOFF_BASE = 0.5
STARTUP_BACKOFF_CAP = 15.0
# Credential failures that a little time cures: the agent not answering yet, the token file not mounted yet.
TRANSIENT_CREDENTIAL_CODES = frozenset({"CredentialRetrievalError"})


def startup_backoff(deadline: float) -> Backoff:
    """The start-up policy: the client's Backoff, bounded by the deadline instead of a number of tries."""
    return Backoff(
        max_attempts=1_000_000, base=STARTUP_BACKOFF_BASE, cap=STARTUP_BACKOFF_CAP, budget=deadline, fill_budget=True
    )


def deadline_from_env(environ: Mapping[str, str]) -> float:
    raw = environ.get(STARTUP_DEADLINE_ENV_VAR)
    if not raw:
        return DEFAULT_STARTUP_DEADLINE
    try:
        value = float(raw.rstrip("s"))
    except ValueError:
        raise ConfigError(f"{STARTUP_DEADLINE_ENV_VAR}={raw[:40]!r} is not a number of seconds") from None
    if not 0 <= value <= MAX_STARTUP_DEADLINE:
        raise ConfigError(f"{STARTUP_DEADLINE_ENV_VAR}={raw[:40]!r} must be between 0 and {MAX_STARTUP_DEADLINE:g}")
    return value


def worth_waiting(exc: BaseException) -> bool:
    """True when every failure in `exc` is one that time cures (throttling, 5xx, no answer, slow credentials)."""
    errors = exc.errors if isinstance(exc, ObjectErrors) else [exc]
    return bool(errors) and all(_transient(error) for error in errors)


def _transient(error: BaseException) -> bool:
    if isinstance(error, AwsUnavailableError):
        return True
    return isinstance(error, AwsRejectedError) and error.code in TRANSIENT_CREDENTIAL_CODES


def within_deadline(
    deliver: Callable[[], T],
    deadline: float,
    *,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    rng: Callable[[], float] = random.random,
) -> T:
    """`deliver()`, retried while its failures are transient and the deadline has not passed."""
    tries = 0

    def attempt() -> T:
        nonlocal tries
        tries += 1
        try:
            return deliver()
        except FerryError as exc:
            if worth_waiting(exc):
                log.warning("first delivery failed; retrying within the start-up deadline", error=str(exc), tries=tries)
            raise

    if deadline <= 0:  # no start-up retries: each call keeps its own, as before the deadline existed
        return with_retries(attempt, worth_waiting, startup_backoff(deadline), sleep=sleep, clock=clock, rng=rng)
    with retries_end_at(clock() + deadline, clock):  # the calls of the last delivery stop waiting with the deadline
        return with_retries(attempt, worth_waiting, startup_backoff(deadline), sleep=sleep, clock=clock, rng=rng)
