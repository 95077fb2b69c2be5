"""JSON log lines, and the AWS client settings (retry mode, timeouts, per-region endpoints) from the environment."""

from __future__ import annotations

import io
import json
import logging

import pytest

from fetcher.aws import AwsClients, AwsSettings
from fetcher.errors import ConfigError
from fetcher.logs import JsonFormatter, JsonLogger, format_line


def test_a_log_line_is_one_json_object_with_ts_level_msg_and_fields() -> None:
    line = format_line("info", "fetched secret", {"object": "db", "version": "v1", "count": 2, "names": ("a", "b")})
    record = json.loads(line)
    assert list(record)[:3] == ["ts", "level", "msg"]
    assert record["ts"].endswith("Z") and "T" in record["ts"]
    assert record | {"ts": None} == {
        "ts": None,
        "level": "info",
        "msg": "fetched secret",
        "object": "db",
        "version": "v1",
        "count": 2,
        "names": ["a", "b"],
    }
    assert "\n" not in format_line("info", "multi\nline", {"x": "a\nb"})


def test_bytes_are_never_printed() -> None:
    record = json.loads(format_line("info", "oops", {"value": b"hunter2"}))
    assert record["value"] == "<7 bytes>"


def test_levels_below_the_threshold_are_dropped() -> None:
    stream = io.StringIO()
    logger = JsonLogger(stream, level="warning")
    logger.info("quiet")
    logger.warning("loud", code="X")
    assert [json.loads(line)["msg"] for line in stream.getvalue().splitlines()] == ["loud"]
    with pytest.raises(ValueError):
        logger.set_level("verbose")


def test_the_standard_logging_module_can_use_the_same_shape() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("ferry.test")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("admission denied %s", "pod-x", extra={"fields": {"namespace": "shop"}})
    finally:
        logger.removeHandler(handler)
    record = json.loads(stream.getvalue())
    assert (record["level"], record["msg"], record["namespace"], record["logger"]) == (
        "warning",
        "admission denied pod-x",
        "shop",
        "ferry.test",
    )


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
    config = settings.client_config()
    assert config.retries == {"mode": "standard", "total_max_attempts": 3}
    assert (config.connect_timeout, config.read_timeout) == (0.5, 4.0)


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
