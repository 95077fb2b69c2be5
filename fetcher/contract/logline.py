"""The one JSON log line shape of both programs: ts, level, msg, then named fields.

Cluster log pipelines parse one shape, so the fetcher and the webhook (uvicorn's own lines included) print the
same one. It lives in `fetcher.contract` because that is the only fetcher package the webhook may import and its
image copies. Callers bound what they pass; `bounded` helps them.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from typing import TextIO


def _timestamp(seconds: float) -> str:
    global _last_second
    second = seconds // 1
    if second != _last_second[0]:  # a line a second or more after the last one: format the new second
        _last_second = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)))
    return _last_second[1] + f".{int(seconds % 1 * 1000):03d}Z"


# The second of the last line and its text: most lines share their second with the line before.
_last_second: tuple[float, str] = (float("nan"), "")
# Types printed as they are (the exact types: a subclass goes the long way, with the same result).
_PLAIN = frozenset({str, int, float, bool, type(None)})


# Fields are plain scalars (lists of them too). Bytes are never printed, only their length: they would almost
# certainly be a fetched value. Anything else is printed as str().
def _safe(value: object) -> object:
    if type(value) in _PLAIN or value is None or isinstance(value, str | int | float | bool):
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
    return _ENCODE(record)


# The keys every line starts with; a field of the same name is dropped.
_HEAD = frozenset({"ts", "level", "msg"})
# `json.dumps(record, ensure_ascii=False, separators=(",", ":"))`, without making an encoder per line.
_ENCODE = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


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


def log_fields(logger: logging.Logger, level: int, msg: str, fields: Mapping[str, object]) -> None:
    """`logger.log(level, msg, extra={"fields": fields})`, the same line, cheaper where logging is set up plainly.

    When the one handler on the logger's way is a StreamHandler with a JsonFormatter and no filters (the
    webhook's set-up), the line is formatted and written here: the same text, without making a LogRecord
    and walking it through the logging module, a third of the cost of a line per admission. Any other
    set-up (pytest's capture, a second handler, a filter) takes the logging module's own way.
    """
    if not logger.isEnabledFor(level):
        return
    handler = _sole_json_handler(logger, level)
    if handler is None:
        logger.handle(logger.makeRecord(logger.name, level, __file__, 0, msg, (), None, extra={"fields": fields}))
        return
    name = logging.getLevelName(level).lower()
    # `format_line` of JsonFormatter's fields ({"logger": ..., **fields}), in one pass over the fields.
    record: dict[str, object] = {
        "ts": _timestamp(time.time()),
        "level": "warning" if name == "warn" else name,
        "msg": msg,
        "logger": logger.name,
    }
    for key, value in fields.items():
        if key not in _HEAD:
            record[key] = value if type(value) in _PLAIN else _safe(value)
    line = _ENCODE(record)
    handler.acquire()
    try:
        handler.stream.write(line + handler.terminator)
        handler.flush()
    except RecursionError:
        raise
    except Exception:  # as StreamHandler.emit does: the handler reports it, the caller carries on
        handler.handleError(logger.makeRecord(logger.name, level, __file__, 0, msg, (), None, extra={"fields": fields}))
    finally:
        handler.release()


def _sole_json_handler(logger: logging.Logger, level: int) -> logging.StreamHandler[TextIO] | None:
    """The only handler a record of `logger` at `level` would reach, if it is a plain JSON StreamHandler."""
    if logger.disabled:
        return None
    found: logging.Handler | None = None
    current: logging.Logger | None = logger
    while current is not None:
        if current.filters:
            return None
        for handler in current.handlers:
            if found is not None:
                return None
            found = handler
        if not current.propagate:
            break
        current = current.parent
    if (
        type(found) is not logging.StreamHandler
        or type(found.formatter) is not JsonFormatter
        or found.filters
        or level < found.level
    ):
        return None
    return found
