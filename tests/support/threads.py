"""Run a call that may hang on a thread, for tests that must prove it ends within a deadline."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class Bounded:
    """What a call did within its time: `running` if it had not returned, else `error` (None on success)."""

    running: bool
    error: BaseException | None


def run_bounded(call: Callable[[], object], timeout: float) -> Bounded:
    """Start `call` on a daemon thread and wait up to `timeout` seconds for it to return or raise."""
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            call()
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 - the test reports what ended the call
            outcome.append(exc)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(timeout=timeout)
    return Bounded(running=worker.is_alive(), error=outcome[0] if outcome else None)
