"""The delivery pipeline (fetch, render, swap) and the sidecar's refresh loop around it.

The init container, `once` and the sidecar must write exactly the same files, so they share `deliver`; the
sidecar then keeps them fresh cheaply. Details: docs/fetcher.md ("One delivery, in order", "Refresh").
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from fetcher.contract import FetchSpec
from fetcher.errors import FerryError, FetchError, ObjectErrors
from fetcher.logs import log
from fetcher.providers import check_versions, fetch_all
from fetcher.render import RenderedFiles, render
from fetcher.status import SidecarStatus, object_versions, read_status, record_failure, record_success, write_status
from fetcher.values import FetchedValue, FetchResult, VersionProbe
from fetcher.writer import has_current_set, swap_directory

if TYPE_CHECKING:
    from fetcher.providers import Clients

# Each wait is the interval times a factor in [1 - JITTER_FRACTION, 1 + JITTER_FRACTION].
JITTER_FRACTION = 0.1
# Backoff after failures grows to this, or to the interval if that is longer.
MAX_BACKOFF_SECONDS = 300.0

# Version checks of one refresh run one after another, on one keep-alive connection. A refresh is
# not latency bound (it runs every few minutes): one connection costs one TLS handshake per
# refresh instead of one per check, and no thread is started (docs/benchmarks.md, section 10).
# Initial delivery and re-fetches stay concurrent.
PROBE_WORKERS = 1


@dataclass(frozen=True)
class Delivery:
    """What one full fetch produced."""

    values: FetchResult
    files: RenderedFiles
    swapped: bool


# Called with the rendered files after each swap (or no-op swap): the Kubernetes Secrets sync (secretObjects).
FilesHook = Callable[[RenderedFiles], None]


def deliver(spec: FetchSpec, clients: Clients, target_dir: str | Path, on_files: FilesHook | None = None) -> Delivery:
    """Fetch every object, render every file, then swap them in at once. Nothing is written on failure."""
    values = fetch_all(spec, clients)
    files = render(spec, values)
    swapped = swap_directory(target_dir, files, spec.file_uid, spec.file_gid)
    if on_files is not None:
        on_files(files)
    return Delivery(values=values, files=files, swapped=swapped)


@dataclass
class RefreshState:
    """What the sidecar remembers between cycles: the values behind the files on disk."""

    spec: FetchSpec
    clients: Clients
    target_dir: Path
    values: FetchResult = field(default_factory=dict)
    # Runs after every swap; if it fails, `values` stay old so the next cycle renders and calls it again.
    on_files: FilesHook | None = None
    # Also run `on_files` in a cycle with nothing new once this long has passed since it last succeeded, so
    # what it writes elsewhere (secretObjects: Kubernetes Secrets) is repaired if edited or deleted. 0: never.
    resync_seconds: float = 0.0
    synced_at: float = field(default_factory=time.monotonic)


@dataclass(frozen=True)
class RefreshOutcome:
    """One cycle's result: which objects had a new version, and whether files were swapped."""

    changed: tuple[str, ...]
    swapped: bool


def refresh_once(state: RefreshState) -> RefreshOutcome:
    """One cycle. The first does a full delivery; later ones check versions and re-fetch what moved.

    Raises FerryError on failure, leaving both the files and `state.values` as they were.
    """
    spec = state.spec
    if not state.values:
        delivery = deliver(spec, state.clients, state.target_dir, state.on_files)
        state.values, state.synced_at = delivery.values, time.monotonic()
        return RefreshOutcome(tuple(obj.object_name for obj in spec.objects), delivery.swapped)
    probes = check_versions(spec, state.clients, max_workers=PROBE_WORKERS)
    stale, fresh = plan_refresh(probes, state.values)
    if stale:
        fresh.update(fetch_all(spec, state.clients, stale))
    if not fresh:
        if state.on_files is not None and 0 < state.resync_seconds <= time.monotonic() - state.synced_at:
            state.on_files(render(spec, state.values))  # drift repair; a failure is this cycle's failure
            state.synced_at = time.monotonic()
        return RefreshOutcome((), False)
    values = {**state.values, **fresh}
    files = render(spec, values)
    swapped = swap_directory(state.target_dir, files, spec.file_uid, spec.file_gid)
    if state.on_files is not None:
        state.on_files(files)
        state.synced_at = time.monotonic()
    state.values = values
    changed = tuple(spec.objects[index].object_name for index in sorted(fresh))
    log.info("new versions fetched", objects=list(changed), swapped=swapped)
    return RefreshOutcome(changed, swapped)


def plan_refresh(probes: Sequence[VersionProbe], current: Mapping[int, FetchedValue]) -> tuple[list[int], FetchResult]:
    """(objects to re-fetch, values the probes already brought) for the probes that differ from `current`."""
    stale: list[int] = []
    fresh: FetchResult = {}
    for probe in probes:
        known = current.get(probe.index)
        same = (
            known is not None
            and probe.version is not None
            and known.version == probe.version
            and known.region == probe.region
        )
        if same:
            continue
        if probe.value is not None:
            fresh[probe.index] = probe.value
        else:
            stale.append(probe.index)
    return stale, fresh


def next_wait(interval: float, rng: random.Random) -> float:
    """The interval, jittered."""
    return interval * rng.uniform(1 - JITTER_FRACTION, 1 + JITTER_FRACTION)


def failure_backoff(
    interval: float, failures: int, rng: random.Random, max_backoff: float = MAX_BACKOFF_SECONDS
) -> float:
    """Wait after `failures` failures in a row: doubling from the interval, capped, jittered."""
    cap = max(interval, max_backoff)
    grown: float = interval * 2.0 ** min(failures, 30)
    return min(grown, cap) * rng.uniform(1 - JITTER_FRACTION, 1 + JITTER_FRACTION)


def run_sidecar(
    state: RefreshState,
    stop: threading.Event,
    *,
    rng: random.Random | None = None,
    max_backoff: float = MAX_BACKOFF_SECONDS,
    notify: Callable[[FetchSpec], None] | None = None,
    clock: Callable[[], float] = time.time,
) -> int:
    """Refresh until `stop` is set; return the exit code (0). AWS failures never end the loop.

    A failure run recorded by an earlier run of the sidecar (before a restart) goes on: the
    probe judges how long the refreshes have failed, not how long this process has lived.
    """
    rng = rng or random.Random()
    interval = state.spec.refresh_seconds
    send_notification = notify or _notify_app
    status = read_status(state.target_dir)
    failures = status.failures if status is not None and not status.ok else 0
    log.info("sidecar started", interval_seconds=interval, objects=len(state.spec.objects))
    while not stop.is_set():
        try:
            outcome = refresh_once(state)
        except FerryError as exc:
            failures += 1
            wait = failure_backoff(interval, failures, rng, max_backoff)
            status = _record(state.target_dir, record_failure(status, clock(), str(exc)))
            log.error(
                "refresh failed; keeping the last good files"
                if has_current_set(state.target_dir)
                else "refresh failed; no files written yet",
                error=str(exc),
                codes=_codes(exc),
                failures=failures,
                retry_in_seconds=round(wait, 3),
            )
        else:
            if failures:
                log.info("refresh recovered", failures=failures)
            failures = 0
            wait = next_wait(interval, rng)
            versions = object_versions(state.spec.objects, state.values)
            status = _record(state.target_dir, record_success(status, clock(), versions))
            if outcome.swapped:
                send_notification(state.spec)
            log.debug("refresh done", changed=list(outcome.changed), swapped=outcome.swapped)
        stop.wait(wait)
    log.info("sidecar stopped")
    return 0


def _notify_app(spec: FetchSpec) -> None:
    # Imported on first use: urllib.request (and the email package under it) is 2 MB of a sidecar
    # that, for most pods, never notifies anyone.
    if not spec.notify.url and not (spec.notify.signal and spec.notify.process):
        return
    from fetcher.notify import notify_app

    notify_app(spec.notify)


def _record(target_dir: Path, status: SidecarStatus) -> SidecarStatus:
    """Write the status entry; a failure to write it is logged, never fatal (the files matter more)."""
    try:
        write_status(target_dir, status)
    except OSError as exc:
        log.warning("could not write the status entry", dir=str(target_dir), error=exc.strerror or type(exc).__name__)
    return status


def _codes(exc: FerryError) -> list[str]:
    errors = exc.errors if isinstance(exc, ObjectErrors) else (exc,)
    return sorted({error.code for error in errors if isinstance(error, FetchError)})
