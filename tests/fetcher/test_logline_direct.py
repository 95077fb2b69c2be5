"""`log_fields` writes the logging module's own line, and takes that module's way whenever the set-up is not plain."""

from __future__ import annotations

import io
import json
import logging
import time
from collections.abc import Iterator

import pytest

from fetcher.contract.logline import JsonFormatter, log_fields

FIELDS: dict[str, object] = {
    "uid": "0b1e8a6c-2f5e-4c6e-9a49-3b1f3c1d9d21",
    "namespace": "team-a",
    "pod": 'wéb-\u2603-"quoted"\n',
    "objects": 3,
    "ratio": 0.5,
    "sidecar": True,
    "none": None,
    "value": b"hunter2",
    "names": ("a", "b"),
    "other": ValueError("text"),
    "logger": "overridden",
}


@pytest.fixture
def logger() -> Iterator[logging.Logger]:
    """A logger set up as the webhook sets up the root logger: one StreamHandler with a JsonFormatter."""
    logger = logging.getLogger("ferry.test.logline-direct")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    handler = logging.StreamHandler(io.StringIO())
    handler.setFormatter(JsonFormatter())
    logger.addHandler(handler)
    yield logger
    for old in list(logger.handlers):
        logger.removeHandler(old)


def _plain(logger: logging.Logger) -> logging.Logger:
    """The logger with its own handler only: pytest adds its capture handlers to loggers during a test's call."""
    logger.handlers[1:] = []
    return logger


def _written(logger: logging.Logger) -> str:
    handler = logger.handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    stream = handler.stream
    text: str = stream.getvalue()
    stream.seek(0)
    stream.truncate()
    return text


@pytest.mark.parametrize("level", [logging.INFO, logging.WARNING, logging.ERROR])
def test_the_direct_line_is_the_logging_modules_line(
    logger: logging.Logger, level: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    _plain(logger)
    monkeypatch.setattr(time, "time", lambda: 1_765_000_000.25)
    logger.log(level, "admission", extra={"fields": FIELDS})
    expected = _written(logger)
    monkeypatch.setattr(logger, "makeRecord", _no_record)  # the direct way makes no LogRecord
    log_fields(logger, level, "admission", FIELDS)
    assert _written(logger) == expected
    line = json.loads(expected)
    assert line["value"] == "<7 bytes>" and "hunter2" not in expected
    assert line["ts"] == "2025-12-06T05:46:40.250Z"


def test_lines_in_one_second_and_the_next_carry_their_own_time(
    logger: logging.Logger, monkeypatch: pytest.MonkeyPatch
) -> None:
    _plain(logger)
    stamps = []
    for now in (1_765_000_000.5, 1_765_000_000.75, 1_765_000_001.0, 1_765_000_061.25, 1_765_000_000.5):
        monkeypatch.setattr(time, "time", lambda now=now: now)
        log_fields(logger, logging.INFO, "admission", {})
        stamps.append(json.loads(_written(logger))["ts"])
    assert stamps == [
        "2025-12-06T05:46:40.500Z",
        "2025-12-06T05:46:40.750Z",
        "2025-12-06T05:46:41.000Z",
        "2025-12-06T05:47:41.250Z",
        "2025-12-06T05:46:40.500Z",
    ]


def test_below_the_level_nothing_is_written(logger: logging.Logger) -> None:
    logger.setLevel(logging.WARNING)
    log_fields(logger, logging.INFO, "admission", {"uid": "x"})
    assert _written(logger) == ""


def test_a_second_handler_or_a_filter_takes_the_logging_modules_way(
    logger: logging.Logger, caplog: pytest.LogCaptureFixture
) -> None:
    logger.propagate = True  # caplog's handler sits on the root logger
    with caplog.at_level(logging.INFO):
        log_fields(logger, logging.INFO, "admission", {"uid": "seen-by-caplog"})
    assert {"uid": "seen-by-caplog"} in [getattr(record, "fields", None) for record in caplog.records]
    logger.propagate = False
    _plain(logger)
    _written(logger)
    logger.addFilter(lambda record: getattr(record, "fields", {}).get("uid") != "dropped")
    log_fields(logger, logging.INFO, "admission", {"uid": "dropped"})
    assert _written(logger) == ""


def test_a_handler_above_the_level_writes_nothing(logger: logging.Logger) -> None:
    logger.handlers[0].setLevel(logging.ERROR)
    log_fields(logger, logging.INFO, "admission", {"uid": "x"})
    assert _written(logger) == ""


def test_a_failing_stream_is_reported_by_the_handler_not_raised(
    logger: logging.Logger, monkeypatch: pytest.MonkeyPatch
) -> None:
    handler = logger.handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    reported: list[logging.LogRecord] = []
    monkeypatch.setattr(handler, "handleError", reported.append)
    handler.stream.close()
    log_fields(logger, logging.INFO, "admission", {"uid": "x"})
    assert [getattr(record, "fields", None) for record in reported] == [{"uid": "x"}]


def _no_record(*args: object, **kwargs: object) -> logging.LogRecord:
    raise AssertionError("the direct way made a LogRecord")
