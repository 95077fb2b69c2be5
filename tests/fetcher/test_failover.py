"""Failover: only a primary that could not answer (5xx, throttling, network) sends the request to the failover region.

The primary region is a local stub answering like AWS does when it is down, or
a closed port; the failover region is moto. `FERRY_ENDPOINT_URL_<REGION>`
(here: AwsSettings.endpoint_overrides) points one region at the stub while
AWS_ENDPOINT_URL points every other region at moto.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from devcluster.net import free_port
from fetcher.aws import AwsClients
from fetcher.errors import AwsUnavailableError, ObjectErrors
from fetcher.sources import fetch_all
from tests.support.aws import (
    FAILOVER,
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


def closed_port_url() -> str:
    return f"http://127.0.0.1:{free_port()}"  # nothing listens there any more: connection refused


@pytest.fixture
def clients_with_primary(moto: Any) -> Any:
    made: list[AwsClients] = []

    def build(primary_url: str, **settings: Any) -> AwsClients:
        clients = make_clients(endpoint_overrides={PRIMARY: primary_url}, **settings)
        made.append(clients)
        return clients

    yield build
    for clients in made:
        clients.close()


@pytest.mark.parametrize(
    "reply",
    [
        aws_json_error(500, "InternalServiceError", "boom"),
        aws_json_error(503, "ServiceUnavailable", "down"),
        aws_json_error(400, "ThrottlingException", "Rate exceeded"),
    ],
    ids=["500", "503", "throttled"],
)
def test_an_unavailable_primary_falls_over_to_the_failover_region(
    http_stub: StubFactory, clients_with_primary: Any, seed: Seeder, reply: Reply
) -> None:
    seed.secret("db", "from the failover region", region=FAILOVER)
    stub = http_stub(lambda request: reply)
    clients = clients_with_primary(stub.url)
    values = fetch_all(make_spec([sm("db")], failover_region=FAILOVER), clients)
    assert (values[0].data, values[0].region) == (b"from the failover region", FAILOVER)
    assert stub.operations() == ["GetSecretValue"]
    assert clients.calls.count("GetSecretValue", region=PRIMARY) == 1
    assert clients.calls.count("GetSecretValue", region=FAILOVER) == 1


def test_an_unreachable_primary_falls_over(clients_with_primary: Any, seed: Seeder) -> None:
    seed.secret("db", "dr", region=FAILOVER)
    clients = clients_with_primary(closed_port_url())
    values = fetch_all(make_spec([sm("db")], failover_region=FAILOVER), clients)
    assert values[0].region == FAILOVER


def test_the_failover_object_is_what_the_failover_region_is_asked_for(
    http_stub: StubFactory, clients_with_primary: Any, seed: Seeder
) -> None:
    seed.secret("db-dr", "replica", region=FAILOVER)
    stub = http_stub(lambda request: aws_json_error(500, "InternalServiceError", "boom"))
    spec = make_spec(
        [sm("db", objectAlias="db", failoverObject={"objectName": "db-dr"})],
        failover_region=FAILOVER,
    )
    values = fetch_all(spec, clients_with_primary(stub.url))
    assert values[0].data == b"replica"
    assert json.loads(stub.requests[0].body)["SecretId"] == "db"


def test_an_arn_without_failover_object_is_asked_for_in_the_failover_region(
    http_stub: StubFactory, clients_with_primary: Any, seed: Seeder
) -> None:
    seed.secret("db", "replica", region=FAILOVER)
    replica_arn = seed.sm(FAILOVER).describe_secret(SecretId="db")["ARN"]
    primary_arn = replica_arn.replace(f":{FAILOVER}:", f":{PRIMARY}:")
    stub = http_stub(lambda request: aws_json_error(500, "InternalServiceError", "boom"))
    spec = make_spec([{"objectName": primary_arn, "objectAlias": "db"}], failover_region=FAILOVER)
    assert fetch_all(spec, clients_with_primary(stub.url))[0].data == b"replica"


def test_a_primary_that_answers_is_never_failed_over(clients: AwsClients, seed: Seeder) -> None:
    seed.secret("db", "primary value")
    seed.secret("db", "failover value", region=FAILOVER)
    values = fetch_all(make_spec([sm("db")], failover_region=FAILOVER), clients)
    assert values[0].data == b"primary value"
    assert clients.calls.count(region=FAILOVER) == 0


def test_a_4xx_from_the_primary_is_fatal_even_if_the_failover_region_has_it(clients: AwsClients, seed: Seeder) -> None:
    seed.secret("db", "only in the failover region", region=FAILOVER)
    with pytest.raises(ObjectErrors) as caught:
        fetch_all(make_spec([sm("db")], failover_region=FAILOVER), clients)
    (error,) = caught.value.errors
    assert "secret 'db' in us-east-1: ResourceNotFoundException" in str(error)
    assert clients.calls.count(region=FAILOVER) == 0


def test_access_denied_in_the_primary_is_fatal(http_stub: StubFactory, clients_with_primary: Any, seed: Seeder) -> None:
    seed.secret("db", "x", region=FAILOVER)
    stub = http_stub(lambda request: aws_json_error(400, "AccessDeniedException", "not authorized"))
    clients = clients_with_primary(stub.url)
    with pytest.raises(ObjectErrors):
        fetch_all(make_spec([sm("db")], failover_region=FAILOVER), clients)
    assert clients.calls.count(region=FAILOVER) == 0


def test_when_both_regions_fail_the_message_tells_both(
    http_stub: StubFactory, clients_with_primary: Any, seed: Seeder
) -> None:
    stub = http_stub(lambda request: aws_json_error(503, "ServiceUnavailable", "down"))
    clients = clients_with_primary(stub.url)
    with pytest.raises(ObjectErrors) as caught:
        fetch_all(make_spec([sm("db")], failover_region=FAILOVER), clients)
    (error,) = caught.value.errors
    assert str(error).startswith("secret 'db' in us-west-2: ResourceNotFoundException from GetSecretValue")
    assert str(error).endswith("[asked after the primary region us-east-1 failed: ServiceUnavailable]")


def test_without_a_failover_region_an_outage_is_reported_as_such(
    http_stub: StubFactory, clients_with_primary: Any
) -> None:
    stub = http_stub(lambda request: aws_json_error(500, "InternalServiceError", "boom"))
    with pytest.raises(ObjectErrors) as caught:
        fetch_all(make_spec([sm("db")]), clients_with_primary(stub.url))
    (error,) = caught.value.errors
    assert isinstance(error, AwsUnavailableError)
    assert "InternalServiceError" in str(error)


def test_retries_in_the_primary_come_before_the_failover(
    http_stub: StubFactory, clients_with_primary: Any, seed: Seeder
) -> None:
    seed.secret("db", "dr", region=FAILOVER)
    stub = http_stub(lambda request: aws_json_error(500, "InternalServiceError", "boom"))
    clients = clients_with_primary(stub.url, max_attempts=2)
    fetch_all(make_spec([sm("db")], failover_region=FAILOVER), clients)
    assert len(stub.requests) == 2  # botocore's standard retry mode, as configured
    assert clients.calls.count("GetSecretValue", region=PRIMARY) == 1
    assert clients.calls.attempts("GetSecretValue", region=PRIMARY) == 2


def test_parameter_batches_fall_over_as_a_whole(
    http_stub: StubFactory, clients_with_primary: Any, seed: Seeder
) -> None:
    names = [f"/app/p{index:02d}" for index in range(12)]
    for name in names:
        seed.parameter(name, f"dr {name}", region=FAILOVER)
    stub = http_stub(lambda request: aws_json_error(500, "InternalServerError", "boom"))
    clients = clients_with_primary(stub.url)
    spec = make_spec([{"objectName": name, "objectType": "ssmparameter"} for name in names], failover_region=FAILOVER)
    values = fetch_all(spec, clients)
    assert [values[index].data for index in range(12)] == [f"dr {name}".encode() for name in names]
    assert clients.calls.count("GetParameters", region=PRIMARY) == 2
    assert clients.calls.count("GetParameters", region=FAILOVER) == 2
