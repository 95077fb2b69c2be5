"""One JSON object per line on stderr: what the fetcher did, never what it fetched.

Why it exists: cluster log pipelines parse JSON lines, and a fetcher log line
must be safe to ship anywhere. So every line carries only names, versions,
regions, counts and error codes; callers never pass a value, and this module
accepts only plain scalars as fields so a bytes payload cannot slip in by
accident. `JsonFormatter` gives the standard logging module the same shape;
for the webhook to adopt it, it must move into `fetcher.spec` or the webhook
(the webhook may import only `fetcher.spec`, the one fetcher package its image
copies).
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from typing import TextIO

LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}
LOG_LEVEL_ENV_VAR = "FERRY_LOG_LEVEL"

FieldValue = str | int | float | bool | None | Sequence[str]


def _timestamp(seconds: float) -> str:
    whole = time.gmtime(seconds)
    return time.strftime("%Y-%m-%dT%H:%M:%S", whole) + f".{int(seconds % 1 * 1000):03d}Z"


def _safe(value: object) -> object:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, list | tuple | set | frozenset):
        return [_safe(item) for item in value]
    if isinstance(value, bytes | bytearray):
        # Raw bytes here are almost certainly a fetched value: never print them.
        return f"<{len(value)} bytes>"
    return str(value)


def format_line(level: str, msg: str, fields: Mapping[str, object], now: float | None = None) -> str:
    """The JSON line for one event: ts, level, msg, then the fields in the order given."""
    record: dict[str, object] = {"ts": _timestamp(time.time() if now is None else now), "level": level, "msg": msg}
    for key, value in fields.items():
        if key not in record:
            record[key] = _safe(value)
    return json.dumps(record, ensure_ascii=False, separators=(",", ":"))


class JsonLogger:
    """Writes JSON lines to a stream (stderr by default, looked up at each write)."""

    def __init__(self, stream: TextIO | None = None, level: str = "info") -> None:
        self._stream = stream
        self._threshold = LEVELS[level]
        self._lock = threading.Lock()

    def set_stream(self, stream: TextIO | None) -> TextIO | None:
        """Write to `stream` from now on (None: stderr); returns the previous one."""
        previous, self._stream = self._stream, stream
        return previous

    def set_level(self, level: str) -> None:
        if level not in LEVELS:
            raise ValueError(f"log level {level!r} is not one of {', '.join(LEVELS)}")
        self._threshold = LEVELS[level]

    def enabled(self, level: str) -> bool:
        return LEVELS[level] >= self._threshold

    def log(self, level: str, msg: str, **fields: object) -> None:
        if LEVELS[level] < self._threshold:
            return
        line = format_line(level, msg, fields)
        stream = self._stream or sys.stderr
        with self._lock:
            stream.write(line + "\n")
            stream.flush()

    def debug(self, msg: str, **fields: object) -> None:
        self.log("debug", msg, **fields)

    def info(self, msg: str, **fields: object) -> None:
        self.log("info", msg, **fields)

    def warning(self, msg: str, **fields: object) -> None:
        self.log("warning", msg, **fields)

    def error(self, msg: str, **fields: object) -> None:
        self.log("error", msg, **fields)


# The fetcher's process-wide logger: a plain object, cheap to build, configured by __main__.
log = JsonLogger()


class JsonFormatter(logging.Formatter):
    """The same line shape for the standard logging module; fields come from ``extra={"fields": {...}}``."""

    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, object] = {"logger": record.name}
        extra = getattr(record, "fields", None)
        if isinstance(extra, Mapping):
            fields.update(extra)
        if record.exc_info and record.exc_info[0] is not None:
            fields["exc_type"] = record.exc_info[0].__name__
        level = record.levelname.lower()
        return format_line("warning" if level == "warn" else level, record.getMessage(), fields, now=record.created)
