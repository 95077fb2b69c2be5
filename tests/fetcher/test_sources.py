"""fetch_all() against moto over HTTP (and a stub where moto cannot answer): values, versions, batching, errors."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from fetcher.aws import AwsClients
from fetcher.errors import AwsRejectedError, ObjectErrors, ParametersNotFoundError
from fetcher.sources import SSM_BATCH_SIZE, fetch_all
from tests.support.aws import (
    PRIMARY,
    LocalHttpStub,
    RecordedRequest,
    Reply,
    Seeder,
    aws_json_error,
    make_clients,
    make_spec,
)

StubFactory = Callable[[Callable[[RecordedRequest], Reply]], LocalHttpStub]


def sm(name: str, **fields: Any) -> dict[str, Any]:
    return {"objectName": name, "objectType": "secretsmanager", **fields}


def ssm(name: str, **fields: Any) -> dict[str, Any]:
    return {"objectName": name, "objectType": "ssmparameter", **fields}


def fetch_errors(spec_objects: list[dict[str, Any]], clients: AwsClients, **options: Any) -> ObjectErrors:
    with pytest.raises(ObjectErrors) as caught:
        fetch_all(make_spec(spec_objects, **options), clients)
    return caught.value


def test_secrets_and_parameters_are_fetched_with_their_versions(seed: Seeder, clients: AwsClients) -> None:
    version = seed.secret("db", '{"user": "admin"}')
    seed.secret("blob", b"\x00\x01\xfe\xff")
    seed.parameter("/app/url", "https://example.internal")
    values = fetch_all(make_spec([sm("db"), sm("blob"), ssm("/app/url")]), clients)
    assert values[0].data == b'{"user": "admin"}' and values[0].version == version and not values[0].binary
    assert values[1].data == b"\x00\x01\xfe\xff" and values[1].binary  # SecretBinary: raw bytes
    assert values[2].data == b"https://example.internal" and values[2].version == "1"
    assert {value.region for value in values.values()} == {PRIMARY}
    assert clients.calls.by_operation() == {"secretsmanager.GetSecretValue": 2, "ssm.GetParameters": 1}


def test_versions_and_labels_select_what_is_fetched(seed: Seeder, clients: AwsClients) -> None:
    first = seed.secret("db", "one")
    seed.sm().put_secret_value(SecretId="db", SecretString="two")
    seed.parameter("/p", "p1")
    seed.parameter("/p", "p2")
    seed.parameter("/q", "q1")
    seed.parameter("/q", "q2")
    seed.ssm().label_parameter_version(Name="/q", ParameterVersion=1, Labels=["stable"])
    # One spec may list an object once, so each selection gets its own spec.
    pinned = fetch_all(make_spec([sm("db", objectVersion=first), ssm("/p", objectVersion="1")]), clients)
    assert (pinned[0].data, pinned[0].version) == (b"one", first)
    assert (pinned[1].data, pinned[1].version) == (b"p1", "1")
    labelled = fetch_all(
        make_spec([sm("db", objectVersionLabel="AWSPREVIOUS"), ssm("/q", objectVersionLabel="stable")]), clients
    )
    assert labelled[0].data == b"one"
    assert (labelled[1].data, labelled[1].version) == (b"q1", "1")
    latest = fetch_all(make_spec([sm("db"), ssm("/q")]), clients)
    assert (latest[0].data, latest[1].data) == (b"two", b"q2")


def test_a_missing_secret_names_the_object_the_region_and_the_code(seed: Seeder, clients: AwsClients) -> None:
    seed.secret("present", "x")
    errors = fetch_errors([sm("present"), sm("absent")], clients)
    (error,) = errors.errors
    assert isinstance(error, AwsRejectedError)
    assert (error.object_name, error.region, error.code) == ("absent", PRIMARY, "ResourceNotFoundException")
    assert str(error).startswith("secret 'absent' in us-east-1: ResourceNotFoundException from GetSecretValue")
    assert "Hint: it does not exist in us-east-1" in str(error)
    assert getattr(error.__cause__, "code", None) == "ResourceNotFoundException"  # translated with `raise ... from`


def test_every_failed_object_is_reported(seed: Seeder, clients: AwsClients) -> None:
    errors = fetch_errors([sm("a"), sm("b"), ssm("/c")], clients)
    assert [error.object_name for error in errors.errors] == ["a", "b", "/c"]
    assert str(errors).startswith("3 objects failed: secret 'a' in us-east-1: ResourceNotFoundException")


def test_parameters_are_fetched_ten_at_a_time(seed: Seeder, clients: AwsClients) -> None:
    names = [f"/fleet/param-{index:02d}" for index in range(23)]
    for index, name in enumerate(names):
        seed.parameter(name, f"value-{index}")
    values = fetch_all(make_spec([ssm(name) for name in names]), clients)
    assert clients.calls.count("GetParameters") == 3  # ceil(23 / 10)
    assert {index: value.data for index, value in values.items()} == {
        index: f"value-{index}".encode() for index in range(23)
    }


def test_every_invalid_parameter_is_reported_at_once(seed: Seeder, clients: AwsClients) -> None:
    names = [f"/p{index:02d}" for index in range(SSM_BATCH_SIZE)]
    for name in names[3:]:
        seed.parameter(name, "v")
    seed.parameter("/versioned", "v")
    objects = [ssm(name) for name in names] + [ssm("/versioned", objectVersion="7"), ssm("/elsewhere")]
    errors = fetch_errors(objects, clients)
    assert clients.calls.count("GetParameters") == 2
    first, second = errors.errors
    assert isinstance(first, ParametersNotFoundError) and isinstance(second, ParametersNotFoundError)
    assert sorted(first.names) == ["/p00", "/p01", "/p02"]  # one error for the whole batch
    assert sorted(second.names) == ["/elsewhere", "/versioned:7"]
    assert "SSM parameters '/p00, /p01, /p02' in us-east-1: InvalidParameters from GetParameters" in str(errors)


def test_parameters_by_arn_are_matched_back(seed: Seeder, clients: AwsClients) -> None:
    seed.parameter("/app/flag", "on")
    seed.parameter("plain", "yes", secure=False)
    arn = seed.ssm().get_parameter(Name="/app/flag")["Parameter"]["ARN"]
    values = fetch_all(make_spec([{"objectName": arn, "objectAlias": "flag"}, ssm("plain")]), clients)
    assert (values[0].data, values[1].data) == (b"on", b"yes")


def _parameter_reply(request: RecordedRequest) -> Reply:
    names = json.loads(request.body)["Names"]
    parameters = [
        {"Name": name, "Type": "SecureString", "Value": f"value of {name}", "Version": 4, "DataType": "text"}
        for name in reversed(names)  # AWS promises no order
    ]
    body = json.dumps({"Parameters": parameters, "InvalidParameters": []}).encode()
    return 200, {"Content-Type": "application/x-amz-json-1.1"}, body


def test_replies_in_any_order_are_mapped_by_name(http_stub: StubFactory, moto: Any) -> None:
    stub = http_stub(_parameter_reply)
    clients = make_clients(endpoint_overrides={PRIMARY: stub.url})
    try:
        values = fetch_all(make_spec([ssm("/a"), ssm("/b"), ssm("/c")]), clients)
    finally:
        clients.close()
    assert {index: value.data for index, value in values.items()} == {
        0: b"value of /a",
        1: b"value of /b",
        2: b"value of /c",
    }
    assert json.loads(stub.requests[0].body) == {"Names": ["/a", "/b", "/c"], "WithDecryption": True}


def test_secrets_are_fetched_concurrently_but_bounded(http_stub: StubFactory, moto: Any) -> None:
    in_flight = [0]
    most = [0]
    lock = threading.Lock()

    def slow_secret(request: RecordedRequest) -> Reply:
        with lock:
            in_flight[0] += 1
            most[0] = max(most[0], in_flight[0])
        time.sleep(0.15)  # keeps requests overlapping; nothing asserts on time
        with lock:
            in_flight[0] -= 1
        name = json.loads(request.body)["SecretId"]
        body = {
            "Name": name,
            "ARN": f"arn:aws:secretsmanager:us-east-1:123456789012:secret:{name}",
            "VersionId": "v1",
            "SecretString": "x",
            "VersionStages": ["AWSCURRENT"],
        }
        return 200, {"Content-Type": "application/x-amz-json-1.1"}, json.dumps(body).encode()

    stub = http_stub(slow_secret)
    clients = make_clients(endpoint_overrides={PRIMARY: stub.url})
    try:
        values = fetch_all(make_spec([sm(f"s{index}") for index in range(15)]), clients)
    finally:
        clients.close()
    assert len(values) == 15 and len(stub.requests) == 15
    assert 1 < most[0] <= 10


def test_access_denied_says_which_action_on_which_arn(http_stub: StubFactory, moto: Any) -> None:
    # moto does not enforce IAM unless the whole server runs with auth on, so a stub answers as AWS does.
    arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/db-AbCdEf"
    message = (
        "User: arn:aws:sts::123456789012:assumed-role/app/botocore-session is not authorized to perform: "
        f"secretsmanager:GetSecretValue on resource: {arn} because no identity-based policy allows the action"
    )
    stub = http_stub(lambda request: aws_json_error(400, "AccessDeniedException", message))
    clients = make_clients(endpoint_overrides={PRIMARY: stub.url})
    try:
        errors = fetch_errors([sm("prod/db")], clients)
    finally:
        clients.close()
    (error,) = errors.errors
    assert isinstance(error, AwsRejectedError) and error.code == "AccessDeniedException"
    assert f"Hint: grant secretsmanager:GetSecretValue on {arn} to the pod's IAM role" in str(error)


@pytest.mark.parametrize(
    ("objects", "code", "message", "hint"),
    [
        (
            [ssm("/app/key")],
            "AccessDeniedException",
            "not authorized",
            "grant ssm:GetParameters on arn:aws:ssm:us-east-1:<account>:parameter/app/key",
        ),
        ([sm("db")], "AccessDeniedException", "Access to KMS is not allowed", "grant kms:Decrypt on the KMS key"),
        ([sm("db")], "DecryptionFailure", "cannot decrypt", "grant kms:Decrypt on the secret's KMS key"),
        ([sm("db")], "UnrecognizedClientException", "bad token", "does not recognise the pod's credentials"),
        ([sm("db")], "InvalidRequestException", "marked for deletion", "scheduled for deletion"),
    ],
)
def test_other_refusals_carry_a_hint(
    http_stub: StubFactory, moto: Any, objects: list[dict[str, Any]], code: str, message: str, hint: str
) -> None:
    stub = http_stub(lambda request: aws_json_error(400, code, message))
    clients = make_clients(endpoint_overrides={PRIMARY: stub.url})
    try:
        (error,) = fetch_errors(objects, clients).errors
    finally:
        clients.close()
    assert f"{code} from" in str(error) and hint in str(error)


def test_no_credentials_at_all_is_explained(seed: Seeder, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    clients = make_clients()
    try:
        (error,) = fetch_errors([sm("db")], clients).errors
    finally:
        clients.close()
    assert "NoCredentialsError" in str(error) and "eks.amazonaws.com/role-arn (IRSA)" in str(error)


@pytest.mark.parametrize("reply_order", ["as-sent", "reversed"])
def test_one_parameter_at_a_version_and_at_latest_maps_each_reply_to_its_object(
    seed: Seeder, http_stub: StubFactory, reply_order: str
) -> None:
    """moto (and a reply without Selector) must not give the latest file the old version, whatever the order."""
    seed.parameter("/p", "old")
    seed.parameter("/p", "new")
    spec = make_spec([ssm("/p", objectVersion="1", objectAlias="p-old"), ssm("/p", objectAlias="p-new")])
    clients = make_clients()
    try:
        values = fetch_all(spec, clients)  # moto's reply, as moto orders it
    finally:
        clients.close()
    assert (values[0].data, values[0].version) == (b"old", "1")
    assert (values[1].data, values[1].version) == (b"new", "2")

    def replies(request: RecordedRequest) -> Reply:
        parameters = [
            {"Name": "/p", "Type": "String", "Value": "old", "Version": 1},
            {"Name": "/p", "Type": "String", "Value": "new", "Version": 2},
        ]
        if reply_order == "reversed":
            parameters.reverse()
        body = json.dumps({"Parameters": parameters, "InvalidParameters": []}).encode()
        return 200, {"Content-Type": "application/x-amz-json-1.1"}, body

    stub = http_stub(replies)
    clients = make_clients(endpoint_overrides={PRIMARY: stub.url})
    try:
        values = fetch_all(spec, clients)
    finally:
        clients.close()
    assert (values[0].data, values[0].version) == (b"old", "1")
    assert (values[1].data, values[1].version) == (b"new", "2")
