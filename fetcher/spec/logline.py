"""The one JSON log line shape of both programs: ts, level, msg, then named fields.

Why it exists: cluster log pipelines parse one shape, so the fetcher and the
webhook (including uvicorn's own lines) must print the same one. It lives in
`fetcher.spec` because that is the only fetcher package the webhook may import
and its image copies. Fields are plain scalars; bytes are never printed
(they would almost certainly be a fetched value), and other objects are
printed as `str()`. Callers bound what they pass; `bounded` helps them.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping


def _timestamp(seconds: float) -> str:
    whole = time.gmtime(seconds)
    return time.strftime("%Y-%m-%dT%H:%M:%S", whole) + f".{int(seconds % 1 * 1000):03d}Z"


def _safe(value: object) -> object:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, list | tuple | set | frozenset):
        return [_safe(item) for item in value]
    if isinstance(value, bytes | bytearray):
        return f"<{len(value)} bytes>"
    return str(value)


def format_line(level: str, msg: str, fields: Mapping[str, object], now: float | None = None) -> str:
    """The JSON line for one event: ts, level, msg, then the fields in the order given."""
    record: dict[str, object] = {"ts": _timestamp(time.time() if now is None else now), "level": level, "msg": msg}
    for key, value in fields.items():
        if key not in record:
            record[key] = _safe(value)
    return json.dumps(record, ensure_ascii=False, separators=(",", ":"))


class JsonFormatter(logging.Formatter):
    """The same line for the standard logging module; fields come from ``extra={"fields": {...}}``.

    Tracebacks are not printed (they can quote arbitrary data); the exception's type is.
    """

    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, object] = {"logger": record.name}
        extra = getattr(record, "fields", None)
        if isinstance(extra, Mapping):
            fields.update(extra)
        if record.exc_info and record.exc_info[0] is not None:
            fields["exc_type"] = record.exc_info[0].__name__
        level = record.levelname.lower()
        return format_line("warning" if level == "warn" else level, record.getMessage(), fields, now=record.created)
