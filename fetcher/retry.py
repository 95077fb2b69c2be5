"""Exponential backoff with full jitter, bounded in attempts and in total time, for any cloud call.

Every source retries the same way, and the bounds are the point: a throttled fleet spreads out instead of
piling on, and no call outlives its budget.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")
# A deadline every cost-bounded retry loop of the process keeps, as (clock, instant): the init container's start-up
# deadline (fetcher/startup.py), so the calls of its last delivery stop waiting with it instead of 30 s later.
_process_deadline: tuple[Callable[[], float], float] | None = None


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with full jitter, bounded in attempts and in total time."""

    max_attempts: int = 5
    base: float = 0.25
    cap: float = 8.0
    # No retry starts once the call has taken this long, sleeps included.
    budget: float = 30.0
    # True: a wait that would pass the budget is shortened to end at it (one last try at the deadline),
    # for a deadline that is a promise (the init container's start-up deadline), not a cost bound.
    fill_budget: bool = False

    def delay(self, retry: int, rng: Callable[[], float] = random.random) -> float:
        return float(rng() * min(self.cap, self.base * 2.0**retry))


def with_retries(
    attempt: Callable[[], T],
    retryable: Callable[[BaseException], bool],
    backoff: Backoff,
    *,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    rng: Callable[[], float] = random.random,
) -> T:
    """Call `attempt` until it returns, its error is not retryable, or the attempts or the budget run out."""
    started = clock()
    number = 1
    while True:
        try:
            return attempt()
        except Exception as exc:
            delay = next_retry(backoff, number, clock() - started, retryable(exc), rng)
            if delay is None or (not backoff.fill_budget and _past_process_deadline(clock, delay)):
                raise
            sleep(delay)
            number += 1


def next_retry(
    backoff: Backoff, attempts: int, elapsed: float, retryable: bool, rng: Callable[[], float] = random.random
) -> float | None:
    """The policy itself, pure: how long to wait before the next try, or None to give up.

    `attempts` tries have failed so far, `elapsed` seconds after the first began. The fleet simulator
    (bench/fleet_sim.py) drives this same function on a simulated clock.
    """
    if attempts >= backoff.max_attempts or not retryable:
        return None
    delay = backoff.delay(attempts - 1, rng)
    if elapsed + delay > backoff.budget:
        remaining = backoff.budget - elapsed
        return remaining if backoff.fill_budget and remaining > 0 else None
    return delay


@contextmanager
def retries_end_at(instant: float, clock: Callable[[], float] = time.monotonic) -> Iterator[None]:
    """Within: no retry on `clock` waits past `instant`, in any thread (a loop that fills its budget is the owner)."""
    global _process_deadline
    previous, _process_deadline = _process_deadline, (clock, instant)
    try:
        yield
    finally:
        _process_deadline = previous


def _past_process_deadline(clock: Callable[[], float], delay: float) -> bool:
    bound = _process_deadline
    return bound is not None and bound[0] is clock and clock() + delay > bound[1]
