"""Exponential backoff with full jitter, bounded in attempts and in total time, for any cloud call.

Why it exists: every source (AWS now, Google next) retries the same way, and
the bounds are the point: a fleet facing throttling spreads out instead of
piling on, and no call outlives its budget.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with full jitter, bounded in attempts and in total time."""

    max_attempts: int = 5
    base: float = 0.25
    cap: float = 8.0
    # No retry starts once the call has taken this long, sleeps included.
    budget: float = 30.0

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
            if number >= backoff.max_attempts or not retryable(exc):
                raise
            delay = backoff.delay(number - 1, rng)
            if clock() - started + delay > backoff.budget:
                raise
            sleep(delay)
            number += 1
