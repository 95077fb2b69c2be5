"""The fault proxy must produce exactly the faults botocore sees in production, or the fault tests test nothing.

Why it exists: every fetcher fault test trusts that "a 503 window" or "a
connection reset" really reached boto3 as such. These tests drive a real boto3
client through the proxy to moto and check what botocore raises, how many
requests the proxy counted, and that plans respect their target, count and
window limits.
"""

from __future__ import annotations

import time

import boto3
import botocore.exceptions
import pytest
from botocore.config import Config

from tests.support.faultproxy import Fault, FaultProxy
from tests.support.leakscan import SecretLedger, new_secret_value

GET = "secretsmanager.GetSecretValue"
DESCRIBE = "secretsmanager.DescribeSecret"


def client(proxy: FaultProxy, attempts: int = 1, read_timeout: float = 5.0):  # type: ignore[no-untyped-def]
    config = Config(
        retries={"mode": "standard", "total_max_attempts": attempts},
        connect_timeout=2,
        read_timeout=read_timeout,
    )
    return boto3.client("secretsmanager", region_name="us-east-1", endpoint_url=proxy.url, config=config)


@pytest.fixture
def secret(fault_proxy: FaultProxy, ledger: SecretLedger) -> str:
    value = ledger.remember(new_secret_value())
    client(fault_proxy).create_secret(Name="proxy/app", SecretString=value)
    fault_proxy.reset_records()
    return value


def test_forwards_and_counts_by_target(fault_proxy: FaultProxy, secret: str) -> None:
    sm = client(fault_proxy)
    assert sm.get_secret_value(SecretId="proxy/app")["SecretString"] == secret
    sm.describe_secret(SecretId="proxy/app")
    sm.describe_secret(SecretId="proxy/app")
    assert fault_proxy.counts_by_target() == {GET: 1, DESCRIBE: 2}
    assert fault_proxy.count(GET, "forwarded:200") == 1


@pytest.mark.parametrize(
    ("fault", "status", "code"),
    [
        (Fault.error(500), 500, "InternalServiceError"),
        (Fault.error(503), 503, "ServiceUnavailable"),
        (Fault.throttle(), 400, "ThrottlingException"),
        (Fault.throttle("TooManyRequestsException"), 400, "TooManyRequestsException"),
        (Fault.error(400, "AccessDeniedException"), 400, "AccessDeniedException"),
    ],
)
def test_error_bodies_parse_as_aws_errors(
    fault_proxy: FaultProxy, secret: str, fault: Fault, status: int, code: str
) -> None:
    fault.times = 1
    fault_proxy.add(fault)
    sm = client(fault_proxy)
    with pytest.raises(botocore.exceptions.ClientError) as raised:
        sm.get_secret_value(SecretId="proxy/app")
    assert raised.value.response["Error"]["Code"] == code
    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == status
    # `times=1`: the next request goes through.
    assert sm.get_secret_value(SecretId="proxy/app")["SecretString"] == secret
    assert fault.hits == 1


def test_botocore_retries_a_transient_fault_and_the_proxy_sees_each_attempt(
    fault_proxy: FaultProxy, secret: str
) -> None:
    fault_proxy.add(Fault.error(503, target=GET, times=2))
    sm = client(fault_proxy, attempts=3)
    assert sm.get_secret_value(SecretId="proxy/app")["SecretString"] == secret
    assert [r.outcome for r in fault_proxy.select(GET)] == [
        "error:503:ServiceUnavailable",
        "error:503:ServiceUnavailable",
        "forwarded:200",
    ]


def test_target_filter_leaves_other_operations_alone(fault_proxy: FaultProxy, secret: str) -> None:
    fault_proxy.add(Fault.error(500, target=GET))
    sm = client(fault_proxy)
    sm.describe_secret(SecretId="proxy/app")
    with pytest.raises(botocore.exceptions.ClientError):
        sm.get_secret_value(SecretId="proxy/app")
    assert fault_proxy.count(DESCRIBE, "forwarded") == 1


def test_skip_lets_the_first_requests_through(fault_proxy: FaultProxy, secret: str) -> None:
    fault_proxy.add(Fault.error(500, target=GET, skip=2, times=1))
    sm = client(fault_proxy)
    sm.get_secret_value(SecretId="proxy/app")
    sm.get_secret_value(SecretId="proxy/app")
    with pytest.raises(botocore.exceptions.ClientError):
        sm.get_secret_value(SecretId="proxy/app")
    sm.get_secret_value(SecretId="proxy/app")


def test_latency_delays_but_forwards(fault_proxy: FaultProxy, secret: str) -> None:
    fault_proxy.add(Fault.latency(0.3, times=1))
    sm = client(fault_proxy)
    began = time.monotonic()
    assert sm.get_secret_value(SecretId="proxy/app")["SecretString"] == secret
    # A lower bound only: the proxy must really have held the request.
    assert time.monotonic() - began >= 0.3
    assert fault_proxy.select(GET)[0].outcome == "latency+forwarded:200"


def test_reset_surfaces_as_a_connection_error(fault_proxy: FaultProxy, secret: str) -> None:
    fault_proxy.add(Fault.reset(times=1))
    sm = client(fault_proxy)
    with pytest.raises(botocore.exceptions.ConnectionClosedError):
        sm.get_secret_value(SecretId="proxy/app")
    assert sm.get_secret_value(SecretId="proxy/app")["SecretString"] == secret


def test_timeout_outlasts_the_client_read_timeout(fault_proxy: FaultProxy, secret: str) -> None:
    fault = fault_proxy.add(Fault.timeout(hold=20, times=1))
    sm = client(fault_proxy, read_timeout=0.5)
    began = time.monotonic()
    with pytest.raises(botocore.exceptions.ReadTimeoutError):
        sm.get_secret_value(SecretId="proxy/app")
    # Liveness bound, generous: the client gave up on its own timeout, not the proxy's hold.
    assert time.monotonic() - began < 10
    assert fault.hits == 1


def test_window_ends_on_time(fault_proxy: FaultProxy, secret: str) -> None:
    fault_proxy.add_window(Fault.error(500), duration=0.4)
    sm = client(fault_proxy)
    with pytest.raises(botocore.exceptions.ClientError):
        sm.get_secret_value(SecretId="proxy/app")
    time.sleep(0.45)
    assert sm.get_secret_value(SecretId="proxy/app")["SecretString"] == secret


def test_window_can_start_later(fault_proxy: FaultProxy, secret: str) -> None:
    fault_proxy.add_window(Fault.error(500), duration=30, begin_in=0.3)
    sm = client(fault_proxy)
    sm.get_secret_value(SecretId="proxy/app")
    time.sleep(0.35)
    with pytest.raises(botocore.exceptions.ClientError):
        sm.get_secret_value(SecretId="proxy/app")


def test_probability_is_seeded_and_partial(moto) -> None:  # type: ignore[no-untyped-def]
    with FaultProxy(moto.url, seed=7) as proxy:
        proxy.add(Fault.error(500, probability=0.5))
        sm = client(proxy)
        outcomes = []
        for _ in range(40):
            try:
                sm.list_secrets()
                outcomes.append(True)
            except botocore.exceptions.ClientError:
                outcomes.append(False)
    assert 5 < outcomes.count(False) < 35
