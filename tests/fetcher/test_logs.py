"""JSON log lines: one object per line, bytes never printed, the same shape through the logging module."""

from __future__ import annotations

import io
import json
import logging

import pytest

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
