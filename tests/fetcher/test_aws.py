"""The AWS client settings from the environment: attempts, timeouts, per-region endpoints."""

from __future__ import annotations

import pytest

from fetcher.aws import AwsClients, AwsSettings
from fetcher.errors import ConfigError


def test_settings_come_from_the_environment() -> None:
    settings = AwsSettings.from_env(
        {
            "FERRY_AWS_MAX_ATTEMPTS": "3",
            "FERRY_AWS_CONNECT_TIMEOUT": "0.5",
            "FERRY_AWS_READ_TIMEOUT": "4",
            "FERRY_ENDPOINT_URL_US_WEST_2": "http://127.0.0.1:4566",
            "FERRY_ENDPOINT_URL_EU_CENTRAL_1": "",
        }
    )
    assert (settings.max_attempts, settings.connect_timeout, settings.read_timeout) == (3, 0.5, 4.0)
    assert dict(settings.endpoint_overrides) == {"us-west-2": "http://127.0.0.1:4566"}
    assert settings.backoff().max_attempts == 3


@pytest.mark.parametrize(
    ("key", "value"),
    [("FERRY_AWS_MAX_ATTEMPTS", "many"), ("FERRY_AWS_READ_TIMEOUT", "0"), ("FERRY_AWS_MAX_ATTEMPTS", "0")],
)
def test_bad_settings_are_named(key: str, value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        AwsSettings.from_env({key: value})
    assert key in str(caught.value)


def test_a_region_override_wins_over_aws_endpoint_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1111")
    clients = AwsClients(AwsSettings(endpoint_overrides={"us-west-2": "http://127.0.0.1:2222"}))
    try:
        overridden = clients.client("secretsmanager", "us-west-2")
        default = clients.client("ssm", "us-east-1")
        assert overridden.meta.endpoint_url == "http://127.0.0.1:2222"
        assert default.meta.endpoint_url == "http://127.0.0.1:1111"
        assert clients.client("secretsmanager", "us-west-2") is overridden  # one client per service and region
    finally:
        clients.close()
