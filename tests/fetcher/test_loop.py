"""Sidecar refresh: cheap version checks, re-fetch only what moved, no swap when nothing changed, stale-on-error."""

from __future__ import annotations

import io
import json
import os
import random
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from fetcher.aws import AwsClients
from fetcher.contract import FetchSpec
from fetcher.errors import FerryError
from fetcher.logs import log
from fetcher.loop import (
    JITTER_FRACTION,
    RefreshState,
    deliver,
    failure_backoff,
    next_wait,
    refresh_once,
    run_sidecar,
)
from fetcher.writer import DATA_LINK
from tests.support.aws import PRIMARY, RecordedRequest, Reply, Seeder, aws_json_error, make_clients, make_spec


def sm(name: str, **fields: Any) -> dict[str, Any]:
    return {"objectName": name, "objectType": "secretsmanager", **fields}


def ssm(name: str, **fields: Any) -> dict[str, Any]:
    return {"objectName": name, "objectType": "ssmparameter", **fields}


def started(spec: FetchSpec, clients: AwsClients, target: Path) -> RefreshState:
    """A state after the sidecar's first (full) cycle, with the call counter zeroed."""
    state = RefreshState(spec=spec, clients=clients, target_dir=target)
    refresh_once(state)
    clients.calls.reset()
    return state


def test_the_first_cycle_is_a_full_delivery(seed: Seeder, clients: AwsClients, target: Path) -> None:
    seed.secret("db", "v1")
    state = RefreshState(spec=make_spec([sm("db")]), clients=clients, target_dir=target)
    outcome = refresh_once(state)
    assert outcome.swapped and outcome.changed == ("db",)
    assert (target / "db").read_bytes() == b"v1"


def test_the_first_cycle_after_init_swaps_nothing(seed: Seeder, clients: AwsClients, target: Path) -> None:
    seed.secret("db", "v1")
    spec = make_spec([sm("db")])
    deliver(spec, clients, target)  # what the init container did
    generation = os.readlink(target / DATA_LINK)
    assert refresh_once(RefreshState(spec=spec, clients=clients, target_dir=target)).swapped is False
    assert os.readlink(target / DATA_LINK) == generation


def test_an_unchanged_refresh_costs_only_version_checks(seed: Seeder, clients: AwsClients, target: Path) -> None:
    for name in ("a", "b", "c"):
        seed.secret(name, json.dumps({"k": name}))
    seed.parameter("/p1", "1")
    seed.parameter("/p2", "2")
    spec = make_spec(
        [sm("a"), sm("b"), sm("c", jmesPath=[{"path": "k", "objectAlias": "c-k"}]), ssm("/p1"), ssm("/p2")]
    )
    state = started(spec, clients, target)
    generation = os.readlink(target / DATA_LINK)
    outcome = refresh_once(state)
    assert outcome.changed == () and outcome.swapped is False
    assert clients.calls.by_operation() == {"secretsmanager.DescribeSecret": 3, "ssm.GetParameters": 1}
    assert os.readlink(target / DATA_LINK) == generation


def test_a_moved_label_is_fetched_and_swapped(seed: Seeder, clients: AwsClients, target: Path) -> None:
    seed.secret("db", "v1")
    seed.secret("other", "unchanged")
    state = started(make_spec([sm("db"), sm("other")]), clients, target)
    new_version = seed.sm().put_secret_value(SecretId="db", SecretString="v2")["VersionId"]  # AWSCURRENT moves
    outcome = refresh_once(state)
    assert outcome.changed == ("db",) and outcome.swapped
    assert (target / "db").read_bytes() == b"v2" and (target / "other").read_bytes() == b"unchanged"
    assert state.values[0].version == new_version
    assert clients.calls.by_operation() == {"secretsmanager.DescribeSecret": 2, "secretsmanager.GetSecretValue": 1}


def test_a_custom_label_is_followed(seed: Seeder, clients: AwsClients, target: Path) -> None:
    first = seed.secret("db", "v1")
    second = seed.sm().put_secret_value(SecretId="db", SecretString="v2", VersionStages=["CANARY"])["VersionId"]
    seed.sm().update_secret_version_stage(SecretId="db", VersionStage="STABLE", MoveToVersionId=first)
    state = started(make_spec([sm("db", objectVersionLabel="STABLE")]), clients, target)
    assert (target / "db").read_bytes() == b"v1"
    assert refresh_once(state).swapped is False
    seed.sm().update_secret_version_stage(
        SecretId="db", VersionStage="STABLE", MoveToVersionId=second, RemoveFromVersionId=first
    )
    assert refresh_once(state).swapped is True
    assert (target / "db").read_bytes() == b"v2"


def test_pinned_versions_cost_no_call_at_all(seed: Seeder, clients: AwsClients, target: Path) -> None:
    first = seed.secret("db", "v1")
    seed.parameter("/p", "p1")
    state = started(make_spec([sm("db", objectVersion=first), ssm("/p", objectVersion="1")]), clients, target)
    seed.sm().put_secret_value(SecretId="db", SecretString="v2")
    seed.parameter("/p", "p2")
    for _ in range(3):
        assert refresh_once(state).swapped is False
    assert clients.calls.count() == 0
    assert (target / "db").read_bytes() == b"v1" and (target / "_p").read_bytes() == b"p1"


def test_a_new_parameter_version_is_taken_from_the_check_itself(
    seed: Seeder, clients: AwsClients, target: Path
) -> None:
    seed.parameter("/p", "p1")
    state = started(make_spec([ssm("/p")]), clients, target)
    seed.parameter("/p", "p2")
    outcome = refresh_once(state)
    assert outcome.swapped and (target / "_p").read_bytes() == b"p2"
    assert clients.calls.by_operation() == {"ssm.GetParameters": 1}  # no second call for the value


def test_a_new_version_with_the_same_bytes_is_not_swapped(seed: Seeder, clients: AwsClients, target: Path) -> None:
    seed.parameter("/p", "same")
    state = started(make_spec([ssm("/p")]), clients, target)
    generation = os.readlink(target / DATA_LINK)
    seed.parameter("/p", "same")
    outcome = refresh_once(state)
    assert outcome.changed == ("/p",) and outcome.swapped is False
    assert os.readlink(target / DATA_LINK) == generation
    assert state.values[0].version == "2"  # remembered, so the next check is quiet
    clients.calls.reset()
    assert refresh_once(state).changed == ()


def test_aws_failures_keep_the_last_good_files_and_recover(seed: Seeder, clients: AwsClients, target: Path) -> None:
    seed.secret("db", "good")
    state = started(make_spec([sm("db")]), clients, target)
    known = dict(state.values)
    seed.sm().put_secret_value(SecretId="db", SecretString="newer")
    outage = make_clients(endpoint_overrides={PRIMARY: "http://127.0.0.1:9"})  # discard port: refused
    state.clients = outage
    try:
        with pytest.raises(FerryError) as caught:
            refresh_once(state)
    finally:
        outage.close()
    assert "EndpointConnectionError" in str(caught.value)
    assert (target / "db").read_bytes() == b"good" and state.values == known
    state.clients = clients
    assert refresh_once(state).swapped is True
    assert (target / "db").read_bytes() == b"newer"


def test_a_value_that_no_longer_renders_keeps_the_last_good_files(
    seed: Seeder, clients: AwsClients, target: Path
) -> None:
    seed.secret("db", json.dumps({"password": "first"}))
    state = started(make_spec([sm("db", jmesPath=[{"path": "password", "objectAlias": "pw"}])]), clients, target)
    seed.sm().put_secret_value(SecretId="db", SecretString="no longer json")
    with pytest.raises(FerryError) as caught:
        refresh_once(state)
    assert "is not JSON" in str(caught.value)
    assert (target / "pw").read_bytes() == b"first"
    with pytest.raises(FerryError):
        refresh_once(state)  # still stale, still reported: the bad version was not remembered


def test_waits_are_jittered_and_backoff_is_bounded() -> None:
    rng = random.Random(7)
    waits = [next_wait(60.0, rng) for _ in range(200)]
    assert all(60 * (1 - JITTER_FRACTION) <= wait <= 60 * (1 + JITTER_FRACTION) for wait in waits)
    assert len(set(waits)) > 100  # a fleet does not refresh in lockstep
    backoffs = [failure_backoff(30.0, failures, rng, max_backoff=300.0) for failures in range(1, 12)]
    assert 60 * (1 - JITTER_FRACTION) <= backoffs[0] <= 60 * (1 + JITTER_FRACTION)
    assert all(wait <= 300 * (1 + JITTER_FRACTION) for wait in backoffs)
    assert backoffs[-1] >= 300 * (1 - JITTER_FRACTION)
    # A long interval is never shortened by a failure.
    assert failure_backoff(3600.0, 1, rng) >= 3600 * (1 - JITTER_FRACTION)


def test_the_sidecar_loop_rotates_notifies_and_stops(seed: Seeder, clients: AwsClients, target: Path) -> None:
    seed.secret("db", "v1")
    spec = make_spec([sm("db")], refresh_interval=0.05)
    state = RefreshState(spec=spec, clients=clients, target_dir=target)
    stop = threading.Event()
    notified: list[FetchSpec] = []
    exit_codes: list[int] = []
    loop = threading.Thread(target=lambda: exit_codes.append(run_sidecar(state, stop, notify=notified.append)))
    loop.start()
    try:
        assert _wait_for(lambda: (target / "db").exists() and (target / "db").read_bytes() == b"v1")
        seed.sm().put_secret_value(SecretId="db", SecretString="v2")
        assert _wait_for(lambda: (target / "db").read_bytes() == b"v2")
        assert _wait_for(lambda: len(notified) == 2)  # the first delivery and the rotation
    finally:
        stop.set()
        loop.join(timeout=10)
    assert exit_codes == [0]


def test_the_sidecar_loop_survives_failures_and_logs_them(target: Path, moto: Any) -> None:
    spec = make_spec([sm("db")], refresh_interval=0.01)
    outage = make_clients(endpoint_overrides={PRIMARY: "http://127.0.0.1:9"})
    state = RefreshState(spec=spec, clients=outage, target_dir=target)
    stop = threading.Event()
    stream = io.StringIO()
    previous = log.set_stream(stream)
    loop = threading.Thread(target=run_sidecar, args=(state, stop), kwargs={"max_backoff": 0.05})
    loop.start()
    try:
        assert _wait_for(lambda: stream.getvalue().count("refresh failed") >= 3)
    finally:
        stop.set()
        loop.join(timeout=10)
        log.set_stream(previous)
        outage.close()
    failures = [json.loads(line) for line in stream.getvalue().splitlines() if "refresh failed" in line]
    assert [entry["failures"] for entry in failures[:3]] == [1, 2, 3]
    assert failures[0]["codes"] == ["EndpointConnectionError"]
    assert not target.exists() or not any(target.iterdir())


def _wait_for(condition: Any, timeout: float = 15.0) -> bool:
    """Poll until `condition()` holds; a generous deadline for a busy machine, not a performance check."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if condition():
                return True
        except OSError:
            pass
        time.sleep(0.02)
    return False


def test_a_role_without_describe_secret_still_rotates(http_stub: Any, target: Path, moto: Any) -> None:
    current = {"version": "v1", "value": "one"}

    def answer(request: RecordedRequest) -> Reply:
        if request.operation == "DescribeSecret":
            return aws_json_error(
                400, "AccessDeniedException", "not authorized to perform secretsmanager:DescribeSecret"
            )
        body = {"Name": "db", "VersionId": current["version"], "SecretString": current["value"]}
        return 200, {"Content-Type": "application/x-amz-json-1.1"}, json.dumps(body).encode()

    stub = http_stub(answer)
    clients = make_clients(endpoint_overrides={PRIMARY: stub.url})
    try:
        state = started(make_spec([sm("db")]), clients, target)
        assert refresh_once(state).swapped is False
        current.update(version="v2", value="two")
        assert refresh_once(state).swapped is True
    finally:
        clients.close()
    assert (target / "db").read_bytes() == b"two"
    assert stub.operations() == ["GetSecretValue"] + ["DescribeSecret", "GetSecretValue"] * 2


# --- Drift repair (issue 15): the secretObjects hook runs again on a bounded schedule, never every cycle. -------


def test_the_files_hook_runs_again_once_the_resync_interval_passed(
    seed: Seeder, clients: AwsClients, target: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed.secret("db", "v1")
    synced: list[dict[str, Any]] = []
    now = [1000.0]
    monkeypatch.setattr("fetcher.loop.time.monotonic", lambda: now[0])
    state = RefreshState(
        spec=make_spec([sm("db")]), clients=clients, target_dir=target, on_files=synced.append, resync_seconds=300
    )
    refresh_once(state)
    assert len(synced) == 1

    now[0] += 299
    refresh_once(state)  # nothing changed, not due yet: the cycle stays cheap
    assert len(synced) == 1

    now[0] += 1
    outcome = refresh_once(state)
    assert len(synced) == 2 and synced[-1]["db"][0] == b"v1" and not outcome.swapped

    refresh_once(state)
    assert len(synced) == 2  # the schedule starts again from the last successful sync


def test_a_failing_resync_is_the_cycles_failure_and_is_tried_again(
    seed: Seeder, clients: AwsClients, target: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed.secret("db", "v1")
    calls: list[int] = []
    now = [1000.0]
    monkeypatch.setattr("fetcher.loop.time.monotonic", lambda: now[0])

    def hook(files: Any) -> None:
        calls.append(1)
        if len(calls) > 1:
            raise FerryError('secretObjects not synced: Secret "db" exists and was not created by Ferry')

    state = RefreshState(
        spec=make_spec([sm("db")]), clients=clients, target_dir=target, on_files=hook, resync_seconds=5
    )
    refresh_once(state)
    now[0] += 5
    with pytest.raises(FerryError, match="not created by Ferry"):
        refresh_once(state)
    with pytest.raises(FerryError):
        refresh_once(state)  # still due: every cycle tries again until it succeeds
    assert len(calls) == 3


def test_without_a_resync_interval_an_unchanged_cycle_never_calls_the_hook(
    seed: Seeder, clients: AwsClients, target: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed.secret("db", "v1")
    synced: list[Any] = []
    now = [1000.0]
    monkeypatch.setattr("fetcher.loop.time.monotonic", lambda: now[0])
    state = RefreshState(spec=make_spec([sm("db")]), clients=clients, target_dir=target, on_files=synced.append)
    refresh_once(state)
    now[0] += 10**6
    refresh_once(state)
    assert len(synced) == 1
