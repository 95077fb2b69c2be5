"""Discovery (SSM parameters under a path, secrets by name prefix and tags) and expandJson, against moto.

Both write files whose names are known only at fetch time: the tests check the names (relative to the
prefix, translated, kept inside the volume), the bound, the paging, and that a refresh adds and removes
files in one swap and writes nothing when nothing changed.
"""

from __future__ import annotations

import itertools
import json
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fetcher.aws import AwsClients
from fetcher.contract import SpecError
from fetcher.errors import ObjectErrors
from fetcher.loop import RefreshState, deliver, refresh_once
from fetcher.render import render
from fetcher.sources import FetchedValue
from fetcher.writer import DATA_LINK
from tests.support.aws import LocalHttpStub, RecordedRequest, Reply, Responder, Seeder, make_clients, make_spec


def files_under(target: Path) -> dict[str, bytes]:
    found: dict[str, bytes] = {}
    for root, _, names in os.walk(target / DATA_LINK, followlinks=True):
        for name in names:
            path = Path(root) / name
            found[str(path.relative_to(target / DATA_LINK))] = path.read_bytes()
    return found


def discover_ssm(path: str, **discover: Any) -> dict[str, Any]:
    return {"objectName": path, "objectType": "ssmparameter", "discover": discover or True}


def test_ssm_parameters_under_a_path_recursive_or_not(seed: Seeder, clients: AwsClients, target: Path) -> None:
    seed.parameter("/shop/config/db/url", "postgres://db")
    seed.parameter("/shop/config/db/user", "shop")
    seed.parameter("/shop/config/flag", "on", secure=False)
    seed.parameter("/other/x", "not mine")
    deliver(make_spec([discover_ssm("/shop/config", recursive=True)]), clients, target)
    assert files_under(target) == {"db_url": b"postgres://db", "db_user": b"shop", "flag": b"on"}
    flat = target.parent / "flat"
    deliver(make_spec([discover_ssm("/shop/config/")]), clients, flat)
    assert files_under(flat) == {"flag": b"on"}


def test_a_discovery_pages_and_is_bounded(seed: Seeder, clients: AwsClients, target: Path) -> None:
    for number in range(25):
        seed.parameter(f"/fleet/p{number:02d}", str(number))
    deliver(make_spec([{**discover_ssm("/fleet"), "objectAlias": "fleet"}]), clients, target)
    assert len(files_under(target)) == 25 and files_under(target)["fleet/p07"] == b"7"
    assert clients.calls.count("GetParametersByPath") == 3  # 10 per page
    with pytest.raises(ObjectErrors, match=r"more than 12 objects \(discover.maxObjects\)") as caught:
        deliver(make_spec([discover_ssm("/fleet", maxObjects=12)]), clients, target.parent / "bounded")
    assert "TooManyObjects" in str(caught.value)


def test_secrets_by_name_prefix_and_tags(seed: Seeder, clients: AwsClients, target: Path) -> None:
    sm = seed.sm()
    sm.create_secret(Name="shop/db", SecretString="db", Tags=[{"Key": "team", "Value": "shop"}])
    sm.create_secret(Name="shop/api/key", SecretString="key", Tags=[{"Key": "team", "Value": "shop"}])
    sm.create_secret(Name="shop/legacy", SecretString="old", Tags=[{"Key": "team", "Value": "ops"}])
    sm.create_secret(Name="billing/db", SecretString="not mine", Tags=[{"Key": "team", "Value": "shop"}])
    spec = make_spec([{"objectName": "shop/", "objectType": "secretsmanager", "discover": {"tags": {"team": "shop"}}}])
    deliver(spec, clients, target)
    assert files_under(target) == {"db": b"db", "api_key": b"key"}
    assert clients.calls.by_operation() == {"secretsmanager.BatchGetSecretValue": 1}


def test_many_secrets_take_twenty_per_call(seed: Seeder, clients: AwsClients, target: Path) -> None:
    for number in range(25):
        seed.secret(f"bulk/s{number:02d}", str(number))
    spec = make_spec([{"objectName": "bulk/", "objectType": "secretsmanager", "discover": {"maxObjects": 30}}])
    deliver(spec, clients, target)
    assert len(files_under(target)) == 25
    assert clients.calls.count("BatchGetSecretValue") == 2


def test_a_refresh_adds_and_removes_in_one_swap_and_writes_nothing_unchanged(
    seed: Seeder, clients: AwsClients, target: Path
) -> None:
    seed.parameter("/app/a", "1")
    seed.parameter("/app/b", "2")
    state = RefreshState(
        spec=make_spec([discover_ssm("/app")], refresh_interval=60), clients=clients, target_dir=target
    )
    refresh_once(state)
    generation = os.readlink(target / DATA_LINK)
    assert refresh_once(state).swapped is False
    assert os.readlink(target / DATA_LINK) == generation
    seed.ssm().delete_parameter(Name="/app/a")
    seed.parameter("/app/c", "3")
    assert refresh_once(state).swapped is True
    assert files_under(target) == {"b": b"2", "c": b"3"}
    assert os.readlink(target / DATA_LINK) != generation


def test_a_discovered_name_that_climbs_out_fails_naming_the_key(
    seed: Seeder, clients: AwsClients, target: Path
) -> None:
    seed.secret("esc/x/../../etc", "top secret value")
    spec = make_spec(
        [{"objectName": "esc/", "objectType": "secretsmanager", "discover": True}], path_translation="False"
    )
    with pytest.raises(ObjectErrors) as caught:
        deliver(spec, clients, target)
    message = str(caught.value)
    assert "x/../../etc" in message and "esc/" in message and "top secret value" not in message
    assert not (target / DATA_LINK).exists()


@pytest.mark.parametrize(
    ("entry", "field"),
    [
        ({"objectName": "shop", "objectType": "ssmparameter", "discover": True}, "objectName"),
        ({"objectName": "/shop", "objectType": "ssmparameter", "discover": {"tags": {"a": "b"}}}, "discover.tags"),
        (
            {"objectName": "shop/", "objectType": "secretsmanager", "discover": {"recursive": True}},
            "discover.recursive",
        ),
        ({"objectName": "shop/", "objectType": "secretsmanager", "discover": {"maxObjects": 500}}, "maxObjects"),
        # A leading "!" makes AWS's name filter a negation: every secret NOT under the prefix.
        ({"objectName": "!shop/", "objectType": "secretsmanager", "discover": True}, "objectName"),
        ({"objectName": "shop/*", "objectType": "secretsmanager", "discover": True}, "objectName"),
        (
            {"objectName": "shop/", "objectType": "secretsmanager", "discover": {"tags": {"team\n": "a"}}},
            "discover.tags",
        ),
        (
            {"objectName": "shop/", "objectType": "secretsmanager", "discover": {"tags": {"team": "a\n"}}},
            "discover.tags",
        ),
        ({"objectName": "shop/", "objectType": "secretsmanager", "discover": {"bogus": 1}}, "discover.bogus"),
        ({"objectName": "/a", "objectType": "ssmparameter", "discover": True, "objectVersion": "3"}, "objectVersion"),
        ({"objectName": "db", "objectType": "secretsmanager", "expandJson": "yes"}, "expandJson"),
        (
            {
                "objectName": "db",
                "objectType": "secretsmanager",
                "expandJson": True,
                "jmesPath": [{"path": "a", "objectAlias": "a"}],
            },
            "expandJson",
        ),
    ],
)
def test_admission_checks_the_options(entry: dict[str, Any], field: str) -> None:
    with pytest.raises(SpecError, match=field):
        make_spec([entry])


# --- expandJson -----------------------------------------------------------------------------------


def expand(name: str, **extra: Any) -> dict[str, Any]:
    return {"objectName": name, "objectType": "secretsmanager", "expandJson": True, **extra}


def test_a_json_secret_becomes_one_file_per_key(seed: Seeder, clients: AwsClients, target: Path) -> None:
    seed.secret("shop/db", json.dumps({"user": "u", "password": "p", "port": 5432, "tls": {"on": True}}))
    deliver(make_spec([expand("shop/db", objectAlias="db")]), clients, target)
    assert files_under(target) == {"db/user": b"u", "db/password": b"p", "db/port": b"5432", "db/tls": b'{"on":true}'}


def test_a_refresh_that_adds_or_removes_a_key_swaps_atomically(seed: Seeder, clients: AwsClients, target: Path) -> None:
    seed.secret("cfg", json.dumps({"a": "1", "b": "2"}))
    state = RefreshState(spec=make_spec([expand("cfg")], refresh_interval=60), clients=clients, target_dir=target)
    refresh_once(state)
    assert files_under(target) == {"cfg/a": b"1", "cfg/b": b"2"}
    assert refresh_once(state).swapped is False
    seed.sm().put_secret_value(SecretId="cfg", SecretString=json.dumps({"b": "2", "c": "3"}))
    assert refresh_once(state).swapped is True
    assert files_under(target) == {"cfg/b": b"2", "cfg/c": b"3"}


def value(data: str) -> dict[int, FetchedValue]:
    return {0: FetchedValue(data.encode(), "v1", "us-east-1")}


def test_non_objects_and_collisions_fail_naming_the_object_and_key_never_the_value() -> None:
    spec = make_spec([expand("cfg")])
    with pytest.raises(ObjectErrors, match="'cfg'.*a list") as listed:
        render(spec, value('["hunter2"]'))
    assert "hunter2" not in str(listed.value)
    with pytest.raises(ObjectErrors) as clash:
        render(spec, value(json.dumps({"a/b": "hunter2", "a_b": "hunter3"})))
    message = str(clash.value)
    assert "a_b" in message and "'cfg'" in message and "hunter" not in message
    with pytest.raises(ObjectErrors, match="not JSON"):
        render(spec, value("hunter2"))
    with pytest.raises(ObjectErrors, match=r"\.\."):
        render(make_spec([expand("cfg")], path_translation="False"), value(json.dumps({"../up": "x"})))


def test_the_simulators_call_plan_is_what_a_fetch_really_calls(seed: Seeder, clients: AwsClients) -> None:
    """bench/fleet_sim.py counts with `planned_calls`; here it is checked against the calls moto saw."""
    from fetcher.callplan import planned_calls
    from fetcher.sources import fetch_all

    for number in range(12):
        seed.parameter(f"/plan/p{number}", str(number))
    for number in range(3):
        seed.secret(f"plan/s{number}", str(number))
    spec = make_spec(
        [
            *({"objectName": f"plan/s{n}", "objectType": "secretsmanager"} for n in range(3)),
            *({"objectName": f"/plan/p{n}", "objectType": "ssmparameter"} for n in range(12)),
            {"objectName": "plan/", "objectType": "secretsmanager", "discover": True},
        ]
    )
    planned: dict[str, int] = {}
    for service, operation in planned_calls(spec, clients):
        planned[f"{service}.{operation}"] = planned.get(f"{service}.{operation}", 0) + 1
    assert clients.calls.by_operation() == {}  # planning made no call
    fetch_all(spec, clients)
    assert (
        clients.calls.by_operation()
        == planned
        == {
            "secretsmanager.BatchGetSecretValue": 1,
            "secretsmanager.GetSecretValue": 3,
            "ssm.GetParameters": 2,
        }
    )


# --- hostile listings -------------------------------------------------------------------------------


@pytest.mark.parametrize("fresh_tokens", [False, True])
@pytest.mark.parametrize(
    ("entry", "page"),
    [
        ({"objectName": "/loop", "objectType": "ssmparameter", "discover": True}, {"Parameters": []}),
        ({"objectName": "loop/", "objectType": "secretsmanager", "discover": True}, {"SecretValues": []}),
    ],
)
def test_a_listing_whose_pages_never_end_is_bounded(
    http_stub: Callable[[Responder], LocalHttpStub],
    monkeypatch: pytest.MonkeyPatch,
    entry: dict[str, Any],
    page: Any,
    fresh_tokens: bool,
) -> None:
    """An answer that names a next page forever (the same token, or always a new one) stops, with a clear error."""
    tokens = itertools.count()

    def endless(request: RecordedRequest) -> Reply:
        token = f"t{next(tokens)}" if fresh_tokens else "same"
        return 200, {"Content-Type": "application/x-amz-json-1.1"}, json.dumps({**page, "NextToken": token}).encode()

    stub = http_stub(endless)
    for name, value in {"AWS_ENDPOINT_URL": stub.url, "AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"}.items():
        monkeypatch.setenv(name, value)
    clients = make_clients()
    outcome: list[BaseException | None] = []
    worker = threading.Thread(target=lambda: outcome.append(_fails(make_spec([entry]), clients)), daemon=True)
    worker.start()
    worker.join(30)
    clients.close()
    assert not worker.is_alive(), f"still listing after {len(stub.requests)} pages"
    assert isinstance(outcome[0], ObjectErrors) and "page" in str(outcome[0])
    assert len(stub.requests) <= 40


def _fails(spec: Any, clients: AwsClients) -> BaseException | None:
    from fetcher.sources import fetch_all

    try:
        fetch_all(spec, clients)
    except BaseException as exc:  # noqa: BLE001 - the test reports whatever ended the listing
        return exc
    return None


def test_a_binary_secret_is_discovered_as_its_bytes(seed: Seeder, clients: AwsClients, target: Path) -> None:
    """BatchGetSecretValue sends SecretBinary in base64, as GetSecretValue does."""
    seed.secret("bin/key", b"\x00\xffraw")
    seed.secret("bin/text", "plain")
    deliver(make_spec([{"objectName": "bin/", "objectType": "secretsmanager", "discover": True}]), clients, target)
    assert files_under(target) == {"key": b"\x00\xffraw", "text": b"plain"}


@pytest.mark.parametrize(
    ("entry", "page"),
    [
        ({"objectName": "/odd", "objectType": "ssmparameter", "discover": True}, {"Parameters": "abc"}),
        ({"objectName": "/odd", "objectType": "ssmparameter", "discover": True}, {"Parameters": [1, None]}),
        ({"objectName": "/odd", "objectType": "ssmparameter", "discover": True}, {"Parameters": [{"Name": {"a": 1}}]}),
        ({"objectName": "odd/", "objectType": "secretsmanager", "discover": True}, {"SecretValues": "zz"}),
        ({"objectName": "odd/", "objectType": "secretsmanager", "discover": True}, {"SecretValues": [7]}),
        (
            {"objectName": "odd/", "objectType": "secretsmanager", "discover": True},
            {"SecretValues": [{"Name": "odd/x", "SecretBinary": "!!not base64"}]},
        ),
    ],
)
def test_a_malformed_listing_fails_naming_the_object_never_crashes(
    http_stub: Callable[[Responder], LocalHttpStub], monkeypatch: pytest.MonkeyPatch, entry: dict[str, Any], page: Any
) -> None:
    stub = http_stub(lambda request: (200, {"Content-Type": "application/x-amz-json-1.1"}, json.dumps(page).encode()))
    for name, value in {"AWS_ENDPOINT_URL": stub.url, "AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"}.items():
        monkeypatch.setenv(name, value)
    clients = make_clients()
    try:
        failure = _fails(make_spec([entry]), clients)
    finally:
        clients.close()
    assert isinstance(failure, ObjectErrors), repr(failure)
    assert entry["objectName"] in str(failure) and "MalformedReply" in str(failure)


@pytest.mark.parametrize(
    ("document", "reason"),
    [
        ('{"a": ' + "[" * 100_000 + "]" * 100_000 + "}", "nested too deep"),
        ('{"a": ' + "[" * 5_000 + "]" * 5_000 + "}", "nested too deep"),
        ('{"user": "hunter2", "user": "hunter3"}', "'user' appears twice"),
        (json.dumps({f"k{number}": "v" for number in range(1001)}), "more than 1000 keys"),
    ],
)
def test_a_hostile_json_secret_fails_naming_the_object_never_crashes(document: str, reason: str) -> None:
    with pytest.raises(ObjectErrors) as caught:
        render(make_spec([expand("cfg")]), value(document))
    message = str(caught.value)
    assert reason in message and "'cfg'" in message and "hunter" not in message and len(message) < 600


@pytest.mark.parametrize("name", ["/p/app.env/x", "/p/app.env"])
def test_a_discovered_name_meeting_an_output_document_fails_naming_the_key(name: str) -> None:
    """A file below the dotenv document's name passed render and failed in the writer ('File exists')."""
    spec = make_spec([discover_ssm("/p", recursive=True)], path_translation="False", output_formats="dotenv=app.env")
    members = ((name, b"hunter2"),)
    with pytest.raises(ObjectErrors) as caught:
        render(spec, {0: FetchedValue(b"", "v1", "us-east-1", members=members)})
    message = str(caught.value)
    assert "'/p'" in message and "app.env" in message and "hunter2" not in message


def test_a_hostile_batch_error_reaches_the_message_bounded_on_one_line(
    http_stub: Callable[[Responder], LocalHttpStub], monkeypatch: pytest.MonkeyPatch
) -> None:
    """BatchGetSecretValue's Errors[] are the answer's text: its code and SecretId went into the message whole."""
    error = {"ErrorCode": "Denied\nFAKE: line" + "C" * 100_000, "SecretId": "odd/x\r\nFAKE: line" + "S" * 100_000}
    answer = json.dumps({"Errors": [error]}).encode()
    stub = http_stub(lambda request: (200, {"Content-Type": "application/x-amz-json-1.1"}, answer))
    for name, value in {"AWS_ENDPOINT_URL": stub.url, "AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"}.items():
        monkeypatch.setenv(name, value)
    clients = make_clients()
    try:
        failure = _fails(make_spec([{"objectName": "odd/", "objectType": "secretsmanager", "discover": True}]), clients)
    finally:
        clients.close()
    message = str(failure)
    assert isinstance(failure, ObjectErrors) and "'odd/'" in message and "odd/x" in message
    assert len(message) < 1000 and "\n" not in message and "\r" not in message
